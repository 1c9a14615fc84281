"""Reader for dictd dictionaries (``NAME.index`` + ``NAME.dict.dz``), one entry at a time.

Format, as written by ``dictfmt``: each index line is ``headword TAB offset TAB length`` (optionally
more columns), where offset and length are byte positions in the *uncompressed* ``.dict`` data, written
as big-endian numbers in dictd's own base64 digits ``A-Z a-z 0-9 + /`` (A = 0 ... / = 63). The
``.dict.dz`` file is dictzip, a gzip file with a seek table in its header; plain gzip reads it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from mixbench.errors import DataError

DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGIT_VALUE = {digit: value for value, digit in enumerate(DICTD_DIGITS)}

# dictfmt stores the dictionary's own description under these headwords; they are not entries.
# Some dictionaries alias them (gcide's "00-gcide-long" points at the same bytes), which the
# span de-duplication in iter_entries also removes.
META_PREFIXES = ("00-database-", "00database")


def decode_number(digits: str) -> int:
    """Value of a dictd base64 number, e.g. "A" -> 0, "BA" -> 64."""
    if not digits:
        raise ValueError("empty dictd number")
    value = 0
    for digit in digits:
        if digit not in _DIGIT_VALUE:
            raise ValueError(f"{digit!r} is not a dictd base64 digit")
        value = value * 64 + _DIGIT_VALUE[digit]
    return value


def read_index(index_path: Path) -> list[tuple[str, int, int]]:
    """(headword, offset, length) for every line of the index, in file order."""
    rows = []
    with open(index_path, "rb") as index_file:
        for line_number, raw_line in enumerate(index_file, start=1):
            line = raw_line.rstrip(b"\r\n")
            if not line:
                continue
            columns = line.split(b"\t")
            try:
                headword = columns[0].decode("utf-8", errors="replace")
                offset = decode_number(columns[1].decode("ascii"))
                length = decode_number(columns[2].decode("ascii"))
            except (IndexError, UnicodeDecodeError, ValueError) as error:
                raise DataError(
                    f"{index_path}:{line_number}: not a dictd index line ({error}); "
                    "reinstall the package that owns it"
                ) from error
            rows.append((headword, offset, length))
    return rows


def is_meta_headword(headword: str) -> bool:
    return headword.startswith(META_PREFIXES)


def iter_entries(index_path: Path, dict_path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (entry_key, entry_bytes) in index order, skipping meta entries and repeated spans.

    The key is the headword, with "#2", "#3", ... added when a headword has several entries, so it is
    unique and stable. Several headwords may share one span (alternate spellings); the text is yielded
    only for the first of them, so the corpus holds no duplicated documents.
    """
    rows = read_index(index_path)
    with gzip.open(dict_path, "rb") as dict_file:
        data = dict_file.read()
    seen_spans = {(offset, length) for headword, offset, length in rows if is_meta_headword(headword)}
    entries_per_headword: dict[str, int] = {}
    for headword, offset, length in rows:
        if is_meta_headword(headword) or (offset, length) in seen_spans:
            continue
        seen_spans.add((offset, length))
        if offset + length > len(data):
            raise DataError(
                f"{index_path}: entry {headword!r} points past the end of {dict_path}; "
                "the dictionary is truncated, reinstall its package"
            )
        count = entries_per_headword.get(headword, 0) + 1
        entries_per_headword[headword] = count
        key = headword if count == 1 else f"{headword}#{count}"
        yield key, data[offset : offset + length]
