"""Checkpoints are checked before they are trusted and cannot run code when loaded: a damaged
one is moved aside and the previous one (or a fresh start) takes over, saying which; the
state round-trips exactly through safetensors and JSON."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mixbench.io import atomic_path, fsync_dir, remove_stale_temporaries, write_json
from models.checkpoint import (CHECKPOINTS, LEGACY_NAME, STATE, TENSORS, checkpoint_dirs, load_latest,
                               read_checkpoint, save_checkpoint)
from models.train import own_run_folder, train


def test_every_kind_of_state_round_trips_exactly(tmp_path):
    weight = torch.randn(4, 3)
    generator = np.random.default_rng(7)
    state = {
        "model": {"wte": weight, "lm_head": weight, "bias": torch.zeros(3, dtype=torch.bfloat16)},  # tied
        "optimizer": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(2, 2)}},
                      "param_groups": [{"lr": 3e-4, "params": [0], "fused": None, "betas": (0.9, 0.95)}]},
        "rng": torch.get_rng_state(), "numpy_rng": generator.bit_generator.state,  # 128-bit integers
        "weights": np.array([0.25, 0.75]), "counts": np.arange(3, dtype=np.int64), "flag": np.bool_(True),
        "loss": float("nan"), "steps": np.int64(12), "empty": torch.empty(0),
        "ema": np.float32(0.5), "zero_d": np.array(3.0), "transposed": weight.t(),  # a second view of stored memory
    }
    save_checkpoint(tmp_path, 12, state)
    back = read_checkpoint(tmp_path / "step000012")
    assert torch.equal(back["model"]["wte"], weight) and torch.equal(back["model"]["lm_head"], weight)
    assert back["model"]["wte"].data_ptr() != back["model"]["lm_head"].data_ptr()  # tied, but not aliased
    assert len(load_file(tmp_path / "step000012" / TENSORS)) == 13  # 14 tensors and numpy values; the tied weight once
    assert back["model"]["bias"].dtype == torch.bfloat16
    assert set(back["optimizer"]["state"]) == {0} and back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert torch.equal(back["rng"], state["rng"]) and back["numpy_rng"] == generator.bit_generator.state
    assert back["weights"].dtype == np.float64 and back["weights"].tolist() == [0.25, 0.75]
    assert back["counts"].dtype == np.int64 and back["flag"] == np.True_ and np.isnan(back["loss"])
    assert back["steps"] == 12 and type(back["steps"]) is np.int64 and type(back["ema"]) is np.float32
    assert back["zero_d"].shape == () and back["zero_d"] == 3.0 and torch.equal(back["transposed"], weight.t())
    with pytest.raises(TypeError, match=r"state\.bad: a value of type object cannot go"):
        save_checkpoint(tmp_path, 13, {"bad": object()})


def test_only_the_last_two_checkpoints_are_kept(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {"step": step})
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step000020", "step000030"]


def flip_bytes(path: Path, count: int = 400) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(len(data) - 200, size=count, replace=False) + 200:  # past the header: a valid file
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def uninterrupted(built_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("whole") / "run"
    assert train(built_data, "test", "uniform", 2, "final", out, {})
    return load_file(out / "model" / "model.safetensors")


def resumed_model(built_data, out: Path) -> dict:
    assert train(built_data, "test", "uniform", 2, "final", out, {})
    return load_file(out / "model" / "model.safetensors")


def test_flipped_bytes_are_caught_and_the_previous_checkpoint_resumed(built_data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    assert not train(built_data, "test", "uniform", 2, "final", out, {}, stop_after=20)
    bad = out / CHECKPOINTS / "step000020"
    flip_bytes(bad / TENSORS)
    capsys.readouterr()
    final = resumed_model(built_data, out)
    err = capsys.readouterr().err
    assert f"corrupt checkpoint: {bad / TENSORS} has sha256" in err
    assert f"resuming from the previous good checkpoint, {out / CHECKPOINTS / 'step000010'}" in err
    assert "at step 10" in err and (out / CHECKPOINTS / "step000020.corrupt" / TENSORS).exists()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)  # as if never interrupted


def test_truncated_checkpoints_mean_a_fresh_start_that_says_so(built_data, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    assert not train(built_data, "test", "uniform", 2, "final", out, {}, stop_after=20)
    for folder in checkpoint_dirs(out / CHECKPOINTS):
        (folder / TENSORS).write_bytes((folder / TENSORS).read_bytes()[:1000])
    (out / CHECKPOINTS / "step000010" / STATE).write_text('{"step": 10, "tensors_sha')  # and a cut JSON
    capsys.readouterr()
    final = resumed_model(built_data, out)
    err = capsys.readouterr().err
    assert f"{out / CHECKPOINTS / 'step000010' / STATE} cannot be read (JSONDecodeError" in err
    assert f"no good checkpoint is left in {out / CHECKPOINTS}; starting this run over from step 0" in err
    assert "resumed from" not in err and len(list((out / CHECKPOINTS).glob("*.corrupt"))) == 2
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)


class RunsCode:
    """A pickle that, if ever unpickled, leaves a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_is_never_unpickled(built_data, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    payload = pickle.dumps({"model": RunsCode(marker)})
    out.mkdir()
    (out / LEGACY_NAME).write_bytes(payload)  # a checkpoint in the old format
    # And one in the new layout whose checksums match the payload (an attacker can compute them).
    folder = out / CHECKPOINTS / "step000020"
    folder.mkdir(parents=True)
    (folder / TENSORS).write_bytes(payload)
    import hashlib
    import json

    state_sha = hashlib.sha256(json.dumps({}, sort_keys=True).encode()).hexdigest()
    (folder / STATE).write_text(json.dumps({"step": 20, "state": {}, "state_sha256": state_sha,
                                            "tensors_sha256": hashlib.sha256(payload).hexdigest()}))
    assert load_latest(out / CHECKPOINTS) is None
    err = capsys.readouterr().err
    assert f"{out / LEGACY_NAME} is a checkpoint in the old pickle format, which is never loaded" in err
    assert f"corrupt checkpoint: {folder / TENSORS} is not a safetensors file" in err
    assert not marker.exists()
    assert (out / "checkpoint.pt.legacy").exists() and (out / CHECKPOINTS / "step000020.corrupt").exists()


def test_a_new_run_clears_what_a_crashed_write_left_behind(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "eval").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):  # killed mid-write: the temporary is removed...
        with atomic_path(out / "run.json"):
            raise KeyboardInterrupt
    stale = [out / ".log.csv.k2j3.tmp", out / CHECKPOINTS / ".step000009.a8b9.tmp", out / ".model.x7y8.tmp"]
    stale[1].parent.mkdir()
    for path in stale[:2]:  # ...unless the process died before it could clean up
        path.write_text("half")
    stale[2].mkdir()
    (stale[2] / "model.safetensors").write_text("half")
    # Not the trainer's: the evaluation job writes eval/, and .lock.tmp is no temporary of ours.
    keep = [out / "log.csv", out / ".lock.tmp", out / "eval" / ".perplexity.json.c3d4.tmp"]
    for path in keep:
        path.write_text("mine")
    with own_run_folder(out):
        pass
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert f"removed {stale[0]}, left by a write that a crash cut short" in capsys.readouterr().err


