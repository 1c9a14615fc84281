"""The corpus manifest's checksums, checked by every job that reads the splits.

``corpus/build.py`` records each split's sha256 in ``manifest.json``. A split edited, truncated
or replaced after the build would otherwise flow silently into a tokenizer, token files or
evaluation tasks that no longer match the manifest's counts; each reading job checks the
splits it reads once, before it reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mixbench.errors import DataError
from mixbench.io import read_json, sha256_file

REBUILD = "rebuild the corpus with: snakemake --cores 1 --forcerun build_corpus"


def verify_splits(corpus_dir: str | Path, domains: Iterable[str], splits: Iterable[str]) -> None:
    """Raise DataError naming the first split of ``domains`` × ``splits`` whose sha256 differs from
    the manifest's (or that the manifest or the folder lacks)."""
    corpus_dir = Path(corpus_dir)
    manifest_path = corpus_dir / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"no corpus manifest at {manifest_path}; {REBUILD}")
    recorded = read_json(manifest_path)["domains"]
    for domain in domains:
        for split in splits:
            path = corpus_dir / domain / f"{split}.jsonl"
            expected = recorded.get(domain, {}).get("splits", {}).get(split, {}).get("sha256")
            if expected is None:
                raise DataError(f"{manifest_path} records no {split} split for domain {domain!r}; {REBUILD}")
            if not path.exists():
                raise DataError(f"corpus split {path} is missing; {REBUILD}")
            actual = sha256_file(path)
            if actual != expected:
                raise DataError(f"corpus split {path} has sha256 {actual[:12]}…, manifest.json records "
                                f"{expected[:12]}…: it changed after the build; {REBUILD}")
