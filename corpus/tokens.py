"""Token files: each domain/split as one flat array of token ids, documents separated by EOS.

    python -m corpus.tokens --config config/config.yaml [--workers N]

Writes ``{data_dir}/tokens/{domain}.{split}.bin`` (uint16 when the vocabulary fits, else
uint32) and ``{data_dir}/tokens/meta.json`` with dtype, vocabulary size, EOS id and, per
file, token and document counts and sha256, the digests of the corpus and tokenizer they were
made from (``lineage``, corpus/data_lineage.py), and the marker of the corpus and tokenizer
settings they were made with (``corpus.identity``). ``TokenStore`` opens them as memory maps and
refuses files whose size or checksum disagrees with the metadata, or whose lineage is not the
corpus and tokenizer beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from corpus import identity
from corpus.data_lineage import check_tokens_lineage, checked_tokenizer_lineage
from corpus.spool import SPLITS
from mixbench import config as cfg
from corpus.manifest import verify_splits
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import DataError
from mixbench.io import atomic_path, read_json, sha256_file, write_json

REBUILD_HINT = "rebuild it with: snakemake --cores 1 --forcerun tokenize_corpus (or python -m corpus.tokens --config ...)"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


CHUNK_BYTES = 1 << 20  # lines of a split handed to a worker at a time
_worker_tokenizer = None


def _start_worker(tokenizer_file: str) -> None:
    """Load the tokenizer once per worker. Each worker encodes on one core: the pool, not the
    tokenizer's own threads, is the parallelism, so a job uses the cores its rule declares."""
    global _worker_tokenizer
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = Tokenizer.from_file(tokenizer_file)


def encode_chunk(lines: list[bytes], eos: int, dtype: str) -> tuple[bytes, int]:
    """Token ids of a chunk of jsonl lines, EOS after each document, as raw bytes of ``dtype``."""
    texts = [json.loads(line)["text"] for line in lines]
    encodings = _worker_tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = [token for encoding in encodings for token in (*encoding.ids, eos)]
    return np.asarray(ids, dtype=dtype).tobytes(), len(texts)


