"""Where a training process runs: its rank and device, and the settings that make that device fast.

On CUDA, by default: bf16 autocast (``training.precision: auto``), TF32 for the fp32 matmuls
that remain, fused AdamW (models/optim.py), SDPA attention (models/gpt2.py), the vocabulary
padded to a multiple of 64 (models/gpt2.py) and ``torch.compile`` (``training.compile: auto``).
On a CPU: fp32, no compilation, ``training.threads`` threads.
"""

from __future__ import annotations

import os
import resource
import sys

import torch
import torch.distributed as dist

from mixbench.errors import TrainingError
from mixbench.gpu_checks import TorchFacts, job_device_problem


def init_distributed(device_setting: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group under torchrun. With
    ``CUDA_VISIBLE_DEVICES`` set per job (mixbench.gpus, SLURM), LOCAL_RANK indexes the job's own GPUs."""
    # A job meant for a GPU (given one by mixbench.gpus, or on device cuda) that cannot use it
    # fails here, before any compute: never a silent fallback to days of CPU training.
    problem = job_device_problem(device_setting, TorchFacts.here())
    if problem:
        raise TrainingError(problem)
    use_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():  # a pack's later runs reuse the group (models/train_pack.py)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def configure(device: torch.device, threads: int) -> None:
    if device.type == "cpu":
        torch.set_num_threads(threads)
        return
    # TF32 for any fp32 matmul left outside autocast (bf16 does the rest).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


def uses_bf16(device: torch.device, precision: str) -> bool:
    return device.type == "cuda" and precision != "fp32"


def uses_compile(device: torch.device, setting: bool | str) -> bool:
    """``compile: auto`` compiles on CUDA, where it fuses the step's elementwise work; on a CPU
    compilation costs more than short runs gain."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of a CUDA device; None on a CPU."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def peak_memory(device: torch.device) -> int:
    """Peak bytes this process has used: CUDA's allocator peak, or the CPU process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
