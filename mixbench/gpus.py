"""Give every job on one machine GPUs of its own.

    python -m mixbench.gpus run --gpus N -- CMD ARGS...   CMD with CUDA_VISIBLE_DEVICES = N free devices
    python -m mixbench.gpus count                         how many devices jobs share (profiles/gpu reads it)

The pool is the devices jobs may use: ``MIXBENCH_GPUS`` (a comma list of CUDA device ids or
UUIDs) if set, else the ``CUDA_VISIBLE_DEVICES`` this command was started with, else every GPU
``nvidia-smi -L`` lists. Each device has a lock file in ``MIXBENCH_GPU_LOCK_DIR`` (default:
``/tmp/mixbench-gpus-UID``). ``run`` takes N free devices with non-blocking ``flock``
(all N or none, so two waiting jobs never hold half of each other's), waits while fewer are
free, sets ``CUDA_VISIBLE_DEVICES`` to them and replaces itself with CMD, the lock descriptors
inherited. The locks then live exactly as long as CMD and the children that inherit them, and
the kernel releases them when those end, however they end (SIGKILL included): nothing to clean
up, no stale lock to break.

Inside a SLURM job (``SLURM_JOB_ID`` set) the pool is the allocation's ``CUDA_VISIBLE_DEVICES``
(none if unset) and the locks are the allocation's own: a job of the SLURM executor, alone in its
allocation, takes all of it; jobs sharing one allocation (``salloc`` + profiles/gpu) get one each.

CMD gets ``MIXBENCH_JOB_GPUS`` with the devices it was given: a training job that then cannot use
them (a CPU-only torch, a driver too old for the build) fails instead of training on the CPU.
``--gpus 0`` hides every GPU from CMD: a job that reserved none must not use one by accident.
Where there is no GPU at all, CMD runs without and says so, except in a SLURM job, which asked
SLURM for GPUs and fails. ``MIXBENCH_EXPECT_GPU=none`` (set by the workflow when the grid expects
no GPU: a CPU laptop, a CPU node) lets every job run on what it finds, as a CPU grid should, and
without a word. A CMD that runs without a GPU gets
tcmalloc preloaded (mixbench/allocator.py: about a quarter faster CPU steps, same results).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mixbench.allocator import cpu_job_env
from mixbench.cli import main_guard
from mixbench.errors import ConfigError
from mixbench.gpu_checks import EXPECT_GPU, JOB_GPUS

POLL_SECONDS = 2.0


def log(message: str) -> None:
    # stderr: the job's log, next to what CMD prints.
    print(f"mixbench.gpus: {message}", file=sys.stderr, flush=True)


def gpu_pool(env=os.environ) -> list[str]:
    """The devices jobs share, in the order they are handed out."""
    for name in ("MIXBENCH_GPUS", "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return [d.strip() for d in env[name].split(",") if d.strip()]
    if "SLURM_JOB_ID" in env:
        return []  # SLURM gave this job no GPU, whatever nvidia-smi lists on the node
    if shutil.which("nvidia-smi", path=env.get("PATH")) is None:
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, env=dict(env))
    if listed.returncode != 0:
        # A driver that does not answer: no usable GPU. Said, not silent; MIXBENCH_GPUS overrides.
        log(f"`nvidia-smi -L` failed ({listed.stdout.strip() or listed.stderr.strip()}); counting no GPUs")
        return []
    return re.findall(r"^GPU (\d+):", listed.stdout, flags=re.M)


def lock_dir(env=os.environ) -> Path:
    # /tmp, not $TMPDIR: every job must meet in the same folder, and Snakemake sets TMPDIR per job
    # from its `tmpdir` resource. Per user: another user's lock files would not be writable.
    base = Path(env.get("MIXBENCH_GPU_LOCK_DIR") or f"/tmp/mixbench-gpus-{os.getuid()}")
    # In a SLURM job the ids are the allocation's own (cgroups may number them from 0 in every job):
    # the jobs of one allocation share a folder, another allocation on the node has its own.
    return base / f"slurm-{env['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in env else base


def lock_path(directory: Path, device: str) -> Path:
    return directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


def try_take(pool: list[str], count: int, directory: Path) -> dict[str, int] | None:
    """Lock ``count`` free devices of ``pool`` (device -> locked fd), or none and return None."""
    taken: dict[str, int] = {}
    for device in pool:
        fd = os.open(lock_path(directory, device), os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(PermissionError):  # another user's file: theirs to set
            os.fchmod(fd, 0o666)  # past the umask: users sharing MIXBENCH_GPU_LOCK_DIR must open it too
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        taken[device] = fd
        if len(taken) == count:
            return taken
    for fd in taken.values():  # closing the descriptor drops its lock
        os.close(fd)
    return None


def holders(pool: list[str], directory: Path) -> str:
    """Who holds each busy device, for the waiting message ("0 (pid 123)")."""
    busy = []
    for device in pool:
        path = lock_path(directory, device)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                busy.append(f"{device} (pid {f.read().strip() or '?'})")
    return ", ".join(busy) or "none"


def take(pool: list[str], count: int, directory: Path, owner: str) -> dict[str, int]:
    """Wait until ``count`` devices are free and lock them."""
    if count > len(pool):
        raise ConfigError(f"a job asks for {count} GPU(s) but {owner} has {len(pool)} ({','.join(pool)}); "
                          f"lower training.processes or widen MIXBENCH_GPUS")
    directory.mkdir(parents=True, exist_ok=True)
    started, waited = time.monotonic(), False
    while (taken := try_take(pool, count, directory)) is None:
        if not waited:
            log(f"waiting for {count} free GPU(s) of {len(pool)}; busy: {holders(pool, directory)}")
            waited = True
        time.sleep(POLL_SECONDS)
    if waited:
        log(f"got GPU(s) {','.join(taken)} after {time.monotonic() - started:.0f} s")
    for fd in taken.values():
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # exec keeps the pid: it names the job
    return taken


def run(count: int, command: list[str], env=os.environ) -> None:
    """Replace this process with ``command`` on ``count`` devices of its own."""
    env = dict(env)
    env.pop(JOB_GPUS, None)  # set below only for the devices this job gets
    owner = f"SLURM job {env['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in env else "this machine"
    if count == 0 or not (pool := gpu_pool(env)):
        if count == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif "SLURM_JOB_ID" in env and env.get(EXPECT_GPU) != "none":
            # SLURM was asked for GPUs (profiles/slurm) and gave none: a partition without GPUs, or
            # a plugin setting lost. Days of CPU training are never what that job was for.
            raise ConfigError(f"the job asks for {count} GPU(s) and {owner} has none (CUDA_VISIBLE_DEVICES is "
                              f"unset): give train and evaluate a GPU partition in profiles/slurm, or set "
                              f"training.device: cpu ({EXPECT_GPU}=none runs GPU jobs on CPU nodes on purpose)")
        elif env.get(EXPECT_GPU) != "none":
            # A grid that expects no GPU (a CPU laptop, a CPU node) runs its jobs without one by
            # design: nothing to say per job. A GPU grid without GPUs is refused once, before the
            # first job, by the workflow's preflight (models/preflight.py); this is a hand run.
            log(f"the job asks for {count} GPU(s) and {owner} has none: it runs without")
        env, allocator = cpu_job_env(env)
        log(f"allocator: {allocator}")
    else:
        taken = take(pool, count, lock_dir(env), owner)
        for fd in taken.values():
            os.set_inheritable(fd, True)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
        if env.get(EXPECT_GPU) != "none":  # the job then refuses to train without them (models/device.py)
            env[JOB_GPUS] = env["CUDA_VISIBLE_DEVICES"]
        log(f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} ({count} of the {len(pool)} GPU(s) of {owner})")
    os.execvpe(command[0], command, env)


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mixbench.gpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("count", help="print how many GPUs jobs share")
    start = commands.add_parser("run", help="run a command on GPUs of its own")
    start.add_argument("--gpus", type=int, required=True, help="devices the command needs (0: hide every GPU)")
    start.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    if args.action == "count":
        print(len(gpu_pool()))
        return
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.gpus < 0:
        parser.error("usage: run --gpus N (N >= 0) -- CMD ARGS...")
    run(args.gpus, command)


if __name__ == "__main__":
    main()
