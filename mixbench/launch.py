"""Start one training run on the nodes and processes its config asks for.

    python -m mixbench.launch --nodes M --processes N --cpus C --gpus G -- -m models.train ARGS...

* 1 node, 1 process: ``python -m models.train ARGS``.
* 1 node, N processes: ``torchrun --standalone --nproc_per_node N`` (DDP on this machine).
* M > 1 nodes: only inside a SLURM allocation of M nodes (profiles/slurm). ``srun`` starts one
  task per node with C CPUs and G GPUs, and each task runs torchrun with the c10d rendezvous on
  the first node of the step: the agents find each other there and number the M × N ranks, so no
  node needs a fixed master address or rank. The rendezvous port comes from the job id, so two
  jobs sharing a head node do not meet in one rendezvous.

The run itself (models.train) reads WORLD_SIZE, RANK and LOCAL_RANK from torchrun either way.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from mixbench.cli import main_guard
from mixbench.errors import ConfigError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Below Linux's ephemeral range (32768+), where a client socket could already hold the port.
RDZV_PORT_BASE, RDZV_PORT_SPAN = 29500, 3000


def job_resources(run) -> dict:
    """What a training job asks the scheduler for, from its run's resources
    (``mixbench.config.run_resources``): Snakemake resources read by the local scheduler
    (`gpu`, under profiles/gpu) and by snakemake-executor-plugin-slurm (profiles/slurm). Its CPUs
    are the plugin's `cpus_per_task`, which sbatch and the jobstep's srun take as they are (threads
    are capped at the submitting host's --cores); the rule passes the same number to --cpus, and
    `gpus_per_node`/`processes_per_node` to this launcher, so a job starts what it asked for."""
    resources = {"nodes": run.nodes, "cpus_per_task": run.cpus, "runtime": run.runtime,
                 "gpus_per_node": run.gpus, "processes_per_node": run.processes}
    if run.nodes == 1:
        return {**resources, "gpu": run.gpus}  # sbatch --gpus: the job's total
    # Per node: `gres`, and one task per node for srun. `mpi` keeps the jobstep plugin from
    # wrapping the job in an `srun -n1` step (the launcher runs srun itself); tasks_per_gpu=0
    # keeps the plugin from turning `tasks` into --ntasks-per-gpu.
    resources.update(tasks=run.nodes, tasks_per_gpu=0, mpi="srun")
    if run.gpus:
        resources["gres"] = f"gpu:{run.gpus}"
    return resources


def local_command(processes: int, args: list[str]) -> list[str]:
    if processes == 1:
        return [sys.executable, *args]
    return [*TORCHRUN, "--standalone", "--nproc_per_node", str(processes), *args]


def srun_command(nodes: int, processes: int, cpus: int, gpus: int, args: list[str], env=os.environ) -> list[str]:
    """The command that starts one torchrun agent per node of the SLURM allocation."""
    if "SLURM_JOB_ID" not in env:
        raise ConfigError(f"training.nodes is {nodes}: a run on several nodes starts only inside a SLURM allocation "
                          f"of {nodes} nodes (snakemake --profile profiles/slurm), and SLURM_JOB_ID is not set here; "
                          f"on one machine set training.nodes: 1")
    # Explicit step geometry: the jobstep plugin strips the allocation's SLURM_* defaults from our
    # environment, and srun no longer inherits --cpus-per-task from sbatch anyway.
    step = [f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
            "--kill-on-bad-exit=1"]
    if gpus:
        step.append(f"--gpus-per-node={gpus}")
    per_node = [sys.executable, "-m", "mixbench.launch", "--slurm-node", "--nodes", str(nodes),
                "--processes", str(processes), "--", *args]
    return ["srun", *step, *per_node]


def rendezvous_command(nodes: int, processes: int, args: list[str], env=os.environ) -> list[str]:
    """Inside one srun task: torchrun joining the c10d rendezvous on the step's first node."""
    missing = [v for v in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST") if v not in env]
    if missing:
        raise ConfigError(f"--slurm-node runs as an srun task, but {', '.join(missing)} is not set")
    nodelist = env["SLURM_STEP_NODELIST"]
    listed = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    if listed.returncode != 0:
        raise ConfigError(f"`scontrol show hostnames {nodelist}` failed: {listed.stderr.strip()}")
    hostnames = listed.stdout.split()
    if len(hostnames) != nodes:
        raise ConfigError(f"training.nodes is {nodes} but the srun step runs on {len(hostnames)} node(s): "
                          f"{' '.join(hostnames)}")
    job_id = env["SLURM_JOB_ID"]
    port = RDZV_PORT_BASE + int(job_id) % RDZV_PORT_SPAN
    return [*TORCHRUN, "--nnodes", str(nodes), "--nproc_per_node", str(processes), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"{hostnames[0]}:{port}", "--rdzv_id", job_id, *args]


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mixbench.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1, help="training.nodes")
    parser.add_argument("--processes", type=int, default=1, help="training.processes: DDP processes per node")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node (several nodes only)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node (several nodes only)")
    parser.add_argument("--slurm-node", action="store_true", help=argparse.SUPPRESS)  # one srun task
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- the run's python arguments: -m models.train ...")
    a = parser.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args or a.nodes < 1 or a.processes < 1:
        parser.error("usage: --nodes M --processes N (both >= 1) -- -m models.train ARGS...")
    if a.slurm_node:
        command = rendezvous_command(a.nodes, a.processes, args)
    elif a.nodes == 1:
        command = local_command(a.processes, args)
    else:
        command = srun_command(a.nodes, a.processes, a.cpus, a.gpus, args)
    print(f"mixbench.launch: {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
