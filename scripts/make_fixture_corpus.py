"""Write tests/fixtures/corpus.jsonl: a small corpus drawn from the Debian packages, for the tests.

Tests must not need the packages, so a few documents per domain are committed. The choice is
deterministic (a fixed seed per domain over the documents in iter_documents order), so rerunning this
with the same package versions rewrites the same file.

    python scripts/make_fixture_corpus.py [--out tests/fixtures/corpus.jsonl] [--per-domain 60]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# Run as a plain script from anywhere: make the repository's packages importable.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from corpus import debian  # noqa: E402
from mixbench.io import write_text  # noqa: E402

# latex is left out: it needs the downloaded texlive .deb, which is not installed like the others.
FIXTURE_DOMAINS = ["code", "books", "encyclopedic", "docs", "man", "qa"]
SEED = 20240607


def cut_at_line(text: str, max_chars: int) -> str:
    """At most max_chars of text, ending at a line boundary when there is one to end at."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1] if cut > 0 else text[:max_chars]


def sample_domain(domain: str, per_domain: int, max_chars: int, deb_dir: str) -> list[str]:
    texts = [text for _, text in debian.iter_documents(domain, deb_dir)]
    # Seeding with a string is stable across Python runs (unlike hash()).
    chosen = sorted(random.Random(f"{SEED}:{domain}").sample(range(len(texts)), min(per_domain, len(texts))))
    return [cut_at_line(texts[index], max_chars) for index in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "tests" / "fixtures" / "corpus.jsonl"))
    parser.add_argument("--per-domain", type=int, default=60)
    parser.add_argument("--max-chars", type=int, default=1200)
    parser.add_argument("--deb-dir", default=debian.DEFAULT_DEB_DIR)
    args = parser.parse_args(argv)

    debian.check_available(FIXTURE_DOMAINS, args.deb_dir)
    lines = []
    for domain in FIXTURE_DOMAINS:
        for text in sample_domain(domain, args.per_domain, args.max_chars, args.deb_dir):
            lines.append(json.dumps({"domain": domain, "text": text}, ensure_ascii=False))
        print(f"{domain}: versions {debian.package_versions(domain, args.deb_dir)}", file=sys.stderr)
    content = "\n".join(lines) + "\n"
    write_text(args.out, content)
    print(f"wrote {len(lines)} documents, {len(content.encode('utf-8'))} bytes to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
