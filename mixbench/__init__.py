"""Shared plumbing of mixbench: configuration, output layout, atomic writes, provenance."""
