"""What a job costs before it computes anything: imports, config loading, token-file checks.

    python -m benchmarks.startup --config config/config.yaml [--repeats 3] [--out results/benchmarks]

Each part is timed in a fresh Python process (the way a workflow job starts), ``--repeats``
times, reporting the median:

- ``python``: the interpreter alone;
- ``import models.train`` and ``import eval.harness.evaluate + lm-eval``: a training and an evaluation
  job's imports (torch, transformers; lm-eval for the evaluation);
- ``config``: ``strategies.grid_config.load`` of ``--config`` (schema, every check) after its imports;
- ``tokens (as built)``: opening the train split's token files as a training job does, the files
  unchanged since their build (size and modification time checked);
- ``tokens (hashed)``: the same with every file's sha256 and largest id checked, as a job does
  for a file whose modification time differs from the build's.

Needs the config's token files (run the workflow's data steps first). Writes
``OUT/startup.{json,md}``; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mixbench import REPO_ROOT
from mixbench.io import write_json, write_text

TOKENS = """
import sys, time
from pathlib import Path
from corpus import tokens
from mixbench import config as cfg
config = cfg.load(sys.argv[1])
if sys.argv[2] == "hashed":  # as if every file had been touched since the build
    tokens.TokenStore._unchanged = staticmethod(lambda path, entry: False)
started = time.perf_counter()
tokens.TokenStore(Path(config["data_dir"]) / "tokens", "train", config["corpus"]["domains"])
print(time.perf_counter() - started)
"""
CONFIG = """
import sys, time
from strategies import grid_config
started = time.perf_counter()
grid_config.load(sys.argv[1])
print(time.perf_counter() - started)
"""


def timed_process(code: str, *args: str) -> float:
    """Wall seconds of a fresh ``python -c code``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=REPO_ROOT, capture_output=True)
    return time.perf_counter() - started


def inner_seconds(code: str, *args: str) -> float:
    """Seconds a fresh process reports for the part it times itself (after its imports)."""
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=REPO_ROOT, capture_output=True,
                          text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmarks")
    args = parser.parse_args(argv)
    parts = {
        "python": lambda: timed_process("pass"),
        "import models.train": lambda: timed_process("import models.train"),
        # eval.harness.evaluate imports lm-eval when it builds the model and tasks: the same modules.
        "import eval.harness.evaluate + lm-eval": lambda: timed_process(
            "import eval.harness.evaluate, lm_eval.evaluator, lm_eval.models.huggingface, lm_eval.tasks"),
        "config": lambda: inner_seconds(CONFIG, args.config),
        "tokens (as built)": lambda: inner_seconds(TOKENS, args.config, "built"),
        "tokens (hashed)": lambda: inner_seconds(TOKENS, args.config, "hashed"),
    }
    rows = []
    for name, measure in parts.items():
        seconds = [measure() for _ in range(args.repeats)]
        rows.append({"part": name, "median_s": round(statistics.median(seconds), 3), "runs_s": [round(s, 3) for s in seconds]})
        print(f"{name}: {rows[-1]['median_s']} s", file=sys.stderr)
    table = "| part | median seconds |\n|---|---:|\n" + "".join(f"| {r['part']} | {r['median_s']:.3f} |\n" for r in rows)
    write_json(args.out / "startup.json", {"config": args.config, "repeats": args.repeats, "parts": rows})
    write_text(args.out / "startup.md", table)
    print(table)


if __name__ == "__main__":
    main()
