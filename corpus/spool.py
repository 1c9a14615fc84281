"""One domain's documents on their way to the split files, held on disk, not in memory.

A document's text goes to the domain's spool file as it arrives; memory holds three numbers per
kept document (its 64-bit content key, offset and length). At the end the documents are ordered by
key, exact duplicates dropped, the byte cap applied and the train/val/test split made, all from the
keys alone, and the split files are written by reading the spool back.

Which documents a capped domain keeps (``selection``):

- ``stream``: the first ones read, up to the cap; the domain is then full and the rest of the
  source is not needed for it. For shuffled sources (SlimPajama, The Pile), a random sample.
  Duplicates are dropped when the cap is reached, so they take no place (unless they free under
  1% of the cap, when the domain fills up).
- ``hash``: the ones with the lowest keys, up to the cap, whatever the read order: the source is
  read whole, documents above the current cut-off key are refused on arrival, and the spool is
  compacted whenever it holds twice the cap, so disk stays within ~2× the cap. A duplicate of a
  document already refused is not recognised, so it counts in ``available_bytes``.

Either way the cap is hard: the document that crosses it is cut at a line (or else word, or else
character) boundary so that the domain holds at most ``cap`` bytes.

A spool can be saved and restored (``state`` / ``restore``: corpus/progress.py) for a build that
resumes. The spool file only grows between rewrites, and a rewrite writes a new generation of
the file (``{path}.{generation}``), so the file a saved state names is whole until the next save
``pin``s a newer one; restoring truncates it to the saved length.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from pathlib import Path

import numpy as np

from mixbench.errors import DataError

SPLITS = ("train", "val", "test")


def content_key(domain: str, data: bytes) -> int:
    """A document's identity: the first 8 bytes of sha256(domain, NUL, UTF-8 text). File names,
    formats and positions play no part, so the same data gives the same splits however it is stored."""
    return int.from_bytes(hashlib.sha256(domain.encode("utf-8") + b"\0" + data).digest()[:8], "big")


def document_id(key: int) -> str:
    return f"{key:016x}"


def cut_to_bytes(data: bytes, budget: int) -> bytes:
    """The longest prefix of ``data`` of at most ``budget`` bytes ending at a line end, else at
    whitespace, else at a character boundary (never inside a UTF-8 sequence)."""
    if len(data) <= budget:
        return data
    head = data[:budget]
    for boundary in (b"\n", b" ", b"\t"):
        end = head.rfind(boundary)
        if end > 0:
            return head[: end + 1].rstrip(b" \t") if boundary == b"\n" else head[:end]
    return head.decode("utf-8", errors="ignore").encode("utf-8")


def split_sizes(n: int, val_fraction: float, test_fraction: float, min_docs: int) -> tuple[int, int]:
    """(n_test, n_val): each a fraction of the documents but at least ``min_docs``."""
    n_test = max(min_docs, round(test_fraction * n))
    n_val = max(min_docs, round(val_fraction * n))
    if n - n_test - n_val < min_docs:
        raise DataError(
            f"only {n} documents: too few for {n_test} test, {n_val} val and at least {min_docs} train documents"
        )
    return n_test, n_val


def selection_of(corpus: dict) -> str:
    """Debian domains are package files in package order, so a cap takes a hash sample; the
    other sources take the first documents read unless ``corpus.selection`` says otherwise."""
    return corpus["selection"] or ("hash" if corpus["source"] == "debian" else "stream")


class DomainSpool:
    # The scalars of a spool's state; its keys, offsets and lengths are saved as arrays.
    STATE = ("generation", "spool_bytes", "kept_bytes", "cutoff", "full", "read_bytes", "documents_read",
             "cut_documents", "duplicates_dropped", "duplicate_bytes", "dedupe_at_cap")

    def __init__(self, *, domain: str, path: Path, cap: int, selection: str):
        if selection not in ("stream", "hash"):
            raise ValueError(f"selection must be 'stream' or 'hash', not {selection!r}")
        self.domain, self.path, self.cap, self.selection = domain, Path(path), cap, selection
        self.generation = 0  # which file holds the documents: a rewrite writes the next one
        self.pinned: int | None = None  # the generation a saved state names: kept until the next save
        self.file = open(self.file_path(0), "w+b")
        self.keys, self.offsets, self.lengths = array("Q"), array("Q"), array("Q")
        self.spool_bytes = 0  # bytes in the spool file, compacted-away ones included
        self.kept_bytes = 0  # bytes of the documents still kept (before duplicates are dropped)
        self.cutoff: int | None = None  # hash selection: keys above it can no longer make the cut
        self.full = False  # stream selection: the cap is reached, nothing more is taken
        self.read_bytes = 0  # non-empty documents of this domain read, in bytes
        self.documents_read = 0
        self.cut_documents = 0
        self.duplicates_dropped = 0  # by rewrites before the end; the rest are counted there
        self.duplicate_bytes = 0
        self.dedupe_at_cap = True  # stream selection: drop duplicates before calling the domain full

    def file_path(self, generation: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{generation}")

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(scalars, arrays) of this spool now, its file flushed to disk: what ``restore`` takes."""
        self.file.flush()
        os.fsync(self.file.fileno())
        arrays = {name: np.frombuffer(getattr(self, name), dtype=np.uint64).copy()
                  for name in ("keys", "offsets", "lengths")}
        return {name: getattr(self, name) for name in self.STATE}, arrays

    def pin(self) -> None:
        """The state just saved names the current generation: an older one is no longer needed."""
        if self.pinned is not None and self.pinned != self.generation:
            self.file_path(self.pinned).unlink(missing_ok=True)
        self.pinned = self.generation

    @classmethod
    def restore(cls, *, domain: str, path: Path, cap: int, selection: str, scalars: dict,
                arrays: dict[str, np.ndarray]) -> "DomainSpool":
        """The spool as ``state`` saved it; documents appended after that are cut off its file."""
        spool = cls.__new__(cls)
        spool.domain, spool.path, spool.cap, spool.selection = domain, Path(path), cap, selection
        for name in cls.STATE:
            setattr(spool, name, scalars[name])
        spool.pinned = spool.generation
        for name in ("keys", "offsets", "lengths"):
            setattr(spool, name, array("Q", np.asarray(arrays[name], dtype=np.uint64).tobytes()))
        spool.file = open(spool.file_path(spool.generation), "r+b")
        spool.file.truncate(spool.spool_bytes)
        for stale in path.parent.glob(f"{path.name}.*"):  # generations written after the save
            if stale.name != spool.file_path(spool.generation).name:
                stale.unlink()
        return spool

    def offer(self, data: bytes) -> None:
        """Take one non-empty document of this domain (its UTF-8 text), or refuse it (full, or above the cut-off)."""
        self.read_bytes += len(data)
        self.documents_read += 1
        if self.full:
            return
        key = content_key(self.domain, data)
        if self.cutoff is not None and key > self.cutoff:
            return
        if self.selection == "stream" and self.kept_bytes + len(data) >= self.cap and self.dedupe_at_cap:
            # Duplicates must not take a place: drop them before calling the domain full. When that
            # frees little, the next arrivals at the cap fill it (at most ~1% left to late duplicates).
            freed = self._rewrite(self._unique_order())
            self.dedupe_at_cap = freed >= self.cap // 100
        if self.selection == "stream" and self.kept_bytes + len(data) >= self.cap:
            # The document that reaches the cap is the last one this domain takes.
            self.full = True
            if len(data) > self.cap - self.kept_bytes:
                data = cut_to_bytes(data, self.cap - self.kept_bytes)
                self.cut_documents += 1
                if not data.strip():
                    return
        self._append(key, data)
        if self.selection == "hash" and self.spool_bytes > 2 * self.cap:
            self._prune()

    @property
    def at_cap(self) -> bool:
        """The cap binds: full (stream selection), or documents already refused by key (hash)."""
        return self.full or self.cutoff is not None

    def _append(self, key: int, data: bytes) -> None:
        self.file.seek(self.spool_bytes)
        self.file.write(data)
        self.keys.append(key)
        self.offsets.append(self.spool_bytes)
        self.lengths.append(len(data))
        self.spool_bytes += len(data)
        self.kept_bytes += len(data)

    def _unique_order(self) -> np.ndarray:
        """Indices of the kept documents in key order, each text once (its first arrival)."""
        keys = np.frombuffer(self.keys, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        first = np.ones(order.size, dtype=bool)
        first[1:] = keys[order][1:] != keys[order][:-1]
        return order[first]

    def _capped_order(self) -> np.ndarray:
        """The unique documents in key order up to and including the one that crosses the cap."""
        order = self._unique_order()
        total = np.cumsum(np.frombuffer(self.lengths, dtype=np.uint64)[order])
        crossing = int(np.searchsorted(total, self.cap, side="left"))
        return order[: crossing + 1]

    def _prune(self) -> None:
        """Hash selection: keep the lowest keys up to the cap; once the cap binds, keys above the
        last kept one can never make the cut and are refused on arrival."""
        order = self._capped_order()
        if int(np.frombuffer(self.lengths, dtype=np.uint64)[order].sum()) >= self.cap:
            self.cutoff = int(self.keys[int(order[-1])])
        self._rewrite(order)

    def _rewrite(self, keep: np.ndarray) -> int:
        """Keep only the documents ``keep`` (in arrival order) and rewrite the spool; return the
        bytes freed. The duplicates among those dropped are counted."""
        count, size = self._duplicates()
        self.duplicates_dropped += count
        self.duplicate_bytes += size
        before = self.kept_bytes
        fresh = self.file_path(self.generation + 1)
        keys, offsets, sizes = array("Q"), array("Q"), array("Q")
        with open(fresh, "wb") as out:
            for index in map(int, np.sort(keep)):
                self.file.seek(self.offsets[index])
                out.write(self.file.read(self.lengths[index]))
                keys.append(self.keys[index]), offsets.append(out.tell() - self.lengths[index])
                sizes.append(self.lengths[index])
            written = out.tell()
        self.file.close()
        if self.generation != self.pinned:  # a saved state does not name it
            self.file_path(self.generation).unlink()
        self.generation += 1
        self.file = open(fresh, "r+b")
        self.keys, self.offsets, self.lengths = keys, offsets, sizes
        self.spool_bytes = self.kept_bytes = written
        return before - written

    def _final_order(self) -> tuple[np.ndarray, dict[int, bytes], bool]:
        """(documents in key order within the cap, {index: its cut text} for the one cut, whether the
        cap was reached). Under stream selection the spool is already within the cap."""
        order = self._capped_order()
        lengths = np.frombuffer(self.lengths, dtype=np.uint64)
        total = int(lengths[order].sum())
        if total <= self.cap:
            return order, {}, self.full or total == self.cap
        last = int(order[-1])
        self.file.seek(self.offsets[last])
        data = cut_to_bytes(self.file.read(self.lengths[last]), self.cap - (total - self.lengths[last]))
        self.cut_documents += 1
        if not data.strip():
            return order[:-1], {}, True
        return order, {last: data}, True

    def write_splits(self, out_dir: Path, *, val_fraction: float, test_fraction: float, min_docs: int) -> dict:
        """Write ``{split}.jsonl`` in key order; return the domain's manifest entry."""
        if not self.keys:
            raise DataError(f"domain {self.domain!r}: no non-empty document")
        order, cut, reached = self._final_order()
        try:
            n_test, n_val = split_sizes(order.size, val_fraction, test_fraction, min_docs)
        except DataError as exc:
            raise DataError(f"domain {self.domain!r}: {exc}") from None
        bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, order.size)}
        out_dir.mkdir(parents=True, exist_ok=True)
        stats = {}
        for split in SPLITS:
            start, stop = bounds[split]
            stats[split] = {"documents": stop - start, "bytes": 0}
            digest = hashlib.sha256()
            with open(out_dir / f"{split}.jsonl", "wb") as f:
                for index in order[start:stop].tolist():
                    data = cut.get(index)
                    if data is None:
                        self.file.seek(self.offsets[index])
                        data = self.file.read(self.lengths[index])
                    line = json.dumps({"id": document_id(self.keys[index]), "text": data.decode("utf-8")},
                                      ensure_ascii=False).encode("utf-8") + b"\n"
                    f.write(line)
                    digest.update(line)
                    stats[split]["bytes"] += len(data)
            stats[split]["sha256"] = digest.hexdigest()
        count, size = self._duplicates()
        entry = {
            "available_bytes": self.read_bytes - self.duplicate_bytes - size,
            "documents_read": self.documents_read,
            "duplicates_dropped": self.duplicates_dropped + count,
            "cut_documents": self.cut_documents,
            "cap_bytes": self.cap,
            "cap_reached": reached,
            "splits": stats,
        }
        self.file.close()  # its files stay until ``remove``: a build that stops here resumes from them
        return entry

    def remove(self) -> None:
        """Delete this spool's files (the split files are written)."""
        self.file.close()
        for generation in {self.generation, self.pinned} - {None}:
            self.file_path(generation).unlink(missing_ok=True)

    def _duplicates(self) -> tuple[int, int]:
        """(documents, bytes) of the kept documents that repeat an earlier one's text."""
        unique = self._unique_order()
        lengths = np.frombuffer(self.lengths, dtype=np.uint64)
        return len(self.keys) - unique.size, int(lengths.sum() - lengths[unique].sum())