def test_the_workflow_clears_temporaries_except_in_run_folders_a_live_trainer_holds(tmp_path):
    from mixbench.runlock import RunLock, held_by_another

    busy, idle = tmp_path / "runs" / "a" / "final", tmp_path / "runs" / "b" / "final"
    for run in (busy, idle):
        (run / "eval").mkdir(parents=True)
        (run / "eval" / ".downstream.json.e5f6.tmp").write_text("half")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".tokens.q1w2.tmp").mkdir()
    with RunLock(busy), RunLock(idle):
        pass  # idle's trainer has finished; busy's is still running below
    with RunLock(busy):
        removed = remove_stale_temporaries(tmp_path, skip=held_by_another)
    assert sorted(removed) == sorted([idle / "eval" / ".downstream.json.e5f6.tmp", tmp_path / "data" / ".tokens.q1w2.tmp"])
    assert (busy / "eval" / ".downstream.json.e5f6.tmp").exists()


def test_atomic_writes_fsync_the_file_and_its_folder_around_the_rename(tmp_path, monkeypatch):
    import os

    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(os.readlink(f"/proc/self/fd/{fd}")))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b)))
    write_json(tmp_path / "out.json", {"a": 1})
    assert calls[-1] == str(tmp_path) and calls[-2] == "rename"  # the rename made durable
    assert calls[-3] == str(tmp_path) and calls[-4].startswith(str(tmp_path / ".out.json."))  # the file, before it
    fsync_dir(tmp_path)
    assert remove_stale_temporaries(tmp_path) == []
