"""The memory estimate (models/memory.py): its coefficients against what autograd saves, and
every run of the paper grid against an 80 GiB GPU at its configured micro-batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixbench import config as cfg
from strategies import grid_config
from strategies import runs as strategy_runs
from models.memory import (ACTIVATION_BYTES, CUDA_CONTEXT_BYTES, GIB, HEADROOM, LOSS_WORKSPACE_BYTES,
                           largest_fitting_micro_batch, loss_chunk_tokens, training_memory)
from models.signals import parameter_copies
from mixbench.model_sizes import SIZES, ModelSize
from strategies import StrategyContext, get_strategy_class


def saved_bytes(n_layer: int, width: int, vocab: int, rows: int, seq_len: int, bf16: bool) -> int:
    """Bytes autograd keeps for backward through one forward and the loop's loss (parameters excluded)."""
    from transformers import GPT2Config

    from models.gpt2 import build_model

    torch.manual_seed(0)
    model = build_model(GPT2Config(vocab_size=vocab, n_positions=seq_len, n_embd=width, n_layer=n_layer, n_head=4,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    tokens = torch.randint(0, vocab, (rows, seq_len + 1))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=tokens[:, :-1], targets=tokens[:, 1:]).mean()
    return sum(n for ptr, n in storages.items() if ptr not in parameters)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_activation_coefficients_are_what_autograd_saves(precision):
    """Differences that isolate each term: two depths and two batch sizes give the bytes per token
    per layer (what does not grow with the batch, the bf16 weight copies, cancels); two
    vocabularies show that the loss keeps nothing per token that grows with the vocabulary."""
    bf16, width, seq = precision == "bf16", 64, 32
    measure = lambda layers, vocab, rows: saved_bytes(layers, width, vocab, rows, seq, bf16)
    per_layer_token = ((measure(3, 512, 4) - measure(1, 512, 4)) - (measure(3, 512, 2) - measure(1, 512, 2))) / (
        2 * 2 * seq)
    assert per_layer_token == pytest.approx(ACTIVATION_BYTES[precision] * width, rel=0.02)
    per_vocab_token = ((measure(1, 1024, 4) - measure(1, 512, 4)) - (measure(1, 1024, 2) - measure(1, 512, 2))) / (
        512 * 2 * seq)
    assert per_vocab_token == 0  # no logits kept, in any dtype


def test_the_loss_workspace_is_one_chunk_and_the_cuda_context_is_counted():
    small, vocab = SIZES["small"], 50304
    chunk = loss_chunk_tokens(vocab)
    assert chunk == 1280 and chunk % 128 == 0 and loss_chunk_tokens(10**7) == 128
    parts = training_memory(small, vocab_size=vocab, seq_len=1024, micro_batch=16, bf16=True)
    assert parts["loss_workspace"] == chunk * vocab * LOSS_WORKSPACE_BYTES + 4 * vocab * small.n_embd
    assert parts["cuda_context"] == CUDA_CONTEXT_BYTES and 0.5 * GIB <= CUDA_CONTEXT_BYTES <= GIB
    # Without full logits, a token costs its layers' activations (and the loss's hidden state and id) only.
    assert parts["activations"] == 16 * 1024 * (12 * 768 * ACTIVATION_BYTES["bf16"] + 4 * 768 + 8)
    tiny = training_memory(small, vocab_size=vocab, seq_len=8, micro_batch=1, bf16=True)
    assert tiny["loss_workspace"] == 8 * vocab * LOSS_WORKSPACE_BYTES + 4 * vocab * small.n_embd  # one short chunk


def test_the_estimate_grows_as_the_micro_batch_and_the_strategy_say():
    small = SIZES["small"]
    shape = dict(vocab_size=50304, seq_len=1024, bf16=True)
    one, two = (training_memory(small, micro_batch=m, **shape) for m in (8, 16))
    assert two["states"] == one["states"] and two["activations"] == pytest.approx(2 * one["activations"])
    copies = parameter_copies({"domain_gradients", "target_gradient"}, num_domains=7)
    assert copies == 8  # DoGE: one gradient per domain and the target's
    doge = training_memory(small, micro_batch=8, signal_copies=copies, **shape)
    assert doge["signals"] == pytest.approx(8 * 4 * one["states"] / 18)  # 8 fp32 copies of the parameters
    kept = training_memory(small, micro_batch=8, kept_rows=64, **shape)
    assert kept["activations"] == pytest.approx(8 * one["activations"])


def test_largest_fitting_micro_batch_is_the_largest_divisor_under_the_headroom():
    large, device = SIZES["large"], 80 * GIB
    shape = dict(vocab_size=50304, seq_len=1024, bf16=True)
    micro = largest_fitting_micro_batch(large, device_bytes=device, local_batch=256, **shape)
    assert micro is not None and 256 % micro == 0
    assert training_memory(large, micro_batch=micro, **shape)["total"] <= HEADROOM * device
    assert training_memory(large, micro_batch=2 * micro, **shape)["total"] > HEADROOM * device
    assert largest_fitting_micro_batch(large, device_bytes=8 * GIB, local_batch=256, **shape) is None


def test_every_run_of_the_paper_grid_fits_an_80_gib_gpu():
    """At its own size's micro-batch, with what its strategy's stage adds, on one GPU (the most
    memory a run needs: more processes split the batch, not the micro-batch)."""
    config = grid_config.load("config/paper.yaml")
    training, domains = config["training"], config["corpus"]["domains"]
    vocab = 50304  # GPT-2's 50,257 padded to a multiple of 64
    checked = {}
    for size in config["grid"]["sizes"]:
        for name in config["grid"]["strategies"]:
            for stage, spec in cfg.one_run_per_stage(strategy_runs.cell_runs(config, size, name)).items():
                if stage == "fit":
                    continue  # it trains nothing
                cls = get_strategy_class(cfg.strategy_class_name(config, name))
                context = StrategyContext(name=name, domains=tuple(domains), train_tokens=np.ones(len(domains)),
                                          stage=stage, total_steps=spec["steps"], seed=0, vocab_size=vocab,
                                          upstream_weights={s: np.full(len(domains), 1 / len(domains))
                                                            for s in ("reference", "proxy")})
                strategy = cls(context, **cfg.strategy_hparams(config, name))
                keeps = strategy.reweights_current_step() and training["reweighted_step"] == "one_forward"
                estimate = training_memory(
                    SIZES[spec["size"]], vocab_size=vocab, seq_len=training["seq_len"], bf16=True,
                    micro_batch=cfg.run_resources(config, name, stage, spec["size"]).micro_batch_size,
                    signal_copies=parameter_copies(strategy.required_signals(), len(domains)),
                    kept_rows=training["batch_size"] if keeps else None)
                checked[(spec["size"], name, stage)] = estimate["total"] / GIB
    too_big = {run: round(gib, 1) for run, gib in checked.items() if gib > HEADROOM * 80}
    assert not too_big, f"runs over {HEADROOM:.0%} of 80 GiB: {too_big}"
    # Every final model; DoReMi's shared reference and proxy, DoGE's and Chameleon's proxies, RegMix's
    # and Skill-It's swarms (the runs of a swarm share one shape: the first stands for all).
    assert len(checked) == 14 * 3 + 4 + 2
    # Without the per-size setting the large model would not fit.
    assert training_memory(SIZES["large"], vocab_size=vocab, seq_len=1024, micro_batch=32, bf16=True)["total"] > 80 * GIB


def test_a_size_of_unusual_shape_is_estimated_from_its_own_shape():
    wide = ModelSize(n_layer=2, n_head=4, n_embd=256, n_positions=128)
    narrow = ModelSize(n_layer=2, n_head=4, n_embd=128, n_positions=128)
    args = dict(vocab_size=512, seq_len=128, micro_batch=4, bf16=False)
    a, b = training_memory(wide, **args), training_memory(narrow, **args)
    assert a["activations"] - b["activations"] == 4 * 128 * (2 * 128 * ACTIVATION_BYTES["fp32"] + 4 * 128)
