"""Token files: each domain/split as one flat array of token ids, documents separated by EOS.

    python -m corpus.tokens --config config/config.yaml

Writes ``{data_dir}/tokens/{domain}.{split}.bin`` (uint16 when the vocabulary fits, else
uint32) and ``{data_dir}/tokens/meta.json`` with dtype, vocabulary size, EOS id and, per
file, token and document counts and sha256. ``TokenStore`` opens them as memory maps and
refuses files whose size or checksum disagrees with the metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixbench.cli import config_command
from corpus.build import SPLITS
from mixbench.errors import DataError
from mixbench.io import atomic_path, read_json, sha256_file, write_json

REBUILD_HINT = "rebuild it with: snakemake --cores 1 --forcerun tokenize_corpus (or python -m corpus.tokens --config ...)"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def tokenize_split(tokenizer, jsonl: Path, out: Path, dtype: np.dtype, batch: int = 256) -> dict:
    """Encode every document of a split, append EOS after each, write the flat array."""
    with open(jsonl, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    eos = tokenizer.eos_token_id
    pieces = []
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]:
            pieces.append(np.asarray(ids + [eos], dtype=dtype))
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    with atomic_path(out) as tmp:
        tokens.tofile(tmp)
    return {"file": out.name, "tokens": int(tokens.size), "documents": len(texts), "sha256": sha256_file(out)}


def build(config: dict) -> dict:
    from transformers import AutoTokenizer

    data_dir = Path(config["data_dir"])
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    out_dir = data_dir / "tokens"
    files: dict[str, dict] = {}
    jobs = [(d, s) for d in config["corpus"]["domains"] for s in SPLITS]
    for domain, split in tqdm(jobs, desc="tokenizing", unit="file", disable=None):
        src = data_dir / "corpus" / domain / f"{split}.jsonl"
        files.setdefault(domain, {})[split] = tokenize_split(tokenizer, src, out_dir / f"{domain}.{split}.bin", dtype)
    meta = {"vocab_size": vocab_size, "dtype": dtype.name, "eos_id": tokenizer.eos_token_id, "domains": files}
    write_json(out_dir / "meta.json", meta)
    for domain in files:
        print(f"{domain:>14}: " + ", ".join(f"{s} {files[domain][s]['tokens']:,}" for s in SPLITS), file=sys.stderr)
    return meta


def uncapped_train_tokens(data_dir: str | Path, domains: list[str]) -> np.ndarray:
    """Train tokens each domain would have without the size cap (what ``natural`` is
    proportional to): its train tokens scaled by available bytes / kept bytes."""
    data_dir = Path(data_dir)
    manifest = read_json(data_dir / "corpus" / "manifest.json")["domains"]
    meta = read_json(data_dir / "tokens" / "meta.json")["domains"]
    estimates = []
    for domain in domains:
        kept = sum(split["bytes"] for split in manifest[domain]["splits"].values())
        available = manifest[domain].get("available_bytes", kept)
        estimates.append(meta[domain]["train"]["tokens"] * available / kept)
    return np.array(estimates, dtype=np.float64)


class TokenStore:
    """Read-only memory maps of one split's token files, checked against meta.json."""

    def __init__(self, tokens_dir: str | Path, split: str, domains: list[str] | None = None, verify: bool = True):
        tokens_dir = Path(tokens_dir)
        meta_path = tokens_dir / "meta.json"
        if not meta_path.exists():
            raise DataError(f"no token metadata at {meta_path}; {REBUILD_HINT}")
        self.meta = read_json(meta_path)
        self.vocab_size = int(self.meta["vocab_size"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.domains = list(domains or self.meta["domains"])
        unknown = [d for d in self.domains if d not in self.meta["domains"]]
        if unknown:
            raise DataError(f"domains {unknown} are not in {meta_path} (it has {list(self.meta['domains'])})")
        self.arrays = [self._open(tokens_dir, self.meta["domains"][d][split], verify) for d in self.domains]

    def _open(self, tokens_dir: Path, entry: dict, verify: bool) -> np.memmap:
        path = tokens_dir / entry["file"]
        if not path.exists():
            raise DataError(f"token file {path} is missing; {REBUILD_HINT}")
        expected = entry["tokens"] * self.dtype.itemsize
        if path.stat().st_size != expected:
            raise DataError(f"token file {path} is corrupt: {path.stat().st_size} bytes, expected {expected}; {REBUILD_HINT}")
        if verify and sha256_file(path) != entry["sha256"]:
            raise DataError(f"token file {path} is corrupt: sha256 differs from meta.json; {REBUILD_HINT}")
        array = np.memmap(path, dtype=self.dtype, mode="r")
        if verify and array.size and int(array.max()) >= self.vocab_size:
            raise DataError(f"token file {path} holds ids >= vocab size {self.vocab_size}; {REBUILD_HINT}")
        return array

    def token_counts(self) -> np.ndarray:
        return np.array([a.size for a in self.arrays], dtype=np.int64)


main = config_command(build, __doc__)


if __name__ == "__main__":
    main()
