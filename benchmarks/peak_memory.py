"""Peak memory of a piece of work, as the benchmarks measure it (benchmarks/throughput.py,
benchmarks/acceptance.py)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch


class PeakMemory:
    """Peak bytes of what ``peak_of`` runs above what the process held at ``mark()``: CUDA's
    allocator counters, or on a CPU Linux's VmRSS and VmHWM (peak RSS, reset through clear_refs)."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        if not self.cuda:
            if not Path("/proc/self/clear_refs").exists():
                raise RuntimeError("on a CPU the benchmark reads peak memory from Linux's /proc/self")
            # glibc raises its mmap threshold (up to 32 MiB) whenever a large block is freed; freed
            # tensors then stay in its heap, and a model reusing that heap would look smaller than
            # it is. A fixed threshold sends every block of 128 KiB or more to mmap, back to the OS
            # when freed. ``timing()`` then sets glibc's largest mmap threshold (32 MiB) and keeps
            # the heap untrimmed: a timed step does not fault in again the pages that the step
            # before it, another model's, gave back.
            self._malloc_thresholds(mmap=128 * 1024, trim=128 * 1024)

    @staticmethod
    def _malloc_thresholds(mmap: int, trim: int) -> None:
        libc = ctypes.CDLL(None)
        if libc.mallopt(-3, mmap) != 1 or libc.mallopt(-1, trim) != 1:  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
            raise RuntimeError("glibc's mallopt refused to set its thresholds")

    def _read(self, peak: bool) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated if peak else torch.cuda.memory_allocated)(self.device)
        key = "VmHWM:" if peak else "VmRSS:"
        return next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith(key))

    def mark(self) -> None:
        self.base = self._read(peak=False)

    def peak_of(self, fn) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        fn()
        return self._read(peak=True) - self.base

    def timing(self) -> None:
        if not self.cuda:
            self._malloc_thresholds(mmap=32 * 2**20, trim=2**31 - 1)
