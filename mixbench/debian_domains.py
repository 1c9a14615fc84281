"""The domains of the embedded default corpus and the Debian packages each is read from: pure data,
read by the configuration check (``corpus.domains`` of a Debian corpus names only these) and by
corpus/debian.py, which reads the packages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainSource:
    """One domain of the embedded corpus and the Debian packages it is read from.

    ``packages`` are installed with apt-get install; ``debs`` are only downloaded (apt-get download)
    into deb_dir and read from the .deb file, for packages whose dependencies are too heavy to install.
    """

    name: str
    description: str
    packages: tuple[str, ...] = ()
    debs: tuple[str, ...] = ()


DOMAINS: dict[str, DomainSource] = {
    source.name: source
    for source in (
        DomainSource("code", "Go 1.19 standard library source, one document per .go file", ("golang-1.19-src",)),
        DomainSource("books", "King James Bible, one document per chapter", ("bible-kjv",)),
        DomainSource("encyclopedic", "GCIDE, FOLDOC and Jargon File dictionaries, one document per entry",
                     ("dict-gcide", "dict-foldoc", "dict-jargon")),
        # Installing texlive-latex-recommended-doc would pull in texlive-base; reading its .deb does not.
        DomainSource("latex", "LaTeX sources from texlive-latex-recommended-doc, one document per .tex file",
                     debs=("texlive-latex-recommended-doc",)),
        DomainSource("docs", "Python 3.11 reST documentation sources and Perl POD files",
                     ("python3.11-doc", "perl-doc")),
        DomainSource("man", "Linux man pages (roff source), one document per page", ("manpages", "manpages-dev")),
        DomainSource("qa", "Debian FAQ chapters and fortune cookies", ("debian-faq", "fortunes")),
    )
}
