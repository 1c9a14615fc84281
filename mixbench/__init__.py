"""Shared plumbing of mixbench: configuration, output layout, atomic writes, provenance."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
