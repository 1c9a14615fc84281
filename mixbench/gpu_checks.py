"""Why a run meant for a GPU would not get one: a CPU-only torch, a driver too old for the torch
build, or no GPU for jobs at all. Said before the first job (models.preflight) and again by a
job that mixbench.gpus gave GPUs (models/device.py), so that no run trains on the CPU unseen.

The diagnosis takes torch's facts as arguments: the preflight passes its own, tests pass fakes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

# Set by `python -m mixbench.gpus run` for the command it starts: the devices that job was given.
JOB_GPUS = "MIXBENCH_JOB_GPUS"
# The GPUs a grid expects (one of LEVELS), said outright; the workflow's preflight and a SLURM job
# that got no GPU read it (`none`: e.g. the SLURM path rehearsed on CPU nodes).
EXPECT_GPU = "MIXBENCH_EXPECT_GPU"
# What the preflight checks: `build` where the GPUs are elsewhere (a SLURM submit host: the torch
# build only), `machine` where the jobs run here (the build, the driver and the GPU pool).
LEVELS = ("none", "build", "machine")


@dataclass(frozen=True)
class TorchFacts:
    version: str  # torch.__version__
    cuda: str | None  # torch.version.cuda: None for a CPU-only build
    cuda_available: bool  # torch.cuda.is_available()

    @classmethod
    def here(cls) -> "TorchFacts":
        import torch

        return cls(torch.__version__, torch.version.cuda, torch.cuda.is_available())


def listed_gpus(env=os.environ) -> list[str] | None:
    """The GPUs ``nvidia-smi -L`` lists; None where there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi", path=env.get("PATH")) is None:
        return None
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, env=dict(env))
    return re.findall(r"^GPU (\d+):", listed.stdout, flags=re.M) if listed.returncode == 0 else None


def reinstall_command(torch_version: str) -> str:
    return (f"pip install --force-reinstall 'torch=={torch_version.split('+')[0]}' --index-url "
            f"https://download.pytorch.org/whl/cuNNN (NNN: a CUDA version the driver supports, "
            f"as `nvidia-smi` prints it, e.g. cu128)")


def build_problem(torch_facts: TorchFacts) -> str | None:
    if torch_facts.cuda is None:
        return (f"GPU: torch {torch_facts.version} is a CPU-only build (torch.version.cuda is None) but the runs are "
                f"meant for GPUs; install the CUDA build: {reinstall_command(torch_facts.version)}")
    return None


def driver_problem(torch_facts: TorchFacts, listed: list[str] | None) -> str | None:
    """A CUDA build that cannot use the GPUs there are."""
    if torch_facts.cuda is None or torch_facts.cuda_available:
        return None
    seen = f"nvidia-smi lists {len(listed)} GPU(s)" if listed else "nvidia-smi is missing or lists no GPU"
    return (f"GPU: {seen}, but torch {torch_facts.version} (built for CUDA {torch_facts.cuda}) cannot use any "
            f"(torch.cuda.is_available() is False): the NVIDIA driver is missing or older than CUDA "
            f"{torch_facts.cuda} needs; upgrade the driver, or install a torch build for the CUDA version "
            f"the driver supports: {reinstall_command(torch_facts.version)}")


def gpu_problems(level: str, torch_facts: TorchFacts, pool: list[str], listed: list[str] | None) -> list[str]:
    """Every reason a GPU run would not get its GPU, at ``level`` (see LEVELS)."""
    if level == "none":
        return []
    problems = [build_problem(torch_facts)]
    if level == "machine":
        if not pool:
            problems.append("GPU: no GPU for jobs on this machine (MIXBENCH_GPUS, CUDA_VISIBLE_DEVICES and "
                            "`nvidia-smi -L` give none; `python -m mixbench.gpus count` prints 0), so every GPU "
                            "job would start at once on the CPU; run where there are GPUs, set MIXBENCH_GPUS=0,1,... "
                            "to the devices to use, or set training.device: cpu")
        else:
            problems.append(driver_problem(torch_facts, listed))
    return [p for p in problems if p]


def job_device_problem(device_setting: str, torch_facts: TorchFacts, env=os.environ) -> str | None:
    """Inside a training job: why ``training.device`` would not give it the GPU it was meant to
    have (None when it will). A job mixbench.gpus gave GPUs must use them; ``cuda`` must find one."""
    given = env.get(JOB_GPUS)
    if device_setting == "cpu" or torch_facts.cuda_available or not (given or device_setting == "cuda"):
        return None
    why = build_problem(torch_facts) or driver_problem(torch_facts, listed_gpus(env))
    what = (f"this job was given GPU(s) {given} (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')})"
            if given else "training.device is cuda")
    return f"{what} but torch cannot use a GPU, and training on the CPU instead is refused: {why}"
