"""GPT-2 sizes: parameter counts of the paper sizes, checked without allocating them."""

from __future__ import annotations

import pytest

from models.gpt2 import build_model, count_parameters, gpt2_config
from models.sizes import SIZES, approx_parameters

GPT2_VOCAB = 50257


@pytest.mark.parametrize("size, expected", [("small", 124e6), ("medium", 355e6), ("large", 774e6)])
def test_paper_sizes_match_the_published_parameter_counts(size, expected):
    model = build_model(gpt2_config(size, GPT2_VOCAB), device="meta")
    assert next(model.parameters()).is_meta  # nothing was allocated
    n = count_parameters(model)
    assert abs(n - expected) / expected < 0.02, f"{size}: {n:,} parameters"
    assert approx_parameters(SIZES[size], GPT2_VOCAB) == n


def test_cpu_sizes_are_small():
    assert 1e6 <= count_parameters(build_model(gpt2_config("tiny", 8192), device="meta")) <= 2e6
    assert count_parameters(build_model(gpt2_config("test", 512), device="meta")) < 100_000


def test_embedding_is_tied_to_the_output_layer():
    model = build_model(gpt2_config("test", 512))
    assert model.lm_head.weight is model.transformer.wte.weight
