"""The training loop: outputs, exact resumption, weight validation and NaN detection."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import strategies
from strategies import grid_config
from mixbench.errors import TrainingError
from mixbench.io import read_json
from models.train import train
from strategies.base import Strategy


class OffSimplexAtStepThree(Strategy):
    """Returns a valid vector for two steps, then one that does not sum to 1."""

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def update(self, stats):
        w = self.initial_weights()
        return w if stats.step < 3 else w * 0.5


class EqualLossWeights(Strategy):
    """Uniform sampling with an explicit all-equal loss weighting: must match plain uniform."""

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def loss_weights(self):
        return np.full(len(self.context.domains), 7.0)


def with_strategies(config: dict, monkeypatch, **registered) -> dict:
    for name, target in registered.items():
        monkeypatch.setitem(strategies.REGISTRY, name, target)
    return grid_config.validate(dict(config, grid=dict(config["grid"], strategies=["uniform", *registered])))


def run(config, out: Path, strategy="uniform", seed=0, stop_after=None) -> bool:
    return train(config, "test", strategy, seed, "final", out, {}, stop_after)


def final_state(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "model" / "model.safetensors")


def test_a_run_saves_a_loadable_model_log_weights_and_provenance(built_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    assert run(built_data, out, strategy="natural")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.n_layer == 1 and len(tok) == model.config.vocab_size
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    domains = built_data["corpus"]["domains"]
    assert all(f"loss/{d}" in rows[0] and f"weight/{d}" in rows[0] and f"tokens/{d}" in rows[0] for d in domains)
    assert int(rows[-1]["tokens"]) == 30 * 8 * 32
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns something
    weights = read_json(out / "weights.json")
    tokens = read_json(Path(built_data["data_dir"]) / "tokens" / "meta.json")["domains"]
    natural = np.array([tokens[d]["train"]["tokens"] for d in domains], dtype=float)
    assert np.allclose(weights["final_weights"], natural / natural.sum())
    info = read_json(out / "run.json")
    assert info["seed"] == 0 and info["tokens"] == 30 * 8 * 32 and len(info["config_hash"]) == 12
    assert info["train_flops"] == 6 * info["parameters"] * info["tokens"]
    # A static mixture adds nothing: one forward and one backward pass per training token.
    assert info["token_passes"] == {"forward": info["tokens"], "backward": info["tokens"]}
    assert info["flops"] == info["train_flops"]
    assert not list((out / "checkpoints").glob("step*"))  # the model supersedes them
    # Speed and memory: on a CPU there is no peak FLOP/s to measure MFU against.
    assert all(float(r["tokens_per_s"]) > 0 and r["mfu"] == "" for r in rows)
    assert info["device"] == "cpu" and info["processes"] == 1 and info["micro_batch_size"] == 4
    # train_seconds is rounded to 0.01 s: the rate lies within what that rounding allows.
    seconds = info["train_seconds"]
    assert info["tokens"] / (seconds + 0.005) - 0.1 <= info["tokens_per_second"] <= info["tokens"] / (seconds - 0.005) + 0.1
    assert info["mfu"] is None and info["peak_tflops"] is None
    assert 0 < info["memory_estimate_gib"] < info["peak_memory_gib"]  # the whole process's RSS on a CPU


def test_mfu_is_the_model_flops_rate_over_the_given_peak(built_data, tmp_path):
    from models.throughput import model_flops_per_token

    config = grid_config.validate(dict(built_data, training=dict(built_data["training"], steps=5, peak_tflops=0.001)))
    assert train(config, "test", "uniform", 0, "final", tmp_path / "run", {})
    info = read_json(tmp_path / "run" / "run.json")
    per_token = model_flops_per_token(info["parameters"], 1, 32, 32)  # the test size: 1 layer, 32 wide
    assert info["mfu"] == pytest.approx(info["tokens_per_second"] * per_token / 1e9, rel=0.01)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    for row in rows:
        assert float(row["mfu"]) == pytest.approx(float(row["tokens_per_s"]) * per_token / 1e9, rel=0.01, abs=1e-4)


@pytest.mark.parametrize("dropout", [0.0, 0.1])  # with dropout the RNG state must come back too
def test_resumed_run_ends_with_the_same_weights_and_log(built_data, tmp_path, dropout):
    config = grid_config.validate(dict(built_data, training=dict(built_data["training"], dropout=dropout)))
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run(config, whole, seed=3)
    assert not run(config, split, seed=3, stop_after=13)  # stops between checkpoints (every 10)
    # The scheduled checkpoint and the one written on stopping: the last two are kept.
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step000010", "step000013"]
    assert not (split / "run.json").exists()
    assert run(config, split, seed=3)
    a, b = final_state(whole), final_state(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop_time = lambda path: [r[:4] + r[8:] for r in csv.reader(open(path))]  # wall times and speeds differ
    assert drop_time(whole / "log.csv") == drop_time(split / "log.csv")


def test_different_seeds_give_different_models_and_same_seed_same_init(built_data, tmp_path):
    assert run(built_data, tmp_path / "a", seed=0) and run(built_data, tmp_path / "b", seed=1)
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert not torch.equal(a["transformer.h.0.mlp.c_fc.weight"], b["transformer.h.0.mlp.c_fc.weight"])


def test_equal_loss_weights_train_exactly_like_no_loss_weights(built_data, tmp_path, monkeypatch):
    config = with_strategies(built_data, monkeypatch, equal="test_training:EqualLossWeights")
    assert run(config, tmp_path / "plain") and run(config, tmp_path / "weighted", strategy="equal")
    a, b = final_state(tmp_path / "plain"), final_state(tmp_path / "weighted")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_weights_off_the_simplex_stop_training_naming_strategy_and_step(built_data, tmp_path, monkeypatch):
    config = with_strategies(built_data, monkeypatch, offsimplex="test_training:OffSimplexAtStepThree")
    with pytest.raises(TrainingError, match="strategy 'offsimplex' at step 3 returned weights summing to 0.5"):
        run(config, tmp_path / "run", strategy="offsimplex")


def test_nan_loss_names_the_step_and_domains(built_data, tmp_path, monkeypatch):
    import models.gpt2

    original = models.gpt2.build_model

    def poisoned(config, device="cpu"):
        model = original(config, device)
        with torch.no_grad():
            model.transformer.ln_f.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr("models.run_factory.build_model", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1 on domain\(s\) \['code'"):
        run(built_data, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    from models.optim import lr_factor

    assert [lr_factor(i, 4, 20, 0.1) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_log_resume_drops_rows_after_the_checkpoint_and_half_written_rows(tmp_path):
    from models.runlog import StepLog

    log = StepLog(tmp_path / "log.csv", ["a", "b"], resume_step=0)
    for step in range(1, 6):
        log.write(step, 0.1, 1.0, step * 10, 0.5, 0.1, 100.0, None if step % 2 else 0.25, np.array([1.0, np.nan]),
                  np.array([10, 0]), np.array([1.0, 0.0]))
    log.close()
    with open(tmp_path / "log.csv", "a") as f:
        f.write("6,0.1,1.0")  # killed mid-row
    StepLog(tmp_path / "log.csv", ["a", "b"], resume_step=3).close()
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert [r[0] for r in rows] == ["step", "1", "2", "3"]
    assert rows[1][6:] == ["100.0", "", "1.000000", "", "10", "0", "1.00000000", "0.00000000"]  # no MFU: empty
    assert rows[2][6:8] == ["100.0", "0.2500"]


def test_logs_reach_the_disk_every_n_steps_or_s_seconds(built_data, tmp_path):
    from models.runlog import FlushPolicy

    now = [0.0]
    policy = FlushPolicy(every_steps=3, every_seconds=10.0, clock=lambda: now[0])
    assert [policy.due() for _ in range(7)] == [False, False, True, False, False, True, False]
    now[0] = 10.0  # ten seconds later: due at the next step, however few steps came since
    assert policy.due() and not policy.due()
    # A loop flushing every 2 steps, checkpointing never: after 3 steps a reader sees 2 rows on
    # disk while the loop still holds the file open.
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from strategies import StrategyContext, get_strategy_class

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    context = StrategyContext(name="uniform", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="final", total_steps=10, seed=0, vocab_size=store.vocab_size)
    settings = LoopSettings.from_config(dict(built_data["training"], checkpoint_every=100, log_flush_steps=2,
                                             log_flush_seconds=3600.0), steps=10)
    loop = TrainingLoop(model=build_model(gpt2_config("test", store.vocab_size)),
                        strategy=get_strategy_class("uniform")(context), sampler=DomainSampler(store, 32, seed=4),
                        settings=settings, log_path=tmp_path / "log.csv",
                        checkpoint_dir=tmp_path / "checkpoints", strategy_name="uniform")
    on_disk = []
    write = loop.logs.steps.write

    def write_and_look(*args):  # lines on disk before each step's row is written
        on_disk.append(len((tmp_path / "log.csv").read_text().splitlines()))
        write(*args)

    loop.logs.steps.write = write_and_look
    loop.run(stop_after=4)
    # A step's row is written at the next step (its losses reach the host behind it), so the flush
    # after step 2 writes the header and row 1, the one after step 4 rows 2 and 3, and the
    # checkpoint at step 4 writes row 4 first.
    assert on_disk == [0, 2, 2, 4]


def test_a_checkpoint_of_another_configuration_is_not_resumed(built_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert not run(built_data, out, stop_after=12)
    changed = grid_config.validate(dict(built_data, training=dict(built_data["training"], lr=1e-3)))
    assert run(changed, out)
    assert "written under a different configuration" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert run(changed, fresh)
    a, b = final_state(out), final_state(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Operational fields do not invalidate a checkpoint.
    assert not run(built_data, tmp_path / "ops", stop_after=12)
    more_threads = grid_config.validate(dict(built_data, training=dict(built_data["training"], threads=2, checkpoint_every=5)))
    assert run(more_threads, tmp_path / "ops")
    assert "different configuration" not in capsys.readouterr().err


def test_gradient_accumulation_matches_one_big_batch(built_data, tmp_path):
    one = grid_config.validate(dict(built_data, training=dict(built_data["training"], micro_batch_size=8)))
    four = grid_config.validate(dict(built_data, training=dict(built_data["training"], micro_batch_size=2)))
    assert run(one, tmp_path / "one") and run(four, tmp_path / "four")
    a, b = final_state(tmp_path / "one"), final_state(tmp_path / "four")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


class OneHotLossWeights(Strategy):
    """Uniform sampling, but only domain 0's tokens count in the objective."""

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def loss_weights(self):
        return np.eye(len(self.context.domains))[0]


