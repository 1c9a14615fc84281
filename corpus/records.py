"""Records of local jsonl/parquet files and hub streams, read in chunks and checked one by one.

Every reader yields ``Record``s in the order the source holds them, or a ``BadRecord`` for a record
that cannot be a document (invalid UTF-8 or JSON, not an object, a missing or non-string field):
the builder decides whether that is an error or a skip (``corpus.bad_records``). A record's
``where`` names its file and line (jsonl) or row (parquet, hub), so an error can say exactly what
to fix. Nothing here holds more than one chunk of a file in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from mixbench.errors import DataError

PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class Record:
    origin: str  # the file (or dataset) it came from: the key of the manifest's per-file counts
    where: str  # "file:line" or "file: row N", for messages
    domain: str
    text: str


@dataclass(frozen=True)
class BadRecord:
    origin: str
    where: str
    kind: str  # invalid_utf8 | invalid_json | not_an_object | missing_field | text_not_string | domain_not_string
    problem: str


Read = Union[Record, BadRecord]


@dataclass(frozen=True)
class Finished:
    """A point in the source that a read can resume after: every record before it was yielded.
    ``position`` is JSON (what ``corpus.sources.records`` takes to start there); ``what`` names the
    input finished, for messages."""
    position: dict
    what: str


class FieldProblem(Exception):
    def __init__(self, kind: str, problem: str):
        super().__init__(problem)
        self.kind, self.problem = kind, problem


def field(record: dict, dotted: str):
    """``meta.redpajama_set_name`` -> record['meta']['redpajama_set_name']."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            present = sorted(record) if isinstance(record, dict) else []
            raise FieldProblem("missing_field", f"no field {dotted!r} (its fields: {present})")
        value = value[part]
    return value


def document_of(record, text_field: str, domain_field: str) -> tuple[str, str]:
    """(domain, text) of one decoded record; a FieldProblem says why it is not a document.

    A text that is null or a number is refused rather than turned into the string "None" or
    "12345": such a record is a broken row, not a document.
    """
    if not isinstance(record, dict):
        raise FieldProblem("not_an_object", f"a JSON {type(record).__name__}, not an object")
    domain = field(record, domain_field)
    text = field(record, text_field)
    if not isinstance(domain, str):
        raise FieldProblem("domain_not_string", f"field {domain_field!r} is {_describe(domain)}, not a string")
    if not isinstance(text, str):
        raise FieldProblem("text_not_string", f"field {text_field!r} is {_describe(text)}, not a string")
    for name, value in ((domain_field, domain), (text_field, text)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON can spell a lone surrogate ("\ud800"); UTF-8 cannot
            raise FieldProblem("invalid_utf8", f"field {name!r} holds a lone surrogate "
                               f"({value[exc.start:exc.start + 1]!r} at character {exc.start}), not valid Unicode")
    return domain, text


def _describe(value) -> str:
    if value is None:
        return "null"
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40] + '…' if len(shown) > 40 else shown}"


def open_binary(path: str) -> BinaryIO:
    """A file's decompressed bytes as a stream: plain, .gz or .zst."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(path))
    return open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """A .zst file's frames, decompressed in turn. zstandard's stream reader ends quietly where a
    cut file ends; this one raises ZstdError when the file ends inside a frame."""

    def __init__(self, path: str, chunk: int = 1 << 20):
        import zstandard

        self._zstd, self._file, self._chunk = zstandard, open(path, "rb"), chunk
        self._frame, self._pending, self._started = None, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            compressed = self._file.read(self._chunk)
            if not compressed:
                if self._frame is not None and not self._frame.eof and self._started:
                    raise self._zstd.ZstdError("the file ends inside a frame (truncated)")
                return 0
            self._feed(compressed)
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size

    def _feed(self, compressed: bytes) -> None:
        while compressed:
            if self._frame is None or self._frame.eof:
                self._frame, self._started = self._zstd.ZstdDecompressor().decompressobj(), True
            self._pending += self._frame.decompress(compressed)
            compressed = self._frame.unused_data if self._frame.eof else b""

    def close(self) -> None:
        self._file.close()
        super().close()


def is_parquet(path: str) -> bool:
    return path.endswith(".parquet")


def decompress_errors(path: str) -> tuple[type[BaseException], ...]:
    """What reading a truncated or corrupt compressed ``path`` raises (the end comes too early,
    a header or block is not its format's)."""
    if path.endswith(".gz"):
        return EOFError, gzip.BadGzipFile, zlib.error
    if path.endswith(".zst"):
        import zstandard

        return (zstandard.ZstdError,)
    return ()


def read_jsonl(path: str, text_field: str, domain_field: str) -> Iterator[Read]:
    """One record per non-blank line, decoded as strict UTF-8 (a stray byte is reported, not replaced)."""
    try:
        yield from _jsonl_records(path, text_field, domain_field)
    except decompress_errors(path) as exc:
        raise DataError(f"{path}: truncated or corrupt {Path(path).suffix} file ({exc}); copy or download it "
                        f"again, or leave it out of corpus.path") from None


def _jsonl_records(path: str, text_field: str, domain_field: str) -> Iterator[Read]:
    with open_binary(path) as f:
        for number, line in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(path, where, "invalid_utf8", f"invalid UTF-8 (byte {exc.start} of the line: "
                                f"{line[exc.start:exc.start + 4]!r})")
                continue
            if not decoded.strip():
                continue
            try:
                record = json.loads(decoded.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield BadRecord(path, where, "invalid_json", f"invalid JSON ({exc.msg}, column {exc.colno})")
                continue
            yield _checked(record, path, where, text_field, domain_field)


def read_parquet(path: str, text_field: str, domain_field: str) -> Iterator[Read]:
    """Rows in batches of ``PARQUET_BATCH_ROWS``, reading only the two columns needed."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        columns = list(dict.fromkeys(name.split(".")[0] for name in (text_field, domain_field)))
        missing = [c for c in columns if c not in table.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (its columns: {table.schema_arrow.names}); "
                            f"set corpus.text_field / corpus.domain_field")
        row = 0
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                row += 1
                yield _checked(record, path, f"{path}: row {row}", text_field, domain_field)
    except (pyarrow.ArrowException, OSError) as exc:  # not parquet, truncated, or a corrupt page
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())}); copy or download "
                        f"it again, or leave it out of corpus.path") from None


def read_local(path: str, text_field: str, domain_field: str) -> Iterator[Read]:
    reader = read_parquet if is_parquet(path) else read_jsonl
    return reader(path, text_field, domain_field)


def read_stream(records, name: str, text_field: str, domain_field: str, first: int = 1) -> Iterator[Read]:
    """Records of a hub stream (``datasets`` IterableDataset), numbered from ``first``."""
    for number, record in enumerate(records, first):
        yield _checked(record, name, f"{name}: record {number}", text_field, domain_field)


def _checked(record, origin: str, where: str, text_field: str, domain_field: str) -> Read:
    try:
        domain, text = document_of(record, text_field, domain_field)
    except FieldProblem as problem:
        return BadRecord(origin, where, problem.kind, problem.problem)
    return Record(origin, where, domain, text)
