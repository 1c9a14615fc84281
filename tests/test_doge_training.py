"""DoGE through the real loop: the model steps on Σ α_i g_i, out-of-domain targets are never
trained on, and a resumed proxy continues the same trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mixbench import config as cfg
from mixbench.io import read_json
from models.train import train


def doge_config(built_data, **hparams):
    return cfg.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["doge"]),
                             stages={"proxy": {"steps": 10}}, strategies={"doge": hparams}))


def alphas(out: Path) -> np.ndarray:
    return np.array([json.loads(line)["alpha"] for line in (out / "trace.jsonl").read_text().splitlines()])


@pytest.mark.filterwarnings("ignore:Seems like .optimizer.step")
def test_the_model_steps_on_the_alpha_weighted_sum_of_clipped_domain_gradients(built_data, tmp_path, monkeypatch):
    import torch.nn.functional as F

    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from strategies import StrategyContext, get_strategy_class

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    val = TokenStore(Path(built_data["data_dir"]) / "tokens", "val")
    k = len(store.domains)
    context = StrategyContext(name="doge", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="proxy", total_steps=1, seed=0, vocab_size=store.vocab_size)
    strategy = get_strategy_class("doge")(context, max_grad_norm=0.5)  # small: clipping must bind
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", store.vocab_size))
    settings = LoopSettings.from_config(dict(built_data["training"], batch_size=16, micro_batch_size=4), steps=1)
    loop = TrainingLoop(model, strategy, DomainSampler(store, 32, seed=2), settings, tmp_path / "log.csv",
                        tmp_path / "ckpt.pt", "doge", target_sampler=DomainSampler(val, 32, seed=2, stream=1000))
    captured, seen = {}, {}
    monkeypatch.setattr(loop.optimizer, "step", lambda: captured.update(
        {n: p.grad.clone() for n, p in model.named_parameters()}))
    update = strategy.update
    monkeypatch.setattr(strategy, "update", lambda stats: (seen.update(stats.extra), update(stats))[1])
    loop.train_step(lr=1e-3)
    alpha = strategy.alpha()

    # The target gradient: the mean loss of a held-out batch drawn uniformly from the val split.
    val_tokens = torch.from_numpy(DomainSampler(val, 32, seed=2, stream=1000).sample(np.full(k, 1 / k), 16)[0])
    model.zero_grad()
    F.cross_entropy(model(input_ids=val_tokens[:, :-1]).logits.flatten(0, 1), val_tokens[:, 1:].flatten()).backward()
    expected_target = torch.cat([p.grad.flatten() for p in model.parameters()]).numpy()
    assert np.allclose(seen["target_gradient"], expected_target, atol=1e-6, rtol=1e-4)

    tokens, domains = DomainSampler(store, 32, seed=2).sample(np.full(k, 1 / k), 16)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    clipped_any = False
    for i in np.unique(domains):
        rows = torch.from_numpy(tokens[domains == i])
        model.zero_grad()
        logits = model(input_ids=rows[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
        scale = min(1.0, 0.5 / (float(norm) + 1e-6))
        clipped_any |= scale < 1.0
        for n, p in model.named_parameters():
            expected[n] += alpha[i] * scale * p.grad
    assert clipped_any
    for n in expected:
        assert torch.allclose(captured[n], expected[n], atol=1e-6, rtol=1e-4), n


def test_proxy_trace_average_and_resume(built_data, tmp_path):
    config = doge_config(built_data)
    run = lambda out, stop=None: train(config, "test", "doge", 0, "proxy", out, {}, stop)
    assert run(tmp_path / "whole")
    assert not run(tmp_path / "split", stop=4) and run(tmp_path / "split")
    whole = alphas(tmp_path / "whole")
    assert whole.shape == (10, 6) and np.allclose(whole.sum(axis=1), 1.0)
    assert np.array_equal(whole, alphas(tmp_path / "split"))
    assert np.allclose(read_json(tmp_path / "whole" / "weights.json")["final_weights"], whole.mean(axis=0))
    # Per-domain gradients cover each training token once; the held-out target batch (the
    # default target: the val split) adds as many again. A resume loses no count.
    a, b = (read_json(tmp_path / name / "run.json") for name in ("whole", "split"))
    assert a["token_passes"] == b["token_passes"] == {"forward": 2 * a["tokens"], "backward": 2 * a["tokens"],
                                                      "reference_forward": 0}
    assert a["flops"] == 12 * a["parameters"] * a["tokens"]
    log = pd.read_csv(tmp_path / "whole" / "log.csv")
    assert np.allclose(log[[c for c in log if c.startswith("weight/")]].to_numpy(), 1 / 6)  # sampling uniform


def test_doge_proxy_under_ddp_with_two_gloo_processes(built_data, tmp_path):
    """Small batches over two ranks: some domains are present on one rank only."""
    import subprocess
    import sys

    import yaml

    from conftest import REPO

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(dict(doge_config(built_data), training=dict(
        built_data["training"], batch_size=4, micro_batch_size=2))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "models.train",
           "--config", str(config_file), "--size", "test", "--strategy", "doge", "--seed", "0", "--stage", "proxy",
           "--out", str(tmp_path / "proxy")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trajectory = alphas(tmp_path / "proxy")
    assert trajectory.shape == (10, 6) and np.allclose(trajectory.sum(axis=1), 1.0)


def test_out_of_domain_target_is_excluded_from_training(built_data, tmp_path):
    config = doge_config(built_data, target="qa")
    assert train(config, "test", "doge", 0, "proxy", tmp_path / "proxy", {})
    log = pd.read_csv(tmp_path / "proxy" / "log.csv")
    assert log["tokens/qa"].eq(0).all() and log["weight/qa"].eq(0).all()
    assert alphas(tmp_path / "proxy")[:, -1].max() == 0.0
    assert train(config, "test", "doge", 0, "final", tmp_path / "final", {"proxy": tmp_path / "proxy"})
    final_log = pd.read_csv(tmp_path / "final" / "log.csv")
    assert final_log["tokens/qa"].eq(0).all()
