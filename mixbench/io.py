"""Atomic, durable writes: a file either holds its complete new content or its old one, never
half, and once the write returns it survives a crash of the machine (the file and its folder
are fsynced before and after the rename). A crash mid-write leaves a temporary named
``.NAME.HOST-PID.XXXX.tmp`` beside the target, naming its writer; ``remove_stale_temporaries``
clears those whose writer is gone at the next start."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mixbench.errors import StorageError
from mixbench.no_room import no_room_errno, no_room_error, no_room_message

TMP_SUFFIX = ".tmp"


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or removal inside ``path`` durable (a folder's entries live in the folder)."""
    try:
        fsync_file(path)
    except OSError as exc:  # a few network file systems refuse; the rename is atomic, only not yet durable
        if path not in _UNSYNCABLE:
            _UNSYNCABLE.add(path)
            warnings.warn(f"cannot fsync folder {path} ({exc}): a write there may not survive a crash of the machine")


_UNSYNCABLE: set = set()


def is_temporary(name: str) -> bool:
    """A name ``atomic_path`` or ``atomic_dir`` gives its temporary: ``.NAME.HOST-PID.XXXX.tmp``,
    or ``.NAME.XXXX.tmp`` as earlier versions named them."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and name.count(".") >= 3


# Long enough to tell a cluster's nodes apart, short enough to keep a long NAME within 255 bytes.
_HOST_CHARS = 40
_WRITER = re.compile(r"\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX))
# An earlier version's temporary records no writer: removed only once untouched this long at the
# workflow's start (no write of a file or checkpoint pauses an hour), at once by a run folder's lock holder.
UNRECORDED_WRITER_IDLE_S = 3600.0


def host_name() -> str:
    """This machine's name as a temporary's name records it: letters, digits, _ and - only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:_HOST_CHARS] or "host"


def temporary_prefix(path: Path) -> str:
    """The start of a temporary's name for ``path``: ``.NAME.HOST-PID.``, its writer recorded."""
    return f".{path.name}.{host_name()}-{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_gone(path: Path, unrecorded_idle_s: float) -> bool:
    """Whether the temporary ``path`` can no longer be written: its writer, on this machine, has
    ended. A writer on another machine cannot be asked and is taken to be alive. A temporary that
    names no writer is gone once nothing touched it for ``unrecorded_idle_s`` seconds."""
    recorded = _WRITER.fullmatch(path.name)
    if recorded is not None:
        return recorded["host"] == host_name() and not pid_alive(int(recorded["pid"]))
    return time.time() - _last_touched(path) >= unrecorded_idle_s


def _last_touched(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of everything in it."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            for folder, _, files in os.walk(path):
                for entry in (folder, *(os.path.join(folder, name) for name in files)):
                    newest = max(newest, os.lstat(entry).st_mtime)
    except FileNotFoundError:  # renamed into place or removed meanwhile: its writer is at work
        return time.time()
    return newest


def remove_stale_temporaries(root: str | os.PathLike, recursive: bool = True,
                             skip: Callable[[Path], bool] | None = None,
                             unrecorded_idle_s: float = 0.0, locked: bool = False) -> list[Path]:
    """Remove what crashed atomic writes left in ``root`` (and below it, unless not ``recursive``;
    not below a folder for which ``skip`` is true) and return them: the temporaries whose writer
    is gone (``writer_gone``), so that another process's write in progress is never cut short.
    An earlier version's temporary, which names no writer, is removed once untouched for
    ``unrecorded_idle_s`` seconds (``UNRECORDED_WRITER_IDLE_S`` at the workflow's start).
    ``locked``: the caller holds the folder's run lock, so no one else writes there and every
    temporary is stale, another machine's too (a run resumed on another node of a cluster)."""
    import shutil

    root = Path(root)
    stale: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and skip(here):
            dirs[:] = []
            continue
        stale += [here / name for name in (*files, *dirs)
                  if is_temporary(name) and (locked or writer_gone(here / name, unrecorded_idle_s))]
        dirs[:] = [d for d in dirs if not is_temporary(d)] if recursive else []
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.
    A write that finds no room (disk, quota, file-size limit) raises ``StorageError`` naming ``path``."""
    path = Path(path)
    with _no_room_said(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        fsync_file(tmp)
        fsync_dir(path.parent)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        said = no_room_error(exc, path, Path(tmp))  # measured before the temporary goes
        Path(tmp).unlink(missing_ok=True)
        if said is not None:
            raise said from exc
        raise


@contextmanager
def _no_room_said(path: Path) -> Iterator[None]:
    """Creating the temporary of ``path`` found no room (no free block or inode for its entry):
    one line naming ``path``, not the temporary."""
    try:
        yield
    except OSError as exc:
        number = no_room_errno(exc)
        if number is None:
            raise
        raise StorageError(no_room_message(number, path, written=0), number, str(path)) from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(frame: Any, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV without its index (duck-typed: this module does not import pandas)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_to_builtin) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _to_builtin(obj: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole. A write
    that finds no room raises ``StorageError`` naming ``path`` (or its file that failed)."""
    import shutil

    path = Path(path)
    with _no_room_said(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        for folder, _, files in os.walk(tmp):
            for name in files:
                fsync_file(os.path.join(folder, name))
            fsync_dir(folder)
        fsync_dir(path.parent)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        said = no_room_error(exc, path, tmp)  # measured before the temporary goes
        shutil.rmtree(tmp, ignore_errors=True)
        if said is not None:
            raise said from exc
        raise
