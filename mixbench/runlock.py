"""One writer per run folder: an OS file lock held for the trainer's lifetime.

``fcntl.flock`` on ``RUN/.lock``: the kernel releases it when the process ends, however it ends
(SIGKILL included), so a lock can never be left stale. The file keeps the holder's PID, host
and start time for the message a second trainer prints. On NFS, Linux emulates flock with
POSIX locks, so it holds across the nodes of a cluster where NFS is mounted with locking (not
with ``nolock``); on Lustre it needs the ``flock`` mount option, and a file system without
flock is an error that says so rather than a run without a lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from mixbench.errors import MixbenchError

LOCK_NAME = ".lock"


class RunFolderBusy(MixbenchError):
    """Another process holds the run folder's lock."""


class RunLock:
    """``with RunLock(folder):`` holds ``folder``'s lock, or raises RunFolderBusy at once."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise RunFolderBusy(
                f"{self.folder} is already being written by {holder} (it holds {self.path}); two trainers on one "
                "run would corrupt it. Wait for that process to finish, or stop it (the lock goes with it) and "
                "run again to resume from its last checkpoint") from None
        except OSError as exc:  # ENOSYS / EOPNOTSUPP: a file system without flock (Lustre without -o flock)
            os.close(fd)
            raise MixbenchError(
                f"cannot lock {self.path} ({exc.strerror}): the file system of the runs folder does not support "
                "flock, which keeps two trainers off one run; mount it with locking (Lustre: -o flock) or put "
                "runs_dir on one that has it") from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()} (since {started})\n".encode())
        self._fd = fd

    def release(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a second
        # still waits on the old one.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_by_another(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s run lock (a folder without one: False)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no flock on this file system: assume someone might be writing
        return True
    finally:
        os.close(fd)  # closing releases a lock just taken
    return False
