"""A run's own training log, ``RUN/train.log`` (``mixbench.lineage.TRAINING_LOG``): everything its
trainer prints, kept in the run folder beside what the trainer writes.

    python -m mixbench.training_log --run RUN -- COMMAND [ARG ...]

prints where the training log is (to the job's own log, which the rule redirects this to), then
runs COMMAND in its place (the same process: its PID is the header's) with its stdout and stderr
appended to ``RUN/train.log``. Snakemake deletes a job's log before it runs the job again: a
trainer left running by a Snakemake that was killed would write into a deleted file, and its
finished run would keep no record of its training. The run folder's log is never deleted or
truncated; every attempt, and every process of an attempt that opens it (``redirected``: each run
of a pack), starts with a header line ``=== attempt TIME pid PID host HOST``. A finished run
without it is incomplete (models/upstream.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from mixbench.cli import main_guard
from mixbench.errors import ConfigError
from mixbench.lineage import TRAINING_LOG

# Set to the training log's absolute path where this process's output already goes there (the
# wrapper's exec, ``redirected``): ``kept`` then adds nothing.
LOGGED_TO = "MIXBENCH_TRAINING_LOG"


def training_log(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / TRAINING_LOG


def attempt_header() -> str:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"=== attempt {started} pid {os.getpid()} host {socket.gethostname()}\n"


def open_for_attempt(run_dir: str | os.PathLike) -> int:
    """A descriptor appending to the run's training log (made, with its folder, if missing), after
    this attempt's header line. O_APPEND: the processes of one run add lines, never overwrite."""
    path = training_log(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.write(fd, attempt_header().encode())
    return fd


@contextmanager
def redirected(run_dir: str | os.PathLike) -> Iterator[Path]:
    """This process's stdout and stderr (the descriptors: libraries and child processes too) go
    to the run's training log inside the block, and back where they went after it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    previous = os.environ.get(LOGGED_TO)
    fd = open_for_attempt(run_dir)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.environ[LOGGED_TO] = os.path.abspath(training_log(run_dir))
        yield training_log(run_dir)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, original in zip((1, 2), saved):
            os.dup2(original, target)
            os.close(original)
        if previous is None:
            os.environ.pop(LOGGED_TO, None)
        else:
            os.environ[LOGGED_TO] = previous


@contextmanager
def kept(run_dir: str | os.PathLike) -> Iterator[Path]:
    """A trainer's own log for a run trained by hand (``python -m models.train``, not through the
    workflow's wrapper): inside the block, what Python prints still reaches the terminal and is
    appended to the run's training log too, after an attempt header, so that the finished run is
    complete. Output already going to the log (``LOGGED_TO``) is left as it is."""
    path = training_log(run_dir)
    if os.environ.get(LOGGED_TO) == os.path.abspath(path):
        yield path
        return
    log = os.fdopen(open_for_attempt(run_dir), "w", encoding="utf-8", errors="replace", buffering=1)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_Both(stream, log) for stream in streams)
    try:
        yield path
    finally:
        sys.stdout, sys.stderr = streams
        log.close()


class _Both:
    """A text stream that writes to ``first`` (the terminal, whose other attributes it has) and to ``second``."""

    def __init__(self, first, second):
        self._first, self._second = first, second

    def write(self, text: str) -> int:
        self._second.write(text)
        return self._first.write(text)

    def flush(self) -> None:
        self._second.flush()
        self._first.flush()

    def __getattr__(self, name):
        return getattr(self._first, name)


@main_guard
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mixbench.training_log", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run folder: its log is RUN/" + TRAINING_LOG)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]: what trains the run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ConfigError("name the command after --, e.g. `python -m mixbench.training_log --run RUN -- python ...`")
    if shutil.which(command[0]) is None:  # said here, in the job's log, not in the run's
        raise ConfigError(f"{command[0]}: no such program; the training log {training_log(args.run)} is unchanged")
    print(f"training log (every attempt's output, appended): {os.path.abspath(training_log(args.run))}", flush=True)
    os.environ[LOGGED_TO] = os.path.abspath(training_log(args.run))
    fd = open_for_attempt(args.run)
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
