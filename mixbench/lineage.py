"""Lineage: the content hashes of what each artifact was made from.

Every artifact records the digests of its inputs, and every consumer compares them with what it
is about to read, so that no result silently comes from inputs other than the ones it claims:

- the corpus is named by its manifest (``corpus/manifest.json`` records the sha256 of every
  domain's text, so its digest covers the text);
- the tokenizer records the corpus's digest (``tokenizer/lineage.json``); its own digest is that
  of its vocabulary, merges and added tokens (``tokenizer_digest``), the same for the data
  folder's copy and a model folder's ``save_pretrained`` copy;
- the token files record the corpus's and the tokenizer's digests (``meta.json``'s ``lineage``);
  their digest is that of ``meta.json``, which records the sha256 of every token file;
- a run records the config fingerprint, the token files', the tokenizer's and each upstream
  run's digests (``run.json``'s ``inputs``, the same dict its checkpoints hold);
- an evaluation records its run's and its tokenizer's digests; a table row the evaluation's.

Digests are sha256 hex strings. This module reads files only: it imports nothing of mixbench's
above ``io`` and ``errors``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mixbench.errors import DataError
from mixbench.io import read_json, sha256_file

CORPUS_FILE = "manifest.json"
TOKENS_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_LINEAGE = "lineage.json"
RUN_FILE = "run.json"
# The trainer's own log inside its run folder (Snakemake's job log only points to it): a run
# without it is incomplete.
TRAINING_LOG = "train.log"


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes; DataError naming it when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: nothing can say what was made from it")
    return sha256_file(path)


def canonical_digest(value) -> str:
    """The sha256 of a JSON value with sorted keys (the same value, the same digest)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tokenizer_digest(folder: str | Path) -> str:
    """The digest of what a tokenizer maps text to: its model's vocabulary and merges and its
    added tokens, read from ``tokenizer.json``. Formatting and the other files
    ``save_pretrained`` writes (which differ between the data folder's copy and a model's) do
    not change it."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"{folder} holds no {TOKENIZER_FILE}: its tokenizer cannot be identified; save it with "
                        f"`tokenizer.save_pretrained('{folder}')` (a fast tokenizer writes {TOKENIZER_FILE})")
    # Half a second for GPT-2's vocabulary, and a run reads the tokenizer's digest several times
    # (its token files' check, its inputs, its upstream runs' check): once per process and file.
    key = _file_key(path)
    if key not in _TOKENIZER_DIGESTS:
        _TOKENIZER_DIGESTS[key] = _tokenizer_essence_digest(path)
    return _TOKENIZER_DIGESTS[key]


_TOKENIZER_DIGESTS: dict[tuple, str] = {}


def _file_key(path: Path) -> tuple:
    """A file's identity as the file system keeps it: any write or replacement changes its inode
    or its change time (which, unlike the modification time, no one can set back)."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _tokenizer_essence_digest(path: Path) -> str:
    try:
        tokenizer = read_json(path)
        model = tokenizer["model"]
        essence = {"model": {"type": model.get("type"), "vocab": model.get("vocab"),
                             "merges": _merge_pairs(model.get("merges"))},
                   "added_tokens": sorted((token["id"], token["content"]) for token in tokenizer.get("added_tokens") or [])}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a tokenizer.json ({exc.__class__.__name__}: {exc}); rebuild it with: "
                        f"snakemake --cores 1 --forcerun train_tokenizer") from None
    return canonical_digest(essence)


def _merge_pairs(merges):
    """BPE merges as pairs: tokenizers before 0.20 saved a merge as one string "a b", later ones as
    ["a", "b"]; the same merges must give the same digest whichever release saved them."""
    if not isinstance(merges, list):
        return merges  # not a BPE: no merges
    return [merge.split(" ", 1) if isinstance(merge, str) else merge for merge in merges]


def run_digest(run_dir: str | Path) -> str:
    """A finished run's digest: its run.json's, which records its inputs."""
    return file_digest(Path(run_dir) / RUN_FILE)


def differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two lineage dicts, one ``name: recorded -> current`` per key
    (digests shortened to 12 characters); [] when they agree."""
    changed = []
    for name in sorted(set(recorded) | set(current)):
        before, after = recorded.get(name), current.get(name)
        if isinstance(before, dict) or isinstance(after, dict):
            changed += [f"{name}.{line}" for line in differences(before or {}, after or {})]
        elif before != after:
            changed.append(f"{name}: {_short(before)} -> {_short(after)}")
    return changed


def _short(value) -> str:
    if value is None:
        return "(none)"
    return value[:12] if isinstance(value, str) else str(value)
