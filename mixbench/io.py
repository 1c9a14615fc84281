"""Atomic, durable writes: a file either holds its complete new content or its old one, never
half, and once the write returns it survives a crash of the machine (the file and its folder
are fsynced before and after the rename). A crash mid-write leaves a temporary named
``.NAME.XXXX.tmp`` beside the target; ``remove_stale_temporaries`` clears them at the next start."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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
    """A name ``atomic_path`` or ``atomic_dir`` gives its temporary: ``.NAME.XXXX.tmp``."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and name.count(".") >= 3


def remove_stale_temporaries(root: str | os.PathLike, recursive: bool = True,
                             skip: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove what crashed atomic writes left in ``root`` (and below it, unless not ``recursive``;
    not below a folder for which ``skip`` is true) and return them. Call it only where no other
    process is writing: a trainer in its own locked run folder, the workflow before its first job."""
    import shutil

    root = Path(root)
    stale: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and skip(here):
            dirs[:] = []
            continue
        stale += [here / name for name in (*files, *dirs) if is_temporary(name)]
        dirs[:] = [d for d in dirs if not is_temporary(d)] if recursive else []
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        fsync_file(tmp)
        fsync_dir(path.parent)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
