"""Writes that find no room (a full disk, a used-up quota, the file-size limit of ``ulimit -f``)
said in one line: the file, the bytes known, and the fix. Such a failure is the machine's state,
not a bug, so it gets no traceback (``mixbench.io``'s atomic writes and ``mixbench.cli.main_guard``)."""

from __future__ import annotations

import errno
import io
import os
import resource
import shutil
from pathlib import Path
from types import TracebackType

from mixbench.errors import MixbenchError, StorageError

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_room_errno(exc: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when ``exc`` says a write found no room, else None: an OSError's
    errno, or the system's message quoted by a library's own error (safetensors' writer says
    "File too large (os error 27)")."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in NO_ROOM else None
    text = str(exc)
    return next((n for n in NO_ROOM if os.strerror(n) in text or f"os error {n})" in text), None)


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``); None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def room_evidence(files: list[Path]) -> int | None:
    """EFBIG or ENOSPC when the machine shows a write had no room although the error did not say
    so (torch's writer reports only "file write failed"): one of ``files`` is at the file-size
    limit, or their file system has no byte left."""
    limit = file_size_limit()
    sizes = [_size(f) for f in files]
    if limit is not None and any(size >= limit for size in sizes):
        return errno.EFBIG
    if files and _free_bytes(files[0]) == 0:
        return errno.ENOSPC
    return None


def no_room_message(number: int, target: str | os.PathLike | None, written: int | None = None) -> str:
    """One line: ``target`` could not be written (None: the error named no file), the bytes known
    (``written`` before the write failed, by default the file's size; what it would have needed in
    all is not known before it ends), the room there, and what to do."""
    if target is None:
        return (f"a write failed: {os.strerror(number)} (the error names no file); free space on the disks of "
                f"data_dir/runs_dir/results_dir or raise the file-size limit (ulimit -f), then run again")
    target = Path(target)
    if written is None and target.is_file():
        written = _size(target)
    sizes = f"; {written:,} bytes written when it failed" if written is not None else ""
    if number == errno.EFBIG:
        limit = file_size_limit()
        shown = "unknown" if limit is None else f"{limit:,} bytes"
        return (f"cannot write {target}: it would exceed the file-size limit (ulimit -f: {shown}){sizes}; raise the "
                f"limit (ulimit -f unlimited, or the scheduler's file-size limit) and run again")
    folder = _existing(target)
    free = _free_bytes(folder)
    room = f"{free:,} bytes free there" if free is not None else "free space unknown"
    if number == errno.EDQUOT:
        return (f"cannot write {target}: the disk quota of {folder} is used up ({room}{sizes}); free space within "
                f"the quota (quota -s shows it) or move data_dir/runs_dir/results_dir to a disk with room")
    return (f"cannot write {target}: no space left on the disk of {folder} ({room}{sizes}); free space there "
            f"(df -h {folder}) or move data_dir/runs_dir/results_dir to a disk with room, then run again")


def no_room_error(exc: BaseException, target: Path, temporary: Path) -> StorageError | None:
    """The StorageError for an exception raised while writing ``temporary`` (a file, or a folder
    that will become ``target``), naming ``target`` and the bytes written; None when ``exc`` is
    not about room."""
    filename = getattr(exc, "filename", None)
    inside = temporary.is_dir() and isinstance(filename, str) and filename.startswith(f"{temporary}{os.sep}")
    if not isinstance(exc, Exception) or isinstance(exc, StorageError) and not inside:
        return None  # an interrupt, or said already by a write nested in this one
    # The folder's file that failed, as it will be named once the folder is in place.
    named = target / Path(filename).relative_to(temporary) if inside else target
    if isinstance(exc, StorageError):  # a nested atomic write's, which measured its own bytes
        return StorageError(str(exc).replace(filename, str(named)), exc.errno, str(named))
    files = _files(temporary)
    number = no_room_errno(exc)
    if number is None and not isinstance(exc, (OSError, MixbenchError)):
        number = room_evidence(files)
    if number is None:
        return None
    written = sum(_size(f) for f in files)
    return StorageError(no_room_message(number, named, written=written), number, str(named))


def file_being_written(traceback: TracebackType | None) -> str | None:
    """The path of the innermost file open for writing in the frames of ``traceback``: the file a
    failed ``write`` was writing, which its OSError does not name."""
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):
        values = list(frame.f_locals.values())
        owner = frame.f_locals.get("self")
        values += list(getattr(owner, "__dict__", {}).values())  # a writer kept on its object
        for value in values:
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str) \
                    and any(c in getattr(value, "mode", "") for c in "wax+"):
                return value.name
    return None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [Path(folder, name) for folder, _, names in os.walk(path) for name in names]
    return [path] if path.exists() else []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _existing(path: Path) -> Path:
    """``path`` or its nearest folder that exists: where the free space is measured."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(Path(path))).free
    except OSError:
        return None
