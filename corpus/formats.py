"""Formats of package files: compressed files, tar streams, files holding many documents, and the
clean-up applied to every document."""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mixbench.errors import DataError

# `bible -f` prints one verse per line: "<book><chapter>:<verse> <text>", book names like Ge, 1Sm, SSol.
_VERSE_LINE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")
# The plain-text Debian FAQ starts each chapter with "Chapter N. Title" at the start of a line; the
# spaces there are no-break spaces (U+00A0), which \s matches in str patterns.
_FAQ_CHAPTER = re.compile(r"^Chapter\s\d+\.\s", re.MULTILINE)


def clean_text(raw: bytes | str) -> str | None:
    """Decoded text without NUL bytes, or None when nothing but whitespace is left.

    Package files are mostly UTF-8 with the odd Latin-1 byte; replacing those keeps every document
    rather than failing the whole build on one stray byte.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.replace("\x00", "")
    return text if text.strip() else None


def split_fortunes(text: str) -> list[str]:
    """Fortunes of a strfile data file: the text between lines that hold only "%"; blank ones dropped."""
    fortunes, current = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\r\n") == "%":
            fortunes.append("".join(current))
            current = []
        else:
            current.append(line)
    fortunes.append("".join(current))
    return [fortune for fortune in fortunes if fortune.strip()]


def split_bible_chapters(text: str) -> Iterator[tuple[str, str]]:
    """(chapter reference like "Ge1", chapter text) in the order printed.

    The "Ge1:" prefix is dropped from each verse and only the verse number kept, so the text reads as
    a chapter rather than as a list of references.
    """
    reference, verses = None, []
    for line in text.splitlines():
        match = _VERSE_LINE.match(line)
        if match is None:
            if verses and line.strip():  # a verse wrapped onto a second line
                verses[-1] += " " + line.strip()
            continue
        line_reference = match["book"] + match["chapter"]
        if line_reference != reference:
            if verses:
                yield reference, "\n".join(verses) + "\n"
            reference, verses = line_reference, []
        verses.append(f"{match['verse']} {match['text']}")
    if verses:
        yield reference, "\n".join(verses) + "\n"


def split_faq_chapters(text: str) -> list[str]:
    """The chapters of the plain-text Debian FAQ; the title page and table of contents are dropped."""
    starts = [match.start() for match in _FAQ_CHAPTER.finditer(text)]
    ends = starts[1:] + [len(text)]
    return [text[start:end] for start, end in zip(starts, ends)]


def is_roff_redirect(text: str) -> bool:
    """True for a man page that only says ".so other/page.3": an alias holding no text of its own."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(('.\\"', "'\\\""))]
    return bool(lines) and all(line.startswith(".so ") for line in lines)


def read_bytes(path: Path) -> bytes:
    """Contents of a package file, gunzipped when its name ends in .gz (man pages, some docs)."""
    return gunzip(path.read_bytes(), path) if path.suffix == ".gz" else path.read_bytes()


def gunzip(data: bytes, name: str | Path) -> bytes:
    """``data`` decompressed; a truncated or corrupt gzip stream is a DataError naming ``name``."""
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{name}: truncated or corrupt .gz file ({exc}); reinstall its package "
                        f"(apt-get install --reinstall) or download it again") from None


def tex_members(tar_file: BinaryIO, archive_name: str | Path = "the tar stream") -> list[tuple[str, bytes]]:
    """(member path, uncompressed bytes) of the .tex and .tex.gz files in a tar stream, sorted by path;
    ``archive_name`` (the .deb it came from) names it in the error for a corrupt member.

    The stream is read once, in archive order; sorting afterwards keeps the document order independent
    of how the .deb was packed (the .tex files are ~1 MB compressed, so holding them is cheap).
    """
    members = []
    with tarfile.open(fileobj=tar_file, mode="r|*") as archive:
        for member in archive:
            name = member.name.removeprefix(".")
            if member.isfile() and name.endswith((".tex", ".tex.gz")):
                data = archive.extractfile(member).read()
                members.append((name, gunzip(data, f"{archive_name}: {name}") if name.endswith(".gz") else data))
    return sorted(members)
