"""Tests of the Debian corpus sources. None needs the Debian packages: dpkg is replaced by a fake
(corpus.debian.run_tool) and the package files are written into tmp_path."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from corpus import debian, dictd
from corpus.formats import (
    clean_text, is_roff_redirect, split_bible_chapters, split_faq_chapters, split_fortunes, tex_members,
)
from mixbench.errors import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "corpus.jsonl"
ALL_PACKAGES = [package for source in debian.DOMAINS.values() for package in source.packages]


class FakeDpkg:
    """Stands in for run_tool: answers dpkg-query, dpkg -L and dpkg-deb from dictionaries."""

    def __init__(self, installed=None, files=None, fsys_tar=b"", deb_version="1.0-1"):
        self.installed = installed or {}  # package -> (version, status)
        self.files = files or {}  # package -> list of paths
        self.fsys_tar = fsys_tar
        self.deb_version = deb_version
        self.calls = []

    def __call__(self, argv, allow_failure=False):
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            lines = [f"{p}\t{self.installed[p][0]}\t{self.installed[p][1]}\n" for p in argv[3:] if p in self.installed]
            return "".join(lines).encode()
        if argv[:2] == ["dpkg", "-L"]:
            return ("/.\n" + "".join(f"{path}\n" for path in self.files.get(argv[2], []))).encode()
        if argv[:2] == ["dpkg-deb", "--fsys-tarfile"]:
            return self.fsys_tar
        if argv[:2] == ["dpkg-deb", "--field"]:
            return f"{self.deb_version}\n".encode()
        raise AssertionError(f"unexpected command {argv}")


def all_installed(**kwargs) -> FakeDpkg:
    return FakeDpkg(installed={p: ("1.0", "installed") for p in ALL_PACKAGES}, **kwargs)


# --- dictd ------------------------------------------------------------------------------------------

# Entries of the tiny dictionary, at the offsets written by hand (base64 digits A=0 ... Z=25, a=26 ...
# z=51, 0=52 ... 9=61, +=62, /=63) into TINY_INDEX below.
META = b"tiny test dictionary\n"  # offset 0 = "A", length 21 = "V"
APPLE_FRUIT = b"apple\n  a fruit\n"  # offset 21 = "V", length 16 = "Q"
APPLE_COMPANY = b"apple\n  a company\n"  # offset 37 = "l", length 18 = "S"
PEAR = b"pear\n  another fruit\n"  # offset 55 = "3", length 21 = "V"
ZEBRA = b"zebra\n  striped\n"  # offset 76 = 1*64 + 12 = "BM", length 16 = "Q"
TINY_INDEX = (
    "00-database-short\tA\tV\n"
    "00-gcide-short\tA\tV\n"  # an alias of the meta entry, as gcide has
    "apple\tV\tQ\n"
    "apple\tl\tS\n"
    "pear\t3\tV\n"
    "pears\t3\tV\n"  # an alternate headword sharing pear's text
    "zebra\tBM\tQ\n"
)


def write_tiny_dictionary(folder: Path, index: str = TINY_INDEX) -> tuple[Path, Path]:
    data = META + APPLE_FRUIT + APPLE_COMPANY + PEAR + ZEBRA
    assert [len(META), len(APPLE_FRUIT), len(APPLE_COMPANY), len(PEAR)] == [21, 16, 18, 21]  # the hand sums
    index_path, dict_path = folder / "tiny.index", folder / "tiny.dict.dz"
    index_path.write_text(index, encoding="utf-8")
    dict_path.write_bytes(gzip.compress(data))
    return index_path, dict_path


@pytest.mark.parametrize("digits,value", [("A", 0), ("B", 1), ("Z", 25), ("a", 26), ("0", 52), ("+", 62),
                                          ("/", 63), ("BA", 64), ("BM", 76), ("Kj", 675), ("BAA", 4096)])
def test_decode_number(digits, value):
    assert dictd.decode_number(digits) == value


def test_decode_number_rejects_other_characters():
    with pytest.raises(ValueError):
        dictd.decode_number("A=")


def test_dictd_entries_skip_meta_and_shared_spans_and_number_repeats(tmp_path):
    entries = list(dictd.iter_entries(*write_tiny_dictionary(tmp_path)))
    assert entries == [("apple", APPLE_FRUIT), ("apple#2", APPLE_COMPANY), ("pear", PEAR), ("zebra", ZEBRA)]


def test_dictd_entry_past_end_of_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="truncated"):
        list(dictd.iter_entries(*write_tiny_dictionary(tmp_path, "zebra\tBM\tZ\n")))


def test_dictd_malformed_index_line_names_the_line(tmp_path):
    with pytest.raises(DataError, match=r"tiny.index:2"):
        dictd.read_index(write_tiny_dictionary(tmp_path, "pear\t3\tV\nbroken line\n")[0])


def test_encyclopedic_domain_reads_the_dictionaries_dpkg_lists(tmp_path, monkeypatch):
    index_path, dict_path = write_tiny_dictionary(tmp_path)
    fake = all_installed(files={"dict-gcide": [str(tmp_path), str(index_path), str(dict_path)]})
    monkeypatch.setattr(debian, "run_tool", fake)
    documents = list(debian.iter_documents("encyclopedic", tmp_path))
    assert [doc_id for doc_id, _ in documents] == ["dict-gcide:apple", "dict-gcide:apple#2", "dict-gcide:pear",
                                                   "dict-gcide:zebra"]
    assert documents[1][1] == APPLE_COMPANY.decode()


# --- splitting and clean-up ---------------------------------------------------------------------------


def test_split_fortunes_on_percent_lines():
    text = "First one.\n%\nSecond\n  -- someone\n%\n\n  \n%\n100% sure\n%\n"
    assert split_fortunes(text) == ["First one.\n", "Second\n  -- someone\n", "100% sure\n"]


def test_split_fortunes_without_trailing_percent():
    assert split_fortunes("a\n%\r\nb") == ["a\n", "b"]


def test_split_bible_chapters_drops_references_and_joins_wrapped_verses():
    text = "Ge1:1 In the beginning.\nGe1:2 And the earth\nwas void.\nGe2:1 Thus.\n1Sm1:1 Now.\n"
    assert list(split_bible_chapters(text)) == [
        ("Ge1", "1 In the beginning.\n2 And the earth was void.\n"),
        ("Ge2", "1 Thus.\n"),
        ("1Sm1", "1 Now.\n"),
    ]


def test_split_faq_chapters_with_no_break_spaces():
    chapters = ["Chapter\u00a01.\u00a0Overview\nbody one\n", "Chapter\u00a02.\u00a0More\nbody two\n"]
    assert split_faq_chapters("Title\n1. Overview\n\n" + "".join(chapters)) == chapters


def test_roff_redirect_is_recognised():
    assert is_roff_redirect('.\\" alias page\n.so man3/printf.3\n')
    assert not is_roff_redirect(".TH PRINTF 3\n.so man3/common.3\ntext\n")


def test_clean_text():
    assert clean_text(b"a\x00b\xff") == "ab\ufffd"
    assert clean_text(b" \n\x00\t") is None


def test_code_domain_reads_sorted_regular_go_files_outside_testdata(tmp_path, monkeypatch):
    (tmp_path / "testdata").mkdir()
    (tmp_path / "b.go").write_bytes(b"package b\x00\n")
    (tmp_path / "a.go").write_text("package a\n")
    (tmp_path / "blank.go").write_text("  \n")
    (tmp_path / "testdata" / "c.go").write_text("package c\n")
    (tmp_path / "notes.txt").write_text("not code\n")
    (tmp_path / "link.go").symlink_to(tmp_path / "a.go")
    listed = [str(path) for path in tmp_path.rglob("*")]
    monkeypatch.setattr(debian, "run_tool", all_installed(files={"golang-1.19-src": listed}))
    documents = list(debian.iter_documents("code", tmp_path))
    assert documents == [(f"golang-1.19-src:{tmp_path}/a.go", "package a\n"),
                         (f"golang-1.19-src:{tmp_path}/b.go", "package b\n")]


def make_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_latex_domain_reads_tex_members_of_the_downloaded_deb(tmp_path, monkeypatch):
    tar = make_tar({
        "./usr/share/doc/x/z.tex": b"\\documentclass{article}\n",
        "./usr/share/doc/x/a.tex.gz": gzip.compress(b"\\section{A}\n"),
        "./usr/share/doc/x/readme.txt": b"skip me\n",
    })
    assert [path for path, _ in tex_members(io.BytesIO(tar))] == ["/usr/share/doc/x/a.tex.gz", "/usr/share/doc/x/z.tex"]
    (tmp_path / "texlive-latex-recommended-doc_2022-3_all.deb").write_bytes(b"")
    fake = FakeDpkg(fsys_tar=tar, deb_version="2022-3")
    monkeypatch.setattr(debian, "run_tool", fake)
    documents = list(debian.iter_documents("latex", tmp_path))
    assert documents == [("texlive-latex-recommended-doc:/usr/share/doc/x/a.tex.gz", "\\section{A}\n"),
                         ("texlive-latex-recommended-doc:/usr/share/doc/x/z.tex", "\\documentclass{article}\n")]
    assert debian.package_versions("latex", tmp_path) == {"texlive-latex-recommended-doc": "2022-3"}


# --- availability -------------------------------------------------------------------------------------


def test_check_available_names_every_missing_package_and_the_fix(tmp_path, monkeypatch):
    fake = FakeDpkg(installed={"bible-kjv": ("4.38", "installed"), "dict-foldoc": ("1", "installed"),
                               "dict-jargon": ("1", "config-files")})
    monkeypatch.setattr(debian, "run_tool", fake)
    deb_dir = tmp_path / "debs"
    with pytest.raises(DataError) as raised:
        debian.check_available(["code", "books", "encyclopedic", "latex"], deb_dir)
    message = str(raised.value)
    assert "sudo apt-get install --no-install-recommends golang-1.19-src dict-gcide dict-jargon" in message
    assert f"mkdir -p {deb_dir} && (cd {deb_dir} && apt-get download texlive-latex-recommended-doc)" in message
    assert "bash scripts/install-debian-packages.sh" in message
    assert "bible-kjv" not in message and "dict-foldoc" not in message
    assert all(call[0] == "dpkg-query" for call in fake.calls)  # nothing read before the check


def test_check_available_passes_when_everything_is_there(tmp_path, monkeypatch):
    (tmp_path / "texlive-latex-recommended-doc_1_all.deb").write_bytes(b"")
    monkeypatch.setattr(debian, "run_tool", all_installed())
    debian.check_available(list(debian.DOMAINS), tmp_path)


def test_unknown_domain_lists_the_valid_ones(monkeypatch):
    monkeypatch.setattr(debian, "run_tool", all_installed())
    with pytest.raises(DataError, match="valid domains: code, books, encyclopedic, latex, docs, man, qa"):
        debian.check_available(["code", "poetry"], "unused")


def test_two_versions_of_a_deb_are_refused(tmp_path):
    for version in ("1", "2"):
        (tmp_path / f"texlive-latex-recommended-doc_{version}_all.deb").write_bytes(b"")
    with pytest.raises(DataError, match="several versions"):
        debian.find_deb(tmp_path, "texlive-latex-recommended-doc")


def test_missing_dpkg_is_explained(monkeypatch):
    def no_such_program(*args, **kwargs):
        raise FileNotFoundError("dpkg-query")

    monkeypatch.setattr(subprocess, "run", no_such_program)
    with pytest.raises(DataError, match="Debian or Ubuntu"):
        debian.check_available(["code"], "unused")


# --- command line and import --------------------------------------------------------------------------


def test_print_packages_and_debs(capsys):
    debian.main(["--print-packages"])
    assert capsys.readouterr().out.split() == list(dict.fromkeys(ALL_PACKAGES))
    debian.main(["--print-debs"])
    assert capsys.readouterr().out.split() == ["texlive-latex-recommended-doc"]


def test_import_is_light():
    code = "import sys, corpus.debian; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# --- committed fixture --------------------------------------------------------------------------------


def test_fixture_corpus_shape():
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    counts = {}
    for row in rows:
        assert set(row) == {"domain", "text"}
        assert row["text"].strip() and len(row["text"]) <= 1200 and "\x00" not in row["text"]
        counts[row["domain"]] = counts.get(row["domain"], 0) + 1
    assert counts == {domain: 60 for domain in ["code", "books", "encyclopedic", "docs", "man", "qa"]}
    assert FIXTURE.stat().st_size <= 350_000
