"""GPT-2 sizes: parameter counts of the paper sizes, checked without allocating them."""

from __future__ import annotations

import pytest

from models.gpt2 import build_model, count_parameters, gpt2_config
from mixbench.model_sizes import SIZES, approx_parameters

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


def test_the_padded_vocabulary_is_never_scored_and_never_trained():
    """500 tokens padded to 512: the same losses, the same updates of every real parameter, zero
    padding rows after AdamW steps with weight decay, and a saved model without the padding."""
    import torch

    from models.gpt2 import pad_vocabulary, unpadded_copy, unpadded_vocab_size
    from models.optim import LoopSettings, make_optimizer
    from models.step import StepPasses

    torch.manual_seed(0)
    plain = build_model(gpt2_config("test", 500))
    torch.manual_seed(0)
    padded = pad_vocabulary(build_model(gpt2_config("test", 500)))
    assert padded.config.vocab_size == 512 and unpadded_vocab_size(padded) == 500
    assert count_parameters(padded) == count_parameters(plain)
    assert padded.lm_head.weight is padded.transformer.wte.weight
    settings = LoopSettings(steps=3, batch_size=4, micro_batch_size=4, seq_len=16, lr=1e-2, min_lr_ratio=0.1,
                            warmup_steps=0, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=0.0, checkpoint_every=10)
    tokens = torch.randint(0, 500, (3, 4, 17), generator=torch.Generator().manual_seed(1))
    losses = {}
    for model in (plain, padded):
        passes = StepPasses(model=model, seq_len=16, num_domains=1, device=torch.device("cpu"), bf16=False,
                            world_size=1, num_parameters=count_parameters(model))
        optimizer = make_optimizer(model, settings)
        losses[id(model)] = []
        for batch in tokens:
            loss = passes.token_loss(model, batch).mean()
            losses[id(model)].append(float(loss.detach()))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert losses[id(plain)] == pytest.approx(losses[id(padded)], abs=1e-6)
    assert torch.equal(padded.transformer.wte.weight[500:], torch.zeros(12, 32))
    saved = unpadded_copy(padded)
    assert saved.config.vocab_size == 500 and not hasattr(saved.config, "unpadded_vocab_size")
    for (name, a), (_, b) in zip(plain.state_dict().items(), saved.state_dict().items()):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6), name
