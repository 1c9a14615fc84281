"""run.json as one typed record (models/run_record.py), and the loop's checkpoint state as
explicit dataclasses (models/loop_state.py): what each saves, and what each refuses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mixbench.errors import DataError
from models.run_record import RunRecord, Throughput

# The keys of a training run's run.json, in the order models/train.py has always written them.
TRAINING_KEYS = ["strategy", "stage", "size", "steps", "fingerprint", "parameters", "tokens", "train_flops",
                 "token_passes", "flops", "train_seconds", "wall_seconds", "heldout_seconds", "device", "processes",
                 "micro_batch_size", "tokens_per_second", "mfu", "peak_tflops", "peak_memory_gib",
                 "memory_estimate_gib", "config_hash", "git_commit", "seed", "versions"]
PROVENANCE = {"config_hash": "abc123abc123", "git_commit": "0" * 40, "seed": 1, "versions": {"torch": "2.13.0"}}


def fit_record(**changes) -> RunRecord:
    """A fit stage's record, as models/fit.py writes it."""
    return dataclasses.replace(RunRecord(strategy="regmix", stage="fit", size="test", steps=0, parameters=0, tokens=0,
                                         train_flops=0, token_passes={}, flops=0, train_seconds=0.0, wall_seconds=8.1,
                                         heldout_seconds=0.0, **PROVENANCE), **changes)


def test_a_training_run_s_record_has_run_json_s_keys_in_order_and_reads_back():
    speed = Throughput(device="cpu", processes=2, micro_batch_size=4, tokens_per_second=812.5, mfu=None,
                       peak_tflops=None, peak_memory_gib=1.25, memory_estimate_gib=0.5)
    record = fit_record(stage="final", steps=30, fingerprint="f" * 12, parameters=30_000, tokens=7680,
                        train_flops=6 * 30_000 * 7680, token_passes={"forward": 7680, "backward": 7680},
                        flops=6 * 30_000 * 7680, heldout_seconds=0.4, throughput=speed)
    on_disk = record.to_json()
    assert list(on_disk) == TRAINING_KEYS
    assert on_disk["mfu"] is None and on_disk["processes"] == 2  # a speed's None stays: the key is always there
    assert RunRecord.from_json(on_disk) == record


def test_a_fit_record_leaves_out_what_a_fit_has_not_and_an_older_record_reads():
    on_disk = fit_record().to_json()
    assert list(on_disk) == [k for k in TRAINING_KEYS if k not in
                             {"fingerprint", "device", "processes", "micro_batch_size", "tokens_per_second", "mfu",
                              "peak_tflops", "peak_memory_gib", "memory_estimate_gib"}]
    # A run written before overheads and held-out time were counted (tests/run_fixture.py's too).
    older = {k: v for k, v in on_disk.items() if k not in ("flops", "heldout_seconds")} | {"train_flops": 12}
    record = RunRecord.from_json(older)
    assert record.flops is None and record.heldout_seconds is None and record.total_flops == 12
    assert list(record.to_json()) == list(older)


def test_a_file_that_is_not_a_run_record_is_refused_with_what_it_lacks():
    on_disk = fit_record().to_json()
    with pytest.raises(DataError, match=r"runs/x/run.json is not a run record: missing \['steps'\], "
                                        r"unknown \['step'\]"):
        RunRecord.from_json({**{k: v for k, v in on_disk.items() if k != "steps"}, "step": 3}, where="runs/x/run.json")
    with pytest.raises(DataError, match=r"records \['device'\] of a run's speed but not \['memory_estimate_gib'"):
        RunRecord.from_json({**on_disk, "device": "cpu"})


class CountingStrategy:
    """The part of a strategy a checkpoint touches: its state dict."""

    def __init__(self, seen: int = 0):
        self.seen = seen

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


def checkpoints(folder, fingerprint: str, seed: int):
    from models.loop_state import CheckpointParts, Checkpoints
    from models.optim import LoopSettings, make_scheduler

    settings = LoopSettings(steps=10, batch_size=2, micro_batch_size=1, seq_len=4, lr=0.1, min_lr_ratio=0.1,
                            warmup_steps=2, weight_decay=0.0, beta1=0.9, beta2=0.95, grad_clip=1.0, checkpoint_every=5)
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = CheckpointParts(model=model, optimizer=optimizer, scheduler=make_scheduler(optimizer, settings),
                            strategy=CountingStrategy(), providers=[], token_passes={"forward": 0, "backward": 0})
    return Checkpoints(folder=folder, fingerprint=fingerprint, settings=settings, parts=parts)


def test_a_checkpoint_saves_the_loop_s_state_and_parts_and_restores_them_into_fresh_ones(tmp_path, capsys):
    from models.loop_state import LoopState

    saved = checkpoints(tmp_path, "config-a", seed=0)
    saved.parts.strategy.seen = 7
    saved.parts.token_passes.update(forward=96, backward=96, reference_forward=96)
    saved.parts.optimizer.step()
    saved.parts.scheduler.step()
    state = LoopState(weights=np.array([0.25, 0.75]), step=5, tokens_seen=96, elapsed=1.5, heldout_seconds=0.25)
    saved.save(state, logs=[])
    rng_after_save = torch.rand(3)

    fresh, into = checkpoints(tmp_path, "config-a", seed=1), LoopState(weights=np.array([0.5, 0.5]))
    assert fresh.resume(into)
    assert into == LoopState(weights=into.weights, step=5, tokens_seen=96, elapsed=1.5, heldout_seconds=0.25)
    assert into.weights.tolist() == [0.25, 0.75] and into.weights.dtype == np.float64
    assert fresh.parts.strategy.seen == 7 and fresh.parts.scheduler.last_epoch == 1
    assert fresh.parts.token_passes == {"forward": 96, "backward": 96, "reference_forward": 96}
    for mine, theirs in zip(fresh.parts.model.parameters(), saved.parts.model.parameters()):
        assert torch.equal(mine, theirs)
    assert torch.equal(torch.rand(3), rng_after_save)  # the RNG goes on as it went on after the save
    # Another configuration's checkpoint is removed, not resumed.
    other = LoopState(weights=np.array([0.5, 0.5]))
    assert not checkpoints(tmp_path, "config-b", seed=1).resume(other)
    assert other.step == 0 and not list(tmp_path.glob("step*"))
    assert "written under a different configuration" in capsys.readouterr().err


def test_resuming_a_log_with_other_columns_refuses_rather_than_dropping_its_rows(tmp_path):
    from models.runlog import StepLog

    path = tmp_path / "log.csv"
    log = StepLog(path, ["a", "b"], 0)  # a log begun without loss_weight/<d> columns
    for step in (1, 2):
        log.write(step, 1e-3, 4.0, 64 * step, 0.1 * step, 0.1, 640.0, None, np.full(2, 4.0), np.full(2, 32),
                  np.full(2, 0.5))
    log.close()
    before = path.read_text()
    with pytest.raises(DataError, match=r"lacks columns this run writes \(loss_weight/a, loss_weight/b\)"):
        StepLog(path, ["a", "b"], 2, loss_weights=True)
    assert path.read_text() == before
    StepLog(path, ["a", "b"], 2).close()  # the same columns resume as before
    assert path.read_text() == before
