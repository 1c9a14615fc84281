"""Data preparation of mixbench: corpus sources, splits, tokenizer and token files."""
