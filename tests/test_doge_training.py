"""DoGE through the real loop: the model steps on Σ α_i g_i, out-of-domain targets are never
trained on, and a resumed proxy continues the same trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eval.analysis.plan_costs import planned_passes
from strategies import grid_config
from mixbench.io import read_json
from models.checkpoint import checkpoint_dirs, read_checkpoint
from models.train import train


def doge_config(built_data, **hparams):
    return grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["doge"]),
                             stages={"proxy": {"steps": 10}}, strategies={"doge": hparams}))


def alphas(out: Path) -> np.ndarray:
    return np.array([json.loads(line)["alpha"] for line in (out / "trace.jsonl").read_text().splitlines()])


def mean_loss_gradient(model, rows: torch.Tensor) -> np.ndarray:
    """∇ of the mean token loss over ``rows``, flattened, in float64 on the host."""
    import torch.nn.functional as F

    model.zero_grad()
    F.cross_entropy(model(input_ids=rows[:, :-1]).logits.flatten(0, 1), rows[:, 1:].flatten()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).double().numpy()


def clipped(g: np.ndarray, clip: float) -> np.ndarray:
    norm = np.linalg.norm(g)
    return g * (clip / (norm + 1e-6)) if norm > clip else g


def doge_loop(built_data, tmp_path, **hparams):
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from models.signals.base import SignalSources
    from strategies import StrategyContext, get_strategy_class

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    context = StrategyContext(name="doge", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="proxy", total_steps=10, seed=0, vocab_size=store.vocab_size)
    strategy = get_strategy_class("doge")(context, **hparams)
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", store.vocab_size))
    settings = LoopSettings.from_config(dict(built_data["training"], batch_size=16, micro_batch_size=4), steps=10)
    loop = TrainingLoop(model=model, strategy=strategy, sampler=DomainSampler(store, 32, seed=2), settings=settings,
                        log_path=tmp_path / "log.csv",
                        checkpoint_dir=tmp_path / "checkpoints", strategy_name="doge",
                        sources=SignalSources(data_dir=Path(built_data["data_dir"]), seed=2))
    return loop, model, strategy, store


@pytest.mark.filterwarnings("ignore:Seems like .optimizer.step")
def test_the_model_steps_on_the_alpha_weighted_sum_of_clipped_domain_gradients(built_data, tmp_path, monkeypatch):
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore

    loop, model, strategy, store = doge_loop(built_data, tmp_path, max_grad_norm=0.5)  # small: clipping binds
    val = TokenStore(Path(built_data["data_dir"]) / "tokens", "val")
    k = len(store.domains)
    captured, seen = {}, {}
    monkeypatch.setattr(loop.optimizer, "step", lambda: captured.update(
        {n: p.grad.clone() for n, p in model.named_parameters()}))
    update = strategy.update
    monkeypatch.setattr(strategy, "update", lambda stats: (seen.update(stats.extra), update(stats))[1])
    loop.train_step(lr=1e-3)
    alpha = strategy.alpha()

    # The target: half the training batch, stratified over the val split, clipped like the rest.
    target_rows = DomainSampler(val, 32, seed=2, stream=1000).step_batch(np.full(k, 1 / k), 8, 1, stratified=True)
    val_tokens, val_domains = target_rows.tokens, target_rows.domains
    assert sorted(np.bincount(val_domains, minlength=k)) == [1, 1, 1, 1, 2, 2]
    raw_target = mean_loss_gradient(model, torch.from_numpy(val_tokens))
    assert np.linalg.norm(raw_target) > 0.5 and seen["target_gradient"]["norm"] == pytest.approx(
        np.linalg.norm(raw_target), rel=1e-5)
    target = clipped(raw_target, 0.5)

    rows = DomainSampler(store, 32, seed=2).step_batch(np.full(k, 1 / k), 16, 1, stratified=True)
    tokens, domains = rows.tokens, rows.domains
    assert sorted(np.bincount(domains, minlength=k)) == [2, 2, 3, 3, 3, 3]  # every domain, equal up to the remainder
    grads = [clipped(mean_loss_gradient(model, torch.from_numpy(tokens[domains == i])), 0.5) for i in range(k)]
    vectors = np.stack([*grads, target])
    signal = seen["domain_gradients"]
    assert signal["target_index"] == k and signal["present"].all()
    assert np.allclose(signal["gram"], vectors @ vectors.T, rtol=1e-4, atol=1e-8)
    expected = sum(alpha[i] * grads[i] for i in range(k))
    got = torch.cat([captured[n].flatten() for n, _ in model.named_parameters()]).double().numpy()
    assert np.allclose(got, expected, atol=1e-6, rtol=1e-4)


def test_the_device_path_equals_a_host_computation_over_five_steps(built_data, tmp_path):
    """Per-domain gradients as float64 numpy vectors on the host, as the suite computed them
    before they stayed on the device: the same α and the same model after 5 steps. Both step
    with SGD: AdamW would turn the rounding noise of components whose gradient is exactly zero
    (GPT-2's attention key bias) into full-size steps, and that is the same code for every
    strategy; what is compared here is DoGE's gradient."""
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.optim import lr_factor
    from strategies.doge import log_softmax

    loop, model, strategy, store = doge_loop(built_data, tmp_path)
    settings = loop.settings
    schedule = lambda i: lr_factor(i, settings.warmup_steps, settings.steps, settings.min_lr_ratio)
    loop.optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr)
    loop.scheduler = torch.optim.lr_scheduler.LambdaLR(loop.optimizer, schedule)
    alphas = []
    for _ in range(5):
        loop.train_step(loop.scheduler.get_last_lr()[0])
        loop.state.step += 1  # what run() does after each step: the next step draws its own batch
        alphas.append(strategy.alpha())

    from models.gpt2 import build_model, gpt2_config

    torch.manual_seed(0)
    host = build_model(gpt2_config("test", store.vocab_size))
    optimizer = torch.optim.SGD(host.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    k = len(store.domains)
    uniform = np.full(k, 1 / k)
    sampler = DomainSampler(store, 32, seed=2)
    target_sampler = DomainSampler(TokenStore(Path(built_data["data_dir"]) / "tokens", "val"), 32, seed=2, stream=1000)
    log_alpha = np.log(uniform)
    for t in range(5):
        lr = scheduler.get_last_lr()[0]
        rows = sampler.step_batch(uniform, 16, t + 1, stratified=True)
        tokens, domains = rows.tokens, rows.domains
        grads = np.stack([clipped(mean_loss_gradient(host, torch.from_numpy(tokens[domains == i])), 5.0)
                          for i in range(k)])
        target_tokens = target_sampler.step_batch(uniform, 8, t + 1, stratified=True).tokens
        target = clipped(mean_loss_gradient(host, torch.from_numpy(target_tokens)), 5.0)
        mean_norm = np.linalg.norm(grads, axis=1).mean()
        scores = np.clip(lr * (grads @ target) / (mean_norm + 1e-6), 0.0, lr * 5.0)
        log_alpha = log_softmax(log_alpha + scores / 0.01)
        assert np.allclose(np.exp(log_alpha), alphas[t], atol=1e-6), t
        combined = torch.from_numpy(np.exp(log_alpha) @ grads).float()
        offset = 0
        for p in host.parameters():
            p.grad = combined[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.named_parameters(), host.parameters()):
        assert torch.allclose(a.double(), b.double(), atol=1e-6, rtol=0), name


def test_proxy_trace_average_and_resume(built_data, tmp_path):
    config = doge_config(built_data)
    run = lambda out, stop=None: train(config, "test", "doge", 0, "proxy", out, {}, stop)
    assert run(tmp_path / "whole")
    assert not run(tmp_path / "split", stop=4)
    # Nothing of the model's size is kept across steps: the strategy's and the providers'
    # checkpointed state is a few vectors of length K and sampler states.
    checkpoint = read_checkpoint(checkpoint_dirs(tmp_path / "split" / "checkpoints")[-1])
    state = [checkpoint["strategy"], checkpoint["samplers"][0]["providers"]]
    sizes = [np.asarray(v).size for part in state for v in part.values() if not isinstance(v, dict)]
    assert max(sizes) <= 6 and set(checkpoint["samplers"][0]["providers"]) == {"domain_gradients", "target_gradient"}
    assert checkpoint["samplers"][0]["providers"]["domain_gradients"] == {}
    assert run(tmp_path / "split")
    whole = alphas(tmp_path / "whole")
    assert whole.shape == (10, 6) and np.allclose(whole.sum(axis=1), 1.0)
    assert np.array_equal(whole, alphas(tmp_path / "split"))
    assert np.allclose(read_json(tmp_path / "whole" / "weights.json")["final_weights"], whole.mean(axis=0))
    # A resume loses no count.
    a, b = (read_json(tmp_path / name / "run.json") for name in ("whole", "split"))
    # Per-domain gradients cover each training token once; the held-out target batch (the
    # default target: the val split) adds half the batch of 8, but at least one sequence for
    # each of the 6 domains: 6 sequences a step.
    with_target = a["tokens"] * (8 + 6) // 8
    assert a["token_passes"] == b["token_passes"] == {"forward": with_target, "backward": with_target}
    assert planned_passes(config, "doge", "proxy", "test") == a["token_passes"]  # the cost plan's count (eval/analysis/plan.py)
    assert a["flops"] == 6 * a["parameters"] * with_target
    log = pd.read_csv(tmp_path / "whole" / "log.csv")
    assert np.allclose(log[[c for c in log if c.startswith("weight/")]].to_numpy(), 1 / 6)  # sampling uniform


def test_out_of_domain_target_is_excluded_from_training(built_data, tmp_path):
    config = doge_config(built_data, target="qa")
    assert train(config, "test", "doge", 0, "proxy", tmp_path / "proxy", {})
    log = pd.read_csv(tmp_path / "proxy" / "log.csv")
    assert log["tokens/qa"].eq(0).all() and log["weight/qa"].eq(0).all()
    assert alphas(tmp_path / "proxy")[:, -1].max() == 0.0
    assert train(config, "test", "doge", 0, "final", tmp_path / "final", {"proxy": tmp_path / "proxy"})
    final_log = pd.read_csv(tmp_path / "final" / "log.csv")
    assert final_log["tokens/qa"].eq(0).all()
