"""Data budget: how many times a run goes over each domain's train split.

A run's *epochs* on a domain are the tokens it trained on that domain divided by the domain's
train tokens (``{data_dir}/tokens/meta.json``). Above 1 the run repeated that domain's data
(training windows are drawn at random, so some tokens repeat below 1 too: epochs count the
expected passes). Before a run starts, ``repetition_warning`` estimates them from the planned
tokens (steps × batch_size × seq_len) and the run's first weights; after it, ``trained_tokens``
reads what it actually trained on from its ``log.csv`` (models/runlog.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mixbench.errors import DataError
from mixbench.io import read_json


def available_train_tokens(data_dir: str | Path, domains: list[str]) -> np.ndarray:
    """Train-split tokens of each domain, from the token metadata."""
    path = Path(data_dir) / "tokens" / "meta.json"
    if not path.exists():
        raise DataError(f"no token metadata at {path}: tokenize the corpus first (python -m corpus.tokens)")
    meta = read_json(path)["domains"]
    missing = [d for d in domains if d not in meta]
    if missing:
        raise DataError(f"domains {missing} are not in {path} (it has {list(meta)})")
    return np.array([meta[d]["train"]["tokens"] for d in domains], dtype=np.float64)


def trained_tokens(log_path: str | Path, domains: list[str]) -> np.ndarray:
    """Tokens a run trained on per domain: the sum of its log's per-step ``tokens/<domain>``."""
    log_path = Path(log_path)
    with open(log_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        missing = [d for d in domains if f"tokens/{d}" not in header]
        if missing:
            raise DataError(f"{log_path} has no tokens column for domain(s) {missing}")
        columns = [header.index(f"tokens/{d}") for d in domains]
        totals = np.zeros(len(domains), dtype=np.float64)
        for row in reader:
            if len(row) == len(header):  # a crash can leave a half-written last row
                totals += [float(row[i]) for i in columns]
    return totals


def epochs(tokens: np.ndarray, available: np.ndarray) -> np.ndarray:
    """tokens / available per domain; 0 where nothing was trained, inf where nothing is available."""
    tokens, available = np.asarray(tokens, dtype=np.float64), np.asarray(available, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = tokens / available
    return np.where(tokens == 0, 0.0, np.where(available > 0, ratio, np.inf))


def planned_tokens(steps: int, batch_size: int, seq_len: int) -> int:
    """Tokens a run trains on: every step trains batch_size sequences of seq_len tokens."""
    return int(steps) * int(batch_size) * int(seq_len)


def repetition_warning(label: str, domains: list[str], weights: np.ndarray, planned: int, available: np.ndarray,
                       moving: bool = False) -> str | None:
    """The warning for a run that would repeat some domain's train split (expected tokens =
    weight × planned tokens > available), naming every domain's numbers; None if none would."""
    weights = np.asarray(weights, dtype=np.float64)
    expected = weights * planned
    ratio = epochs(expected, available)
    if not (ratio > 1).any():
        return None
    basis = ("its initial weights (an estimate: the strategy may move its weights as it trains)" if moving
             else "its weights")
    width = max(len("domain"), *(len(d) for d in domains))
    lines = [f"warning: {label} would repeat training data: {planned:,} tokens planned; per domain at {basis}:",
             f"  {'domain':<{width}}  {'weight':>7}  {'expected tokens':>16}  {'available':>16}  {'epochs':>7}"]
    for d, w, e, a, r in zip(domains, weights, expected, available, ratio):
        flag = "  > 1: repeated" if r > 1 else ""
        lines.append(f"  {d:<{width}}  {w:>7.4f}  {e:>16,.0f}  {a:>16,.0f}  {r:>7.2f}{flag}")
    repeated = [d for d, r in zip(domains, ratio) if r > 1]
    lines.append(f"  {len(repeated)} domain(s) would be seen more than once ({', '.join(repeated)}); to avoid it, "
                 "raise corpus.max_bytes_per_domain for them (then rebuild the corpus) or train fewer tokens. "
                 "Training goes on.")
    return "\n".join(lines)
