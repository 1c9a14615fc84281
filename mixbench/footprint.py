"""The disk a grid fills, estimated from its config before anything runs, by part.

- **corpus**: every domain's cap (``corpus.max_bytes_per_domain``, the build's hard limit on
  its text) plus ``JSON_OVERHEAD`` for the jsonl records that hold it.
- **token files**: the corpus's bytes over ``BYTES_PER_TOKEN`` (fewer bytes a token than English
  text has, so more tokens than likely), 2 bytes an id under 65,537 ids, else 4 (corpus/tokens.py).
- **checkpoints**: only runs in progress hold them (a finished run deletes its own): the largest
  ``parallel_runs`` runs, each with ``CHECKPOINTS_AT_ONCE`` checkpoints (two kept, and a third
  while it is written) of ``CHECKPOINT_BYTES_PER_PARAMETER`` (fp32 weights and AdamW's two
  moments; models/checkpoint.py) of its vocabulary-padded model.
- **models**: every run that saves its model (safetensors fp32 of the unpadded model, and the
  tokenizer): final models, references and proxies.
- **swarm runs**: the runs of a fan-out stage (RegMix's), which save no model unless their
  stage's entry says ``save_model: true``; their logs.
- **run logs**: log.csv, val.csv and TensorBoard events, ``LOG_BYTES_PER_STEP`` a step.
- **evaluation**: ``EVALUATION_BYTES`` per final model, and the results folder.

Parameter counts come from mixbench/model_sizes.py's closed form. An estimate, with generous
constants: the preflight refuses a run only when free space is below it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mixbench import config as cfg
from mixbench.model_sizes import SIZES, approx_parameters, planned_vocab_size

GB = 10**9
JSON_OVERHEAD = 1.10
BYTES_PER_TOKEN = 3.0
CHECKPOINTS_AT_ONCE = 3
CHECKPOINT_BYTES_PER_PARAMETER = 12
MODEL_BYTES_PER_PARAMETER = 4
TOKENIZER_BYTES = 4 * 2**20
LOG_BYTES_PER_STEP = 1000
EVALUATION_BYTES = 2 * 2**20
RESULTS_BYTES = 200 * 2**20


@dataclass(frozen=True)
class Part:
    name: str
    folder: str  # where it is written: its filesystem's free space pays for it
    bytes: float
    detail: str


@dataclass(frozen=True)
class Run:
    size: str
    strategy: str
    stage: str
    steps: int
    seeds: int


def vocabulary(config: dict) -> tuple[int, str]:
    """(ids of the tokenizer, where that number comes from)."""
    meta = Path(config["data_dir"]) / "tokens" / "meta.json"
    if meta.is_file():
        return int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"]), str(meta)
    tokenizer = config["tokenizer"]
    where = "tokenizer.vocab_size" if tokenizer["kind"] == "bpe" else f"GPT-2's, assumed for tokenizer.kind {tokenizer['kind']}"
    return planned_vocab_size(tokenizer), where


def estimate(config: dict, runs: list[Run], parallel_runs: int) -> list[Part]:
    """The grid's footprint by part (see the module's docstring); ``runs``: every training run of
    the grid once (a proxy shared by three final sizes is one run; models/preflight.py lists them)."""
    data, runs_dir = config["data_dir"], config["runs_dir"]
    vocab, _ = vocabulary(config)
    padded = -(-vocab // 64) * 64
    corpus = sum(cfg.domain_cap(config["corpus"], d) for d in config["corpus"]["domains"])
    tokens = corpus / BYTES_PER_TOKEN
    id_bytes = 2 if vocab <= 65536 else 4

    def params(run: Run, vocab_size: int) -> int:
        return approx_parameters(SIZES[run.size], vocab_size)

    checkpoint = sorted((CHECKPOINTS_AT_ONCE * CHECKPOINT_BYTES_PER_PARAMETER * params(r, padded) for r in runs),
                        reverse=True)
    in_progress = checkpoint[:parallel_runs]
    fan_out = [r for r in runs if cfg.Stage.parse(r.stage).replica is not None]
    saved = [r for r in runs if r not in fan_out]
    saved_fan_out = [r for r in fan_out if cfg.stage_saves_model(config, r.strategy, r.stage)]
    model_bytes = lambda group: sum(r.seeds * (MODEL_BYTES_PER_PARAMETER * params(r, vocab) + TOKENIZER_BYTES)
                                    for r in group)
    finals = sum(r.seeds for r in runs if r.stage == "final")
    return [
        Part("corpus", data, corpus * JSON_OVERHEAD, f"{len(config['corpus']['domains'])} domains' caps, "
             f"{corpus / GB:.1f} GB of text"),
        Part("token files", data, tokens * id_bytes,
             f"{tokens / 1e9:.2f}B tokens at {BYTES_PER_TOKEN:g} bytes a token, {id_bytes} bytes an id"),
        Part("checkpoints", runs_dir, sum(in_progress),
             f"{len(in_progress)} run(s) training at once, {CHECKPOINTS_AT_ONCE} checkpoints each"),
        Part("models", runs_dir, model_bytes(saved), f"{sum(r.seeds for r in saved)} saved models, fp32"),
        Part("swarm runs", runs_dir, model_bytes(saved_fan_out),
             f"{sum(r.seeds for r in fan_out)} runs, {sum(r.seeds for r in saved_fan_out)} of them saving a model"),
        Part("run logs", runs_dir, LOG_BYTES_PER_STEP * sum(r.steps * r.seeds for r in runs),
             f"{sum(r.steps * r.seeds for r in runs):,} steps"),
        Part("evaluation", config["results_dir"], finals * EVALUATION_BYTES + RESULTS_BYTES,
             f"{finals} final models"),
    ]


def human(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= GB / 10 else f"{size / 2**20:.1f} MiB"


def bytes_under(folder: str | Path) -> int:
    """What is already written under ``folder`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # removed while walking (a run finishing elsewhere)
                continue
    return total


def existing_ancestor(folder: str | Path) -> Path:
    path = Path(folder).resolve()
    while not path.exists():
        path = path.parent
    return path


def shortfalls(parts: list[Part], free=lambda path: shutil.disk_usage(path).free) -> tuple[list[str], list[str]]:
    """(report lines, problems): per filesystem, the parts written there against its free space,
    counting what the grid's folders already hold as written."""
    by_device: dict[int, list[Part]] = {}
    for part in parts:
        by_device.setdefault(os.stat(existing_ancestor(part.folder)).st_dev, []).append(part)
    lines, problems = [], []
    for group in by_device.values():
        folders = list(dict.fromkeys(p.folder for p in group))
        needed = sum(p.bytes for p in group)
        written = sum(bytes_under(f) for f in folders)
        available = free(existing_ancestor(folders[0]))
        still = max(0.0, needed - written)
        where = ", ".join(folders)
        lines.append(f"disk for {where}: " + "; ".join(f"{p.name} {human(p.bytes)} ({p.detail})" for p in group)
                     + f"; {human(needed)} in all, {human(written)} already written, {human(available)} free")
        if available < still:
            problems.append(f"disk: {where} needs about {human(still)} more ({human(needed)} estimated, "
                            f"{human(written)} written) but its filesystem has {human(available)} free; "
                            f"free space or point data_dir/runs_dir/results_dir at a larger disk")
    return lines, problems
