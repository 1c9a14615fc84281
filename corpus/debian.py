"""Sources of the embedded default corpus: seven domains read from named Debian packages.

Only the files that ``dpkg -L`` lists for the named packages, and the members of the named ``.deb``
files downloaded into ``deb_dir``, are read, so the corpus does not depend on whatever else happens to
be installed. Every dpkg/apt/bible call goes through ``run_tool``, the one function tests replace.

    python -m corpus.debian --print-packages   # packages to apt-get install (space separated)
    python -m corpus.debian --print-debs       # packages to apt-get download into deb_dir
    python -m corpus.debian --stats [--deb-dir DIR] [DOMAIN ...]   # documents, bytes, seconds
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from corpus import dictd
from corpus.formats import (
    clean_text, is_roff_redirect, read_bytes, split_bible_chapters, split_faq_chapters, split_fortunes, tex_members,
)
from mixbench.cli import main_guard
from mixbench.debian_domains import DOMAINS, DomainSource
from mixbench.errors import DataError

DEFAULT_DEB_DIR = "data/debs"
INSTALL_SCRIPT = "scripts/install-debian-packages.sh"


def run_tool(argv: list[str], allow_failure: bool = False) -> bytes:
    """Stdout of a dpkg/apt/bible command; a non-zero exit raises DataError unless allow_failure."""
    try:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError as error:
        raise DataError(
            f"{argv[0]} not found: the embedded corpus is read from Debian packages and needs a Debian or "
            "Ubuntu system with dpkg; elsewhere use a real corpus or tests/fixtures/corpus.jsonl"
        ) from error
    if result.returncode != 0 and not allow_failure:
        message = result.stderr.decode("utf-8", errors="replace").strip()
        raise DataError(f"`{shlex.join(argv)}` failed with exit status {result.returncode}: {message}")
    return result.stdout


def _sources(domains: Iterable[str]) -> list[DomainSource]:
    unknown = [name for name in domains if name not in DOMAINS]
    if unknown:
        raise DataError(
            f"unknown Debian corpus domain(s): {', '.join(unknown)}; valid domains: {', '.join(DOMAINS)}"
        )
    return [DOMAINS[name] for name in domains]


def installed_versions(packages: Iterable[str]) -> dict[str, str]:
    """{package: version} of those of ``packages`` that dpkg reports as installed."""
    packages = list(packages)
    if not packages:
        return {}
    # dpkg-query exits 1 when some package is unknown but still prints the others.
    listing = run_tool(
        ["dpkg-query", "-W", "-f=${Package}\\t${Version}\\t${db:Status-Status}\\n", *packages],
        allow_failure=True,
    ).decode("utf-8", errors="replace")
    versions = {}
    for line in listing.splitlines():
        fields = line.split("\t")
        # Removed-but-configured packages are listed too, with status "config-files".
        if len(fields) == 3 and fields[2] == "installed" and fields[0] in packages:
            versions[fields[0]] = fields[1]
    return versions


def find_deb(deb_dir: str | os.PathLike, package: str) -> Path | None:
    """The downloaded .deb of ``package`` in deb_dir, or None when it is not there."""
    candidates = sorted(Path(deb_dir).glob(f"{package}_*.deb"))
    if len(candidates) > 1:
        # Two versions would make the corpus depend on which one is picked: refuse to guess.
        raise DataError(
            f"{deb_dir} holds several versions of {package}: {', '.join(c.name for c in candidates)}; "
            "delete all but one"
        )
    return candidates[0] if candidates else None


def _missing_message(missing_packages: list[str], missing_debs: list[str], deb_dir: str) -> str:
    lines = ["The embedded Debian corpus needs packages that are missing on this machine:"]
    fixes = []
    if missing_packages:
        lines.append(f"  not installed: {' '.join(missing_packages)}")
        fixes.append(f"  sudo apt-get install --no-install-recommends {' '.join(missing_packages)}")
    if missing_debs:
        lines.append(f"  not downloaded into {deb_dir}: {' '.join(missing_debs)}")
        quoted_dir = shlex.quote(str(deb_dir))
        fixes.append(f"  mkdir -p {quoted_dir} && (cd {quoted_dir} && apt-get download {' '.join(missing_debs)})")
    fixes.append(f"or: bash {INSTALL_SCRIPT} {shlex.quote(str(deb_dir))}")
    return "\n".join(lines + ["Fix with:"] + fixes)


def check_available(domains: list[str], deb_dir: str | os.PathLike = DEFAULT_DEB_DIR) -> None:
    """Raise DataError naming every missing package of ``domains`` and the commands that fix it."""
    sources = _sources(domains)
    packages = list(dict.fromkeys(package for source in sources for package in source.packages))
    debs = list(dict.fromkeys(deb for source in sources for deb in source.debs))
    installed = installed_versions(packages)
    missing_packages = [package for package in packages if package not in installed]
    missing_debs = [deb for deb in debs if find_deb(deb_dir, deb) is None]
    if missing_packages or missing_debs:
        raise DataError(_missing_message(missing_packages, missing_debs, str(deb_dir)))


def package_versions(domain: str, deb_dir: str | os.PathLike = DEFAULT_DEB_DIR) -> dict[str, str]:
    """{package: version} of the installed packages and downloaded .deb files ``domain`` is read from."""
    check_available([domain], deb_dir)
    source = DOMAINS[domain]
    versions = installed_versions(source.packages)
    for package in source.debs:
        deb_path = find_deb(deb_dir, package)
        versions[package] = run_tool(["dpkg-deb", "--field", str(deb_path), "Version"]).decode().strip()
    return versions


def package_files(package: str, is_document: Callable[[str], bool]) -> list[Path]:
    """Sorted regular files of an installed package for which ``is_document(path)`` holds.

    Symlinks are skipped: they are aliases of files that are read anyway (fortune *.u8, man pages).
    """
    listing = run_tool(["dpkg", "-L", package]).decode("utf-8", errors="replace")
    # Lines not starting with "/" are diversion notes ("package diverts others to: ...").
    paths = sorted({line for line in listing.splitlines() if line.startswith("/")})
    return [Path(path) for path in paths if is_document(path) and os.path.isfile(path) and not os.path.islink(path)]


def _is_man_page(path: str) -> bool:
    return path.startswith("/usr/share/man/") and path.endswith(".gz")


# Which files of a package are documents, for the domains with one document per file.
_DOCUMENT_FILES: dict[str, Callable[[str], bool]] = {
    # testdata/ holds inputs of Go's own tests (generated, often deliberately malformed code).
    "golang-1.19-src": lambda path: path.endswith(".go") and "/testdata/" not in path,
    "python3.11-doc": lambda path: "/html/_sources/" in path and path.endswith(".rst.txt"),
    "perl-doc": lambda path: path.endswith((".pod", ".pod.gz")),
    "manpages": _is_man_page,
    "manpages-dev": _is_man_page,
}


def _read_files(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    for package in source.packages:
        for path in package_files(package, _DOCUMENT_FILES[package]):
            yield f"{package}:{path}", read_bytes(path)


def _read_man(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    for document_id, raw in _read_files(source, deb_dir):
        text = clean_text(raw)
        if text is not None and not is_roff_redirect(text):
            yield document_id, text


def _read_books(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    # -f turns pretty-printing off: one "Ge1:1 text" line per verse, whatever the terminal width.
    text = run_tool(["bible", "-f", "Gen1:1-Rev22:21"]).decode("utf-8", errors="replace")
    for reference, chapter in split_bible_chapters(text):
        yield f"bible-kjv:{reference}", chapter


def _read_dictionaries(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    for package in source.packages:
        for index_path in package_files(package, lambda path: path.endswith(".index")):
            dict_path = index_path.with_name(index_path.name.removesuffix(".index") + ".dict.dz")
            for key, entry in dictd.iter_entries(index_path, dict_path):
                yield f"{package}:{key}", entry


def _read_latex(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    for package in source.debs:
        deb_path = find_deb(deb_dir, package)
        # dpkg-deb unpacks any data.tar compression (xz on Debian, zstd on Ubuntu), tarfile cannot.
        filesystem_tar = run_tool(["dpkg-deb", "--fsys-tarfile", str(deb_path)])
        for path, data in tex_members(io.BytesIO(filesystem_tar), deb_path):
            yield f"{package}:{path}", data


def _read_qa(source: DomainSource, deb_dir: str) -> Iterator[tuple[str, bytes | str]]:
    for path in package_files("debian-faq", lambda path: path.endswith(".en.txt.gz")):
        text = read_bytes(path).decode("utf-8", errors="replace")
        for number, chapter in enumerate(split_faq_chapters(text) or [text], start=1):
            yield f"debian-faq:{path}#chapter{number}", chapter
    # *.dat files are strfile's binary indexes of the text files next to them.
    for path in package_files("fortunes", lambda path: "/games/fortunes/" in path and not path.endswith(".dat")):
        text = read_bytes(path).decode("utf-8", errors="replace")
        for number, fortune in enumerate(split_fortunes(text), start=1):
            yield f"fortunes:{path}#{number}", fortune


_READERS: dict[str, Callable[[DomainSource, str], Iterator[tuple[str, bytes | str]]]] = {
    "code": _read_files,
    "books": _read_books,
    "encyclopedic": _read_dictionaries,
    "latex": _read_latex,
    "docs": _read_files,
    "man": _read_man,
    "qa": _read_qa,
}


def iter_documents(domain: str, deb_dir: str | os.PathLike = DEFAULT_DEB_DIR) -> Iterator[tuple[str, str]]:
    """(document_id, text) of every document of ``domain``, in a fixed order.

    Availability is checked at the call, before anything is read. Text is decoded as UTF-8 (bad bytes
    replaced), NUL bytes are removed, and whitespace-only documents are skipped.
    """
    check_available([domain], deb_dir)
    return _clean_documents(_READERS[domain](DOMAINS[domain], str(deb_dir)))


def _clean_documents(documents: Iterator[tuple[str, bytes | str]]) -> Iterator[tuple[str, str]]:
    for document_id, raw in documents:
        text = clean_text(raw)
        if text is not None:
            yield document_id, text


def _print_stats(domains: list[str], deb_dir: str) -> None:
    check_available(domains, deb_dir)
    print(f"{'domain':<14}{'documents':>10}{'bytes':>12}{'seconds':>9}")
    for domain in domains:
        started = time.perf_counter()
        documents = total_bytes = 0
        for _, text in iter_documents(domain, deb_dir):
            documents += 1
            total_bytes += len(text.encode("utf-8"))
        print(f"{domain:<14}{documents:>10}{total_bytes:>12}{time.perf_counter() - started:>9.1f}")


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corpus.debian", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--print-packages", action="store_true", help="packages to apt-get install")
    action.add_argument("--print-debs", action="store_true", help="packages to apt-get download into --deb-dir")
    action.add_argument("--stats", action="store_true", help="count documents and bytes per domain")
    parser.add_argument("--deb-dir", default=DEFAULT_DEB_DIR)
    parser.add_argument("domains", nargs="*", help=f"default: all of {', '.join(DOMAINS)}")
    args = parser.parse_args(argv)
    sources = _sources(args.domains or list(DOMAINS))
    if args.print_packages:
        print(" ".join(dict.fromkeys(package for source in sources for package in source.packages)))
    elif args.print_debs:
        print(" ".join(dict.fromkeys(deb for source in sources for deb in source.debs)))
    else:
        _print_stats([source.name for source in sources], args.deb_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
