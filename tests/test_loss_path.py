"""The chunked per-token loss (models/token_loss.py) against the plain fp32 cross-entropy of the
full logits: the same losses and the same gradients of every parameter, with a padded
vocabulary and a chunk that does not divide the token count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.gpt2 import build_model, gpt2_config, pad_vocabulary, unpadded_vocab_size
from models.step import StepPasses, model_token_loss
from models.token_loss import chunked_token_loss


def plain_token_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """The loss as the loop computed it before: full logits, padding sliced off, fp32 cross-entropy."""
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits = model(input_ids=x).logits[..., : unpadded_vocab_size(model)]
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(x.shape)


def gradients(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [7, 64, None])  # 7 divides none of the 3 × 16 = 48 tokens' chunks evenly
def test_the_chunked_loss_and_its_gradients_equal_the_full_logits_path(chunk):
    torch.manual_seed(0)
    model = pad_vocabulary(build_model(gpt2_config("test", 500)))  # 500 real entries, padded to 512
    assert model.config.vocab_size == 512
    model.loss_chunk_tokens = chunk
    tokens = torch.randint(0, 500, (3, 17), generator=torch.Generator().manual_seed(1))
    # Per-token weights, as the loop's weighted objective gives them: every token's gradient counts.
    weights = torch.rand(3, 16, generator=torch.Generator().manual_seed(2))

    expected = plain_token_loss(model, tokens)
    expected_grads = gradients(model, (expected * weights).sum())
    got = model_token_loss(model, tokens[:, :-1], tokens[:, 1:])
    got_grads = gradients(model, (got * weights).sum())

    assert got.dtype == torch.float32 and got.shape == (3, 16)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    for name, grad in expected_grads.items():  # fp32 rounding: a millionth of the largest entry
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6 * float(grad.abs().max()), msg=name)
    # The padding's rows are never scored: no gradient at all.
    assert torch.equal(got_grads["transformer.wte.weight"][500:], torch.zeros(12, 32))


def test_a_plain_gpt2_and_the_loop_passes_use_the_same_loss():
    """A saved model (a plain GPT2LMHeadModel: DoReMi's reference) gets the same chunked loss."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = build_model(gpt2_config("test", 300))
    plain = GPT2LMHeadModel(model.config)
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(3))
    passes = StepPasses(model=model, seq_len=8, num_domains=1, device=torch.device("cpu"), bf16=False,
                        world_size=1, num_parameters=1)
    with torch.no_grad():
        mine, theirs = passes.token_loss(model, tokens), passes.token_loss(plain, tokens, kind=None)
        expected = plain_token_loss(plain, tokens)
    assert torch.equal(mine, theirs) and torch.allclose(mine, expected, rtol=0, atol=1e-6)
    assert passes.token_passes["forward"] == 16  # only the counted pass


def test_under_bf16_autocast_the_matmuls_run_in_bf16_and_the_loss_stays_close():
    torch.manual_seed(0)
    hidden = torch.randn(10, 32, requires_grad=True)
    weight = torch.randn(64, 32, requires_grad=True)
    targets = torch.randint(0, 60, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_token_loss(hidden, weight, targets, vocab_size=60, chunk=4)
        logits = (hidden @ weight.T)[:, :60]
    expected = F.cross_entropy(logits.float(), targets, reduction="none")
    assert got.dtype == torch.float32 and torch.equal(got, expected)  # the same bf16 logits, chunk by chunk
    got.sum().backward()
    assert hidden.grad.dtype == torch.float32 and torch.equal(weight.grad[60:], torch.zeros(4, 32))
