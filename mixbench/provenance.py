"""Provenance recorded with every run and result row: code version, packages, config hash."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from mixbench import REPO_ROOT

PACKAGES = ("torch", "transformers", "tokenizers", "lm_eval", "numpy")


def git_commit() -> str:
    """HEAD's hash, with ``-dirty`` if tracked files differ from it; 'unknown' outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(config_hash: str, seed: int) -> dict:
    return {"config_hash": config_hash, "git_commit": git_commit(), "seed": seed, "versions": package_versions()}