def chunks(path: Path, chunk_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive runs of whole lines of about ``chunk_bytes`` bytes."""
    with open(path, "rb") as f:
        chunk, size = [], 0
        for line in f:
            chunk.append(line)
            size += len(line)
            if size >= chunk_bytes:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk


class Encoder:
    """Encodes chunks on ``workers`` processes, results in input order, a bounded number in flight.

    The output is the same bytes whatever the worker count: chunks are encoded independently and
    written in order. With one worker everything runs in this process.
    """

    def __init__(self, tokenizer_file: Path, eos: int, dtype: np.dtype, workers: int):
        self.eos, self.dtype, self.workers = eos, dtype.name, workers
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(str(tokenizer_file),))
        else:
            self.pool = None
            _start_worker(str(tokenizer_file))

    def encode(self, pieces: Iterator[list[bytes]]) -> Iterator[tuple[bytes, int, int]]:
        """(token bytes, documents, input bytes) per chunk, in order."""
        if self.pool is None:
            for lines in pieces:
                yield (*encode_chunk(lines, self.eos, self.dtype), sum(map(len, lines)))
            return
        pending: deque = deque()
        for lines in pieces:
            pending.append((self.pool.submit(encode_chunk, lines, self.eos, self.dtype), sum(map(len, lines))))
            if len(pending) >= 2 * self.workers:
                future, size = pending.popleft()
                yield (*future.result(), size)
        while pending:
            future, size = pending.popleft()
            yield (*future.result(), size)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def tokenize_split(encoder: Encoder, jsonl: Path, out: Path, progress=None) -> dict:
    """Encode every document of a split, append EOS after each, write the flat array."""
    digest, tokens, documents = hashlib.sha256(), 0, 0
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        for data, n_docs, size in encoder.encode(chunks(jsonl, CHUNK_BYTES)):
            f.write(data)
            digest.update(data)
            tokens += len(data) // np.dtype(encoder.dtype).itemsize
            documents += n_docs
            if progress is not None:
                progress.update(size)
    # The file's modification time as written: a job that finds it unchanged trusts the sha256
    # computed here instead of hashing the file again (TokenStore).
    return {"file": out.name, "tokens": tokens, "documents": documents, "sha256": digest.hexdigest(),
            "mtime_ns": out.stat().st_mtime_ns}


def tokenizer_facts(folder: Path) -> tuple[int, int]:
    """(vocabulary size with added tokens, EOS id) of a saved fast tokenizer, read without
    importing transformers (seconds of start-up per job)."""
    from tokenizers import Tokenizer

    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise DataError(f"{tokenizer_file} is missing: the tokenizer must be a fast (tokenizers) one; "
                        f"run `python -m corpus.tokenizer --config ...` first")
    settings = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    eos = settings.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    eos_id = tokenizer.token_to_id(eos) if isinstance(eos, str) else None
    if eos_id is None:
        raise DataError(f"the tokenizer in {folder} names no EOS token in its vocabulary (eos_token: {eos!r}); "
                        f"documents could not be separated")
    return tokenizer.get_vocab_size(with_added_tokens=True), eos_id


def build(config: dict, workers: int = 1) -> dict:
    data_dir = Path(config["data_dir"])
    tokenizer_file = data_dir / "tokenizer" / "tokenizer.json"
    vocab_size, eos_id = tokenizer_facts(data_dir / "tokenizer")
    dtype = token_dtype(vocab_size)
    out_dir = data_dir / "tokens"
    identity.check(data_dir / "corpus", config, "corpus")
    identity.check(data_dir / "tokenizer", config, "tokenizer")
    verify_splits(data_dir / "corpus", config["corpus"]["domains"], SPLITS)
    lineage = checked_tokenizer_lineage(data_dir)
    # The files are rewritten in place: what described the old ones goes first, so a build
    # cut short leaves token files that no reader takes for finished ones.
    for stale in (out_dir / "meta.json", *identity.markers(out_dir)):
        stale.unlink(missing_ok=True)
    jobs = [(d, s) for d in config["corpus"]["domains"] for s in SPLITS]
    sources = {job: data_dir / "corpus" / job[0] / f"{job[1]}.jsonl" for job in jobs}
    files: dict[str, dict] = {}
    encoder = Encoder(tokenizer_file, eos_id, dtype, workers)
    started = time.monotonic()
    total = sum(path.stat().st_size for path in sources.values())
    try:
        with tqdm(total=total, desc=f"tokenizing ({workers} worker(s))", unit="B", unit_scale=True, disable=None) as bar:
            for domain, split in jobs:
                out = out_dir / f"{domain}.{split}.bin"
                files.setdefault(domain, {})[split] = tokenize_split(encoder, sources[domain, split], out, bar)
    finally:
        encoder.close()
    meta = {"vocab_size": vocab_size, "dtype": dtype.name, "eos_id": eos_id, "domains": files, "lineage": lineage}
    identity.record(out_dir, config, "tokens")  # before meta.json: no finished-looking tokens without it
    write_json(out_dir / "meta.json", meta)
    for domain in files:
        print(f"{domain:>14}: " + ", ".join(f"{s} {files[domain][s]['tokens']:,}" for s in SPLITS), file=sys.stderr)
    seconds = time.monotonic() - started
    print(f"tokenized {total / 1e6:,.1f} MB in {seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.2f} MB/s, "
          f"{workers} worker(s))", file=sys.stderr)
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
    """Read-only memory maps of one split's token files, checked against meta.json: the size
    always; the sha256 and the largest id when the file's modification time is not the one
    the build recorded (``verify=False``: never); the lineage always."""

    def __init__(self, tokens_dir: str | Path, split: str, domains: list[str] | None = None, verify: bool = True):
        tokens_dir = Path(tokens_dir)
        meta_path = tokens_dir / "meta.json"
        if not meta_path.exists():
            raise DataError(f"no token metadata at {meta_path}; {REBUILD_HINT}")
        self.meta = read_json(meta_path)
        check_tokens_lineage(tokens_dir, self.meta)
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
        # Hashed once per build: the build computed the sha256 while writing and recorded the
        # file's modification time. A file with another one (rewritten, or copied without its
        # times) is hashed and scanned again before it is used.
        check = verify and not self._unchanged(path, entry)
        if check and sha256_file(path) != entry["sha256"]:
            raise DataError(f"token file {path} is corrupt: sha256 differs from meta.json; {REBUILD_HINT}")
        array = np.memmap(path, dtype=self.dtype, mode="r")
        if check and array.size and int(array.max()) >= self.vocab_size:
            raise DataError(f"token file {path} holds ids >= vocab size {self.vocab_size}; {REBUILD_HINT}")
        return array

    @staticmethod
    def _unchanged(path: Path, entry: dict) -> bool:
        """Whether ``path`` has the modification time its build recorded (older builds record none)."""
        return entry.get("mtime_ns") is not None and path.stat().st_mtime_ns == entry["mtime_ns"]

    def token_counts(self) -> np.ndarray:
        return np.array([a.size for a in self.arrays], dtype=np.int64)


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--workers", type=int, default=1, help="processes that encode (the rule passes its threads)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    build(cfg.load(*args.config), workers=args.workers)


if __name__ == "__main__":
    main()
