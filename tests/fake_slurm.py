"""A SLURM stand-in for tests: sbatch, squeue, sacct, scancel, sinfo, scontrol and srun as
scripts on PATH that run every job on this machine.

``sbatch`` records its command line (one JSON list a line in ``STATE/sbatch.jsonl``), runs the
``--wrap`` command with the allocation's variables (``SLURM_JOB_ID``...) and prints the job id;
the job's state (RUNNING, then COMPLETED or FAILED) is kept where ``sacct`` and ``squeue`` read
it. ``srun`` records its command line too (``STATE/srun.jsonl``) and runs its command once per
task in parallel, as on ``--nodes`` nodes all named localhost.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

TOOLS = ("sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol", "srun")
FIRST_JOB_ID = 1000


def install(bin_dir: Path, state_dir: Path) -> None:
    """Write the tools into ``bin_dir`` (to put first on PATH); they keep their state in ``state_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\nFAKE_SLURM_STATE={shlex.quote(str(state_dir))} "
                          f"exec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {tool} \"$@\"\n")
        script.chmod(0o755)


def recorded(state_dir: Path, tool: str) -> list[list[str]]:
    """Every command line ``tool`` was called with, in order."""
    path = state_dir / f"{tool}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record(state: Path, tool: str, argv: list[str]) -> None:
    with open(state / f"{tool}.jsonl", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps([tool, *argv]) + "\n")


def option(argv: list[str], *names: str) -> str | None:
    """The value of ``--name=value``, ``--name value`` or ``-Xvalue``, last one wins."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg.startswith(name + "="):
                value = arg[len(name) + 1:]
            elif arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif len(name) == 2 and arg.startswith(name) and len(arg) > 2:
                value = arg[2:]
    return value


def next_job_id(state: Path) -> str:
    with open(state / "next_id", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read() or FIRST_JOB_ID)
        f.seek(0)
        f.truncate()
        f.write(str(job_id + 1))
    return str(job_id)


def sbatch(state: Path, argv: list[str]) -> None:
    """Run the ``--wrap`` command to its end, then print the job id: a cluster with an empty queue.
    (The plugin's status checks back off by 10 s per check that finds nothing finished; a job
    that is done when submitted is found at the first check.)"""
    record(state, "sbatch", argv)
    job_id = next_job_id(state)
    job = state / "jobs" / job_id
    job.with_suffix(".name").write_text(option(argv, "--job-name", "-J") or "")
    job.with_suffix(".state").write_text("RUNNING")
    nodes = int(option(argv, "--nodes", "-N") or 1)
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_NNODES": str(nodes),
           "SLURM_JOB_NODELIST": ",".join(["localhost"] * nodes)}
    with open((option(argv, "--output", "-o") or os.devnull).replace("%j", job_id), "w") as output:
        code = subprocess.run(["/bin/sh", "-c", option(argv, "--wrap")], env=env, cwd=option(argv, "-D", "--chdir"),
                              stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    job.with_suffix(".state").write_text("COMPLETED" if code == 0 else "FAILED")
    print(job_id)


def job_states(state: Path, name: str | None) -> None:
    for path in sorted((state / "jobs").glob("*.state")):
        if name is None or path.with_suffix(".name").read_text() == name:
            print(f"{path.stem}|{path.read_text()}")


def srun(state: Path, argv: list[str]) -> int:
    record(state, "srun", argv)
    options = []
    while argv and argv[0].startswith("-"):
        options.append(argv.pop(0))
    tasks = int(option(options, "--ntasks", "-n") or 1)
    nodes = int(option(options, "--nodes", "-N") or 1)
    step = {"SLURM_STEP_NODELIST": ",".join(["localhost"] * nodes), "SLURM_STEP_NUM_NODES": str(nodes),
            "SLURM_NNODES": str(nodes), "SLURM_NTASKS": str(tasks)}
    procs = [subprocess.Popen(argv, env={**os.environ, **step, "SLURM_PROCID": str(task),
                                         "SLURM_NODEID": str(task * nodes // tasks), "SLURM_LOCALID": "0"})
             for task in range(tasks)]
    return max(p.wait() for p in procs)


def main(tool: str, argv: list[str]) -> int:
    state = Path(os.environ.get("FAKE_SLURM_STATE", "."))
    if tool == "sbatch":
        sbatch(state, argv)
    elif tool in ("sacct", "squeue"):
        # Status queries name the run (--name RUN_UUID); other queries (account, nodes) get nothing.
        if "--name" in argv or any(a.startswith("--name=") for a in argv):
            job_states(state, option(argv, "--name"))
    elif tool == "scontrol":
        if argv[:2] == ["show", "hostnames"]:
            print("\n".join(argv[2].split(",")))
        elif argv[:2] == ["show", "config"]:
            print("MinJobAge               = 300 sec\nMaxArraySize            = 1001")
    elif tool == "srun":
        return srun(state, argv)
    elif tool == "scancel":
        record(state, "scancel", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
