"""Held-out curves (models/heldout.py) and TensorBoard logging: fixed windows, exact per-domain
losses, curves identical across identical runs and after a resume, and no effect on training."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from strategies import grid_config
from mixbench.errors import ConfigError
from mixbench.io import read_json
from models.heldout import HeldOutEvaluator, HeldOutSet, eval_steps, window_starts
from models.step import StepPasses
from models.train import train


def run(config, out: Path, seed=0, stop_after=None, **training) -> bool:
    config = grid_config.validate(dict(config, training=dict(config["training"], **training)))
    return train(config, "test", "uniform", seed, "final", out, {}, stop_after)


def rows(path: Path, drop=("elapsed_s", "eval_s")) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(open(path))]


def test_windows_are_evenly_spaced_and_the_default_cadence_gives_ten_points():
    assert window_starts(100, 10, 4).tolist() == [0, 30, 60, 90]  # the last one ends at the split's end
    assert window_starts(10, 10, 3).tolist() == [0, 0, 0]
    assert eval_steps(300, None) == 30 and eval_steps(7, None) == 1 and eval_steps(300, 25) == 25


def test_a_val_split_shorter_than_a_window_is_refused_with_its_numbers(capsys):
    store = SimpleNamespace(domains=["a", "b"], arrays=[np.arange(50), np.arange(8)])
    with pytest.raises(ConfigError, match=r"val split of b \(8 tokens\) is shorter than one window of "
                                          r"training.seq_len \+ 1 = 9 tokens.*heldout_windows: 0"):
        HeldOutSet(store, seq_len=8, windows_per_domain=2)
    store.arrays[1] = np.arange(12)
    heldout = HeldOutSet(store, seq_len=8, windows_per_domain=2)
    assert "domain b's val split has 12 tokens, fewer than 2 windows of 9" in capsys.readouterr().err
    assert heldout.tokens.tolist() == [list(range(0, 9)), list(range(41, 50)), list(range(0, 9)), list(range(3, 12))]
    assert heldout.domain_ids.tolist() == [0, 0, 1, 1]


def test_the_domain_loss_is_the_mean_token_cross_entropy_of_its_windows():
    from models.gpt2 import build_model, gpt2_config

    torch.manual_seed(0)
    model = build_model(gpt2_config("test", 64, 0.0, 0, 0))
    store = SimpleNamespace(domains=["a", "b", "c"], arrays=[np.arange(40) % 64, (np.arange(30) * 7) % 64,
                                                             (np.arange(60) * 3) % 64])
    heldout = HeldOutSet(store, seq_len=8, windows_per_domain=3)
    passes = StepPasses(model=model, seq_len=8, num_domains=3, device=torch.device("cpu"), bf16=False, world_size=1,
                        num_parameters=1)
    # Micro-batches of 2 split each domain's windows across batches: the sums must still add up.
    got = HeldOutEvaluator(heldout, passes=passes, micro_batch_size=2, rank=0, world_size=1).domain_loss(model)
    tokens = torch.as_tensor(heldout.tokens)
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(9, 8)
    expected = [loss[heldout.domain_ids == j].mean().item() for j in range(3)]
    assert got == pytest.approx(expected, rel=1e-6)
    assert passes.token_passes == {"forward": 0, "backward": 0}  # a measurement is not training compute
    assert model.training  # back in the mode it was in


def test_val_curves_are_identical_across_identical_runs_and_after_a_resume(built_data, tmp_path):
    assert run(built_data, tmp_path / "a") and run(built_data, tmp_path / "b")
    assert not run(built_data, tmp_path / "split", stop_after=13)
    assert run(built_data, tmp_path / "split")
    curve = rows(tmp_path / "a" / "val.csv")
    assert curve == rows(tmp_path / "b" / "val.csv") == rows(tmp_path / "split" / "val.csv")
    # 30 steps: every 3rd step, ~10 points; tokens and FLOPs so far (a static mixture: 6N per token).
    info = read_json(tmp_path / "a" / "run.json")
    assert [int(r["step"]) for r in curve] == list(range(3, 31, 3))
    assert [int(r["tokens"]) for r in curve] == [s * 8 * 32 for s in range(3, 31, 3)]
    assert [int(r["flops"]) for r in curve] == [6 * info["parameters"] * s * 8 * 32 for s in range(3, 31, 3)]
    domains = built_data["corpus"]["domains"]
    for r in curve:
        losses = [float(r[f"val_loss/{d}"]) for d in domains]
        assert float(r["val_loss"]) == pytest.approx(np.mean(losses), abs=2e-6)
    assert float(curve[-1]["val_loss"]) < float(curve[0]["val_loss"])  # it learns something held out
    assert info["heldout_seconds"] > 0 and info["flops"] == int(curve[-1]["flops"])


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_measuring_changes_nothing_the_run_trains(built_data, tmp_path, dropout):
    assert run(built_data, tmp_path / "often", dropout=dropout, eval_every=1, tensorboard=True)
    assert run(built_data, tmp_path / "never", dropout=dropout, heldout_windows=0)
    drop_time = lambda path: [r[:4] + r[8:] for r in csv.reader(open(path))]  # noqa: E731 (wall times differ)
    assert drop_time(tmp_path / "often" / "log.csv") == drop_time(tmp_path / "never" / "log.csv")
    assert len(rows(tmp_path / "often" / "val.csv")) == 30
    assert not (tmp_path / "never" / "val.csv").exists()
    assert list((tmp_path / "often").glob("events.out.tfevents.*"))


def test_tensorboard_holds_the_train_and_val_curves_and_a_resume_shows_each_step_once(built_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert run(built_data, out, seed=1, tensorboard=True)  # an earlier attempt, then the run from scratch:
    assert not run(built_data, out, stop_after=13, tensorboard=True)  # its events go
    assert run(built_data, out, tensorboard=True)
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # the interrupted part's and the resumed part's
    events = EventAccumulator(str(out)).Reload()
    domains = built_data["corpus"]["domains"]
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "lr", "tokens_per_s"} <= tags
    assert {f"val/loss/{d}" for d in domains} | {f"weights/{d}" for d in domains} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 31))  # steps 11-13 purged, redone
    log = list(csv.DictReader(open(out / "log.csv")))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([float(r["loss"]) for r in log], abs=1e-6)
    curve = rows(out / "val.csv")
    assert [e.step for e in events.Scalars("val/loss")] == [int(r["step"]) for r in curve]
    assert [e.value for e in events.Scalars(f"val/loss/{domains[0]}")] == pytest.approx(
        [float(r[f"val_loss/{domains[0]}"]) for r in curve], abs=1e-6)