@pytest.mark.filterwarnings("ignore:Seems like .optimizer.step")
def test_loss_weights_select_the_domains_the_gradient_comes_from(built_data, tmp_path, monkeypatch):
    """The step's gradient must equal the gradient of the mean token loss over domain 0's rows."""
    import torch.nn.functional as F

    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings, TrainingLoop
    from strategies import StrategyContext

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    context = StrategyContext(name="onehot", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="final", total_steps=1, seed=0, vocab_size=store.vocab_size)
    settings = LoopSettings.from_config(dict(built_data["training"], grad_clip=0.0, batch_size=16), steps=1)
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", store.vocab_size))
    loop = TrainingLoop(model=model, strategy=OneHotLossWeights(context), sampler=DomainSampler(store, 32, seed=4),
                        settings=settings, log_path=tmp_path / "log.csv", checkpoint_dir=tmp_path / "checkpoints",
                        strategy_name="onehot")
    captured = {}
    monkeypatch.setattr(loop.optimizer, "step", lambda: captured.update(
        {n: p.grad.clone() for n, p in model.named_parameters()}))
    loop.train_step(lr=1e-3)

    step_rows = DomainSampler(store, 32, seed=4).step_batch(np.full(len(store.domains), 1 / len(store.domains)), 16, 1)
    rows = torch.from_numpy(step_rows.tokens[step_rows.domains == 0])
    assert 0 < len(rows) < 16
    model.zero_grad()
    logits = model(input_ids=rows[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(captured[name], p.grad, atol=1e-6, rtol=1e-4), name
