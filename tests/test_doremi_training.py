"""DoReMi through the real training loop: the reference model's losses reach the update,
the trajectory is traced, ᾱ counts α_0, accumulation and resume keep the trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.analysis.plan_costs import planned_passes
from strategies import grid_config
from mixbench.io import read_json
from models.train import train
from strategies.doremi import excess_loss_per_domain


@pytest.fixture(scope="module")
def doremi_config(built_data):
    return grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["doremi"]),
                             stages={"reference": {"steps": 8}, "proxy": {"steps": 12}}))


@pytest.fixture(scope="module")
def reference_run(doremi_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("doremi") / "reference"
    assert train(doremi_config, "test", "doremi", 0, "reference", out, {})
    return out


def proxy(config, out: Path, reference: Path, stop_after=None) -> bool:
    return train(config, "test", "doremi", 0, "proxy", out, {"reference": reference}, stop_after)


def trace(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]


def test_reference_trains_on_natural_weights(doremi_config, reference_run):
    weights = read_json(reference_run / "weights.json")["final_weights"]
    tokens = read_json(Path(doremi_config["data_dir"]) / "tokens" / "meta.json")["domains"]
    natural = np.array([tokens[d]["train"]["tokens"] for d in doremi_config["corpus"]["domains"]], float)
    assert np.allclose(weights, natural / natural.sum())


def test_proxy_step_one_uses_the_reference_models_per_token_losses(doremi_config, reference_run, tmp_path):
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from transformers import GPT2LMHeadModel

    out = tmp_path / "proxy"
    assert proxy(doremi_config, out, reference_run)
    records = trace(out)
    assert [r["step"] for r in records] == list(range(1, 13))
    # Rebuild step 1 independently: the same rows of step 1, same initial proxy, the saved reference.
    store = TokenStore(Path(doremi_config["data_dir"]) / "tokens", "train")
    k = len(store.domains)
    rows = DomainSampler(store, 32, seed=0).step_batch(np.full(k, 1 / k), 8, 1)
    tokens, domains = rows.tokens, rows.domains
    torch.manual_seed(0)
    initial_proxy = build_model(gpt2_config("test", store.vocab_size))
    reference = GPT2LMHeadModel.from_pretrained(reference_run / "model")
    x, y = torch.from_numpy(tokens[:, :-1]), torch.from_numpy(tokens[:, 1:])
    with torch.no_grad():
        loss = lambda m: torch.nn.functional.cross_entropy(m(input_ids=x).logits.flatten(0, 1), y.flatten(),
                                                           reduction="none").view(x.shape).numpy()
        excess, counts = excess_loss_per_domain(loss(initial_proxy), loss(reference), domains, k)
    expected = np.where(counts > 0, excess, np.log(store.vocab_size))
    assert np.allclose(records[0]["excess"], expected, atol=1e-5)
    # ᾱ = mean(α_0 = uniform, α_1 … α_12); sampling stayed uniform throughout.
    alphas = np.array([np.full(k, 1 / k)] + [r["alpha"] for r in records])
    assert np.allclose(read_json(out / "weights.json")["final_weights"], alphas.mean(axis=0))
    import pandas as pd

    log = pd.read_csv(out / "log.csv")
    assert np.allclose(log[[f"weight/{d}" for d in store.domains]].to_numpy(), 1 / k)


def test_accumulation_and_resume_keep_the_proxy_trajectory(doremi_config, reference_run, tmp_path):
    assert proxy(doremi_config, tmp_path / "whole", reference_run)
    accumulated = grid_config.validate(dict(doremi_config, training=dict(doremi_config["training"], micro_batch_size=2)))
    assert proxy(accumulated, tmp_path / "micro", reference_run)  # four micro-batches, one forward each
    assert not proxy(doremi_config, tmp_path / "split", reference_run, stop_after=5)
    assert proxy(doremi_config, tmp_path / "split", reference_run)
    whole = np.array([r["alpha"] for r in trace(tmp_path / "whole")])
    assert np.allclose(whole, [r["alpha"] for r in trace(tmp_path / "micro")], atol=1e-5)
    assert np.array_equal(whole, np.array([r["alpha"] for r in trace(tmp_path / "split")]))
    assert np.array_equal(read_json(tmp_path / "whole" / "weights.json")["final_weights"],
                          read_json(tmp_path / "split" / "weights.json")["final_weights"])
    # Compute: one reference forward per token on top of training; the signals come from the
    # trained forward itself, whatever the number of micro-batches. A resume loses no count.
    runs = {name: read_json(tmp_path / name / "run.json") for name in ("whole", "micro", "split")}
    tokens, n = runs["whole"]["tokens"], runs["whole"]["parameters"]
    for name in runs:
        assert runs[name]["token_passes"] == {"forward": tokens, "backward": tokens, "reference_forward": tokens}
    assert runs["whole"]["flops"] == 2 * n * tokens + 4 * n * tokens + 2 * n * tokens  # reference: same size


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_one_forward_equals_the_two_forward_step(doremi_config, reference_run, tmp_path, dropout):
    """The step that keeps each micro-batch's graph and the one that forwards it again after a
    no-grad pass (replaying the dropout RNG) give the same α and the same model."""
    from safetensors.torch import load_file

    runs = {}
    for mode in ("one_forward", "two_forwards"):
        config = grid_config.validate(dict(doremi_config, training=dict(doremi_config["training"], micro_batch_size=2,
                                                                dropout=dropout, reweighted_step=mode)))
        assert proxy(config, tmp_path / mode, reference_run)
        runs[mode] = read_json(tmp_path / mode / "run.json")
        assert planned_passes(config, "doremi", "proxy", "test") == runs[mode]["token_passes"]  # the cost plan's count
    one, two = (np.array([r["alpha"] for r in trace(tmp_path / m)]) for m in ("one_forward", "two_forwards"))
    assert np.allclose(one, two, atol=1e-6, rtol=0) and np.abs(one - 1 / 6).max() > 1e-3
    a, b = (load_file(tmp_path / m / "model" / "model.safetensors") for m in ("one_forward", "two_forwards"))
    # GPT-2's attention key bias has an exactly-zero gradient (softmax ignores a constant per
    # query): AdamW turns its rounding noise into full-size steps. Every other value agrees to
    # within 1e-5: the two orders sum the micro-batches differently, and AdamW's normalised steps
    # (3e-3 each) carry that rounding into components whose gradient is near zero.
    width = a["transformer.h.0.attn.c_attn.bias"].numel() // 3  # [query | key | value]
    key_bias = slice(width, 2 * width)
    for name in a:
        x, y = a[name].clone(), b[name].clone()
        if name.endswith("attn.c_attn.bias"):
            x[key_bias] = y[key_bias] = 0
        assert torch.allclose(x, y, atol=1e-5, rtol=0), (name, float((x - y).abs().max()))
    tokens = runs["one_forward"]["tokens"]
    assert runs["one_forward"]["token_passes"]["forward"] == tokens
    assert runs["two_forwards"]["token_passes"]["forward"] == 2 * tokens


def test_final_trains_on_the_proxy_average(doremi_config, reference_run, tmp_path):
    assert proxy(doremi_config, tmp_path / "proxy", reference_run)
    assert train(doremi_config, "test", "doremi", 0, "final", tmp_path / "final",
                 {"reference": reference_run, "proxy": tmp_path / "proxy"})
    learned = read_json(tmp_path / "proxy" / "weights.json")["final_weights"]
    assert np.allclose(read_json(tmp_path / "final" / "weights.json")["final_weights"], learned)


@pytest.mark.filterwarnings("ignore:Seems like .optimizer.step")
def test_the_steps_gradient_uses_the_just_updated_alpha(doremi_config, reference_run, tmp_path, monkeypatch):
    """∇ of Σ_j w_d(j) ℓ_j / Σ_j w_d(j) with w = α_t / p, α_t the vector this step's update produced."""
    import torch.nn.functional as F

    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from models.signals.base import SignalSources
    from strategies import StrategyContext, get_strategy_class

    store = TokenStore(Path(doremi_config["data_dir"]) / "tokens", "train")
    k = len(store.domains)
    context = StrategyContext(name="doremi", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="proxy", total_steps=1, seed=0, vocab_size=store.vocab_size)
    strategy = get_strategy_class("doremi")(context, step_size=5.0)  # a big step: α_t far from α_0
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", store.vocab_size))
    settings = LoopSettings.from_config(dict(doremi_config["training"], grad_clip=0.0, batch_size=16,
                                             micro_batch_size=8), steps=1)  # two micro-batches: two passes
    loop = TrainingLoop(model=model, strategy=strategy, sampler=DomainSampler(store, 32, seed=6), settings=settings,
                        log_path=tmp_path / "log.csv",
                        checkpoint_dir=tmp_path / "checkpoints", strategy_name="doremi",
                        sources=SignalSources(upstream={"reference": reference_run}))
    captured = {}
    monkeypatch.setattr(loop.optimizer, "step", lambda: captured.update(
        {n: p.grad.clone() for n, p in model.named_parameters()}))
    loop.train_step(lr=1e-3)
    alpha_t = strategy.alpha
    assert np.abs(alpha_t - 1 / k).max() > 0.01

    rows = DomainSampler(store, 32, seed=6).step_batch(np.full(k, 1 / k), 16, 1)  # the rows of step 1
    tokens, domains = rows.tokens, rows.domains
    x, y = torch.from_numpy(tokens[:, :-1]), torch.from_numpy(tokens[:, 1:])
    model.zero_grad()
    token_loss = F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten(), reduction="none").view(x.shape)
    w = torch.as_tensor(alpha_t * k, dtype=torch.float32)[torch.from_numpy(domains)]  # α_t / p, p = 1/k
    ((token_loss.sum(dim=1) * w).sum() / (w.sum() * 32)).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(captured[name], p.grad, atol=1e-6, rtol=1e-4), name
