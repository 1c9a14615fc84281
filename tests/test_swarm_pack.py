"""Packs of a swarm's runs (`pack` on a fan-out stage's entry, models/train_pack.py): which runs
each job trains, where `pack` and `save_model` may be set, that neither changes a run's
fingerprint, and which runs a pack trains and which it finds finished. The packed runs' outputs
against runs of their own, and the workflow's packs: tests/test_regmix_workflow.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import make_test_config
from mixbench import config as cfg
from strategies import grid_config
from strategies import runs as strategy_runs
from mixbench.errors import ConfigError
from models.run_record import RunRecord


def regmix_config(tmp_path, runs=7, **swarm) -> dict:
    regmix = {"swarm_runs": runs, "folds": 4, "stages": {"swarm": {"size": "test", "steps": 6, **swarm}}}
    return grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]}, strategies={"regmix": regmix}))


def swarm(*indices) -> tuple[str, ...]:
    return tuple(f"swarm-{r}" for r in indices)


def test_packs_split_the_swarm_into_consecutive_runs(tmp_path):
    config = regmix_config(tmp_path, pack=3)
    assert sorted({strategy_runs.pack_of(config, "regmix", f"swarm-{r}") for r in range(7)}) == [
        swarm(0, 1, 2), swarm(3, 4, 5), swarm(6)]
    assert strategy_runs.pack_of(config, "regmix", "final") == ("final",) and cfg.stage_pack(config, "regmix", "final") == 1
    # A pack larger than the swarm is the whole swarm in one job; by default one job per run.
    assert strategy_runs.pack_of(regmix_config(tmp_path, pack=64), "regmix", "swarm-4") == swarm(*range(7))
    assert strategy_runs.pack_of(regmix_config(tmp_path), "regmix", "swarm-4") == swarm(4)
    with pytest.raises(ConfigError, match=r"no run 'swarm-7'; its runs: swarm-0 … swarm-6 \(7 runs\)"):
        strategy_runs.pack_of(config, "regmix", "swarm-7")


def test_pack_and_save_model_change_no_run_fingerprint(tmp_path):
    from models.run_factory import run_fingerprint

    plain, packed = regmix_config(tmp_path), regmix_config(tmp_path, pack=4, save_model=True)
    for stage in ("swarm-2", "fit", "final"):
        run = cfg.Run(strategy="regmix", stage=stage, size="test", seed=0)
        assert run_fingerprint(plain, run) == run_fingerprint(packed, run)
    assert cfg.stage_saves_model(packed, "regmix", "swarm-2") and not cfg.stage_saves_model(plain, "regmix", "swarm-2")
    assert cfg.stage_saves_model(plain, "regmix", "final")


@pytest.mark.parametrize("overrides, message", [
    ({"stages": {"proxy": {"pack": 2}}},
     r"^invalid configuration: stages.proxy.pack: `pack` applies to the runs of a fan-out stage \(swarm\) only, "
     r"not to 'proxy'$"),
    ({"strategies": {"doremi": {"stages": {"reference": {"save_model": False}}}}},
     r"strategies.doremi.stages.reference.save_model: `save_model` applies to the runs of a fan-out stage"),
    ({"strategies": {"regmix": {"stages": {"swarm": {"pack": 0}}}}},
     r"strategies.regmix.stages.swarm.pack: 0 is less than the minimum of 1"),
    ({"strategies": {"regmix": {"stages": {"swarm": {"pack": 2.5}}}}},
     r"strategies.regmix.stages.swarm.pack: 2.5 is not of type 'integer', 'null'"),
])
def test_pack_and_save_model_are_checked_before_any_job(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix", "doremi"]}, **overrides))


def finished_run(out, fingerprint: str | None, inputs: dict | None = None) -> None:
    """run.json as a finished run leaves it (models/run_record.py); fingerprint or inputs None: a
    run recorded before runs kept them."""
    RunRecord(strategy="regmix", stage=out.name, size="test", steps=6, parameters=0, tokens=0, train_flops=0,
              token_passes={}, train_seconds=0.0, wall_seconds=0.0, config_hash="", git_commit="", seed=0, versions={},
              fingerprint=fingerprint, inputs=inputs).write(out / "run.json")


def stand_in_data(config: dict) -> Path:
    """The token files' meta.json and the tokenizer a run's inputs name (models/run_inputs.py)."""
    data_dir = Path(config["data_dir"])
    (data_dir / "tokens").mkdir(parents=True, exist_ok=True)
    (data_dir / "tokenizer").mkdir(parents=True, exist_ok=True)
    (data_dir / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}, "merges": []}}')
    (data_dir / "tokens" / "meta.json").write_text("{}")
    return data_dir / "tokens" / "meta.json"


def test_a_pack_trains_its_unfinished_runs_in_turn_and_stops_with_a_stopped_run(tmp_path, monkeypatch, capsys):
    import models.train_pack as pack_job

    config = regmix_config(tmp_path, pack=3)
    meta = stand_in_data(config)
    calls = []

    def fake_train(config, size, strategy, seed, stage, out, upstream, stop_after):
        """Stops swarm-1 when asked to stop; otherwise finishes the run as models.train does. Like
        the training loop, it leaves a SIGTERM handler behind that only records the signal."""
        calls.append(stage)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        if stage == "swarm-1" and stop_after:
            return False
        run = cfg.Run(strategy=strategy, stage=stage, size=size, seed=seed)
        fingerprint = pack_job.run_fingerprint(config, run)
        finished_run(out, fingerprint, pack_job.run_inputs(config, fingerprint, upstream))
        return True

    monkeypatch.setattr(pack_job, "train", fake_train)
    runs = list(swarm(0, 1, 2))
    assert pack_job.train_pack(config, "test", "regmix", 0, runs, {}, stop_after=5) is None  # stopped in swarm-1
    assert calls == ["swarm-0", "swarm-1"]
    record = pack_job.train_pack(config, "test", "regmix", 0, runs, {})  # resumed: swarm-0 is not trained again
    assert calls[2:] == ["swarm-1", "swarm-2"] and record["trained"] == ["swarm-1", "swarm-2"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # between runs a signal ends the job at once
    assert record["skipped"] == ["swarm-0"] and record["runs"] == runs
    # A run finished under another configuration of it is trained again, and so is one recorded
    # before runs kept their fingerprint or their inputs, runs made from other token files, and one
    # without the model folder that save_model asks for.
    folder = tmp_path / "runs" / "test" / "regmix" / "seed0"
    finished_run(folder / "swarm-1", "0123456789ab")
    finished_run(folder / "swarm-2", None)
    record = pack_job.train_pack(config, "test", "regmix", 0, runs, {})
    assert record["trained"] == ["swarm-1", "swarm-2"] and record["skipped"] == ["swarm-0"]
    assert "swarm-2/run.json records no fingerprint (an older run): trained again" in capsys.readouterr().err
    finished_run(folder / "swarm-0", pack_job.run_fingerprint(config, cfg.Run(strategy="regmix", stage="swarm-0",
                                                                                size="test", seed=0)))
    record = pack_job.train_pack(config, "test", "regmix", 0, runs, {})
    assert record["trained"] == ["swarm-0"] and "swarm-0/run.json records no inputs" in capsys.readouterr().err
    meta.write_text('{"rebuilt": true}')  # rebuilt token files, whatever their modification time
    os.utime(meta, (0, 0))
    record = pack_job.train_pack(config, "test", "regmix", 0, runs, {})
    assert record["trained"] == runs and "was made from other inputs (tokens: " in capsys.readouterr().err
    saving = regmix_config(tmp_path, pack=3, save_model=True)
    record = pack_job.train_pack(saving, "test", "regmix", 0, runs, {})
    assert record["trained"] == runs and "has no model folder" in capsys.readouterr().err
    # A stop signal that comes while a run saves its outputs (after its last step) ends the pack there.
    def stopped_while_saving(config, size, strategy, seed, stage, out, upstream, stop_after):
        calls.append(stage)
        pack_job.StopRequested.received = True
        return True

    monkeypatch.setattr(pack_job, "train", stopped_while_saving)
    calls.clear()
    assert pack_job.train_pack(saving, "test", "regmix", 0, runs, {}) is None and calls == ["swarm-0"]
    with pytest.raises(ConfigError, match="swarm-3 swarm-4 is not a pack of 'regmix' with pack 3: expected swarm-3 "
                                          "swarm-4 swarm-5"):
        pack_job.train_pack(config, "test", "regmix", 0, list(swarm(3, 4)), {})
