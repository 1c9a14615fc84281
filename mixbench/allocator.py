"""tcmalloc for CPU jobs, so that a step does not ask the kernel for fresh pages every time.

glibc's malloc serves each allocation above 32 MiB with a new ``mmap`` and unmaps it when freed.
A CPU training step or evaluation batch of the default grid allocates several such blocks (the
logits of 16 x 128 tokens over an 8,192-token vocabulary are 64 MiB in fp32, and their
log-softmax and gradient as much again), so every step paid the kernel to map and zero them
anew: about a third of a training job's CPU time was system time. tcmalloc keeps freed pages
for reuse. Turning glibc's mmap off instead (``mallopt``) fragments its heap under torch's
aligned allocations: 128 MiB allocated per step grew the heap to 925 MiB.

Results are the same bit for bit, as measured rather than guaranteed: torch asks every
allocator for 64-byte alignment, but a BLAS may pick its code path by the actual alignment.
tests/test_allocator.py trains the same model bytes under both, and the default grid's 24
models and evaluations came out identical (docs/performance.md, "The default grid's time").
PyTorch's own CPU launcher does the same (``torch.backends.xeon.run_cpu --enable-tcmalloc``).

``mixbench.gpus run`` preloads it into jobs that run without a GPU (on a GPU the large tensors
live in CUDA's caching allocator). ``MIXBENCH_ALLOCATOR=system`` keeps glibc's malloc; a job
without tcmalloc says how to install it (Debian: libtcmalloc-minimal4; conda: gperftools). The
path is found on the machine that launches the job: under ``srun`` on several nodes, each node
needs the library at the same path (ld.so says so in the job's log where it is missing).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mixbench.errors import ConfigError

LIBRARY = "libtcmalloc_minimal.so.4"
# Where Debian, Red Hat, /usr/local and a conda or virtual environment keep shared libraries.
SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# An allocator the user preloaded already (by file name): the job keeps it.
PRELOADED = re.compile(r"lib(tcmalloc|jemalloc|mimalloc|tbbmalloc)")
CHOICES = ("tcmalloc", "system")


def find_tcmalloc(prefixes: tuple[str, ...] = (sys.prefix, sys.base_prefix)) -> Path | None:
    for folder in (*(f"{p}/lib" for p in prefixes), *SEARCH):
        path = Path(folder) / LIBRARY
        if path.is_file():
            return path
    return None


def cpu_job_env(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """``env`` with tcmalloc preloaded where it can be, and a line for the job's log saying which
    allocator the job runs with."""
    choice = env.get("MIXBENCH_ALLOCATOR") or "tcmalloc"
    if choice not in CHOICES:
        raise ConfigError(f"MIXBENCH_ALLOCATOR={choice!r}: expected one of {', '.join(CHOICES)} (unset: tcmalloc)")
    if choice == "system":
        return env, "glibc malloc (MIXBENCH_ALLOCATOR=system)"
    # ld.so splits LD_PRELOAD at spaces and colons.
    preload = [entry for entry in re.split(r"[ :]", env.get("LD_PRELOAD", "")) if entry]
    if any(PRELOADED.match(Path(entry).name) for entry in preload):
        return env, f"the allocator already preloaded ({env['LD_PRELOAD']})"
    if not sys.platform.startswith("linux"):
        return env, f"the system allocator ({sys.platform})"
    library = find_tcmalloc()
    if library is None:
        return env, (f"glibc malloc: {LIBRARY} not found, so CPU steps run about a quarter slower "
                     "(Debian: apt-get install libtcmalloc-minimal4; conda: gperftools)")
    if re.search(r"[ :]", str(library)):
        return env, f"glibc malloc: {library} cannot be preloaded (LD_PRELOAD cannot hold a space or colon)"
    env = {**env, "LD_PRELOAD": ":".join([str(library), *preload])}
    # tcmalloc reports every allocation above 1 GiB on stderr; a large CPU model makes many.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(2**40))
    return env, f"tcmalloc ({library})"
