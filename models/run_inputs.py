"""What a run is made from: its fingerprint (what a pack compares to skip a finished run) and its
inputs (mixbench/lineage.py), which run.json and each of its checkpoints record. Torch-free: the
fit stage and a pack compute them before any model exists.

A checkpoint or finished run whose inputs differ from the ones a run would read now was made
from other token ids, another tokenizer or other runs before it: it is not resumed or skipped.
"""

from __future__ import annotations

from pathlib import Path

from mixbench import config as cfg
from mixbench.lineage import TOKENS_FILE, file_digest, run_digest, tokenizer_digest
from strategies import runs as strategy_runs


def run_fingerprint(config: dict, run: cfg.Run) -> str:
    """What one run's result depends on, as its checkpoints and run.json record it: a checkpoint or
    a finished run of another fingerprint is not this run's. Not the number of processes (every
    step's data is the same for any number: corpus/sampler.py), nor a swarm's pack."""
    return chain_fingerprint(config, run, strategy_runs.run_chain(config, run.strategy, str(run.stage), run.size))


def chain_fingerprint(config: dict, run: cfg.Run, chain: dict) -> str:
    """``run_fingerprint`` of a run whose chain of stages (strategies/runs.py) is already known."""
    return cfg.fingerprint([strategy_runs.run_fingerprint(config, run.strategy, chain), run.seed, str(run.stage)])


def data_inputs(data_dir: str | Path) -> dict[str, str]:
    """{"tokens", "tokenizer"}: the digests of the token files (their meta.json, which records
    each file's sha256: no token file is hashed here) and of the tokenizer."""
    data_dir = Path(data_dir)
    return {"tokens": file_digest(data_dir / "tokens" / TOKENS_FILE),
            "tokenizer": tokenizer_digest(data_dir / "tokenizer")}


def run_inputs(config: dict, fingerprint: str, upstream: dict[str, Path]) -> dict:
    """A run's inputs: {"config": fingerprint, "tokens", "tokenizer", "upstream": {stage: run digest}}."""
    return {"config": fingerprint, **data_inputs(config["data_dir"]),
            "upstream": {stage: run_digest(folder) for stage, folder in sorted(upstream.items())}}
