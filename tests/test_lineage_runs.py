"""Lineage of data and runs (mixbench/lineage.py): the tokenizer and token files record what they
were made from and their readers check it; a run records its inputs in run.json and in its
checkpoints, and neither a checkpoint, a finished run of a pack nor an upstream run made from
other inputs is taken for this run's."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from corpus import tokenizer, tokens
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json, write_json
from mixbench.lineage import TRAINING_LOG, differences, file_digest, tokenizer_digest
from models.checkpoint import checkpoint_dirs
from models.run_inputs import run_fingerprint, run_inputs
from models.run_record import RunRecord

RETOKENIZE = "rebuild it with: snakemake --cores 1 --forcerun tokenize_corpus"


def copied_data(built_data: dict, root: Path) -> dict:
    """``built_data``'s config on a copy of its data (times kept) with its own runs folder."""
    config = {**built_data, "data_dir": str(root / "data"), "runs_dir": str(root / "runs")}
    for product in ("corpus", "tokenizer", "tokens"):
        shutil.copytree(Path(built_data["data_dir"]) / product, root / "data" / product)
    return config


def test_the_tokenizer_and_the_token_files_record_what_they_were_made_from(built_data):
    data_dir = Path(built_data["data_dir"])
    corpus = file_digest(data_dir / "corpus" / "manifest.json")
    assert read_json(data_dir / "tokenizer" / "lineage.json") == {"corpus": corpus}
    assert read_json(data_dir / "tokens" / "meta.json")["lineage"] == {
        "corpus": corpus, "tokenizer": tokenizer_digest(data_dir / "tokenizer")}


def test_a_tokenizer_made_from_no_corpus_records_none_even_beside_a_corpus(built_data, tmp_path):
    from test_tokenizer_sources import config_with

    config = config_with(tmp_path, {"kind": "pretrained", "path": str(Path(built_data["data_dir"]) / "tokenizer")})
    write_json(Path(config["data_dir"]) / "corpus" / "manifest.json", {"domains": {}})  # rebuilt later: no matter
    folder = tokenizer.build(config)
    assert read_json(folder / "lineage.json") == {"corpus": None}
    # A model folder's save_pretrained copy of a tokenizer has the data folder's digest.
    assert tokenizer_digest(folder) == tokenizer_digest(Path(built_data["data_dir"]) / "tokenizer")


def test_token_files_of_another_tokenizer_or_corpus_are_refused_whatever_the_times(built_data, tmp_path):
    config = copied_data(built_data, tmp_path)
    data_dir = Path(config["data_dir"])
    TokenStore(data_dir / "tokens", "train")
    # Another tokenizer put in place with an older modification time than the token files:
    # Snakemake, which compares times, would not tokenize again.
    tokenizer_file = data_dir / "tokenizer" / "tokenizer.json"
    before = tokenizer_digest(tokenizer_file.parent)
    content = json.loads(tokenizer_file.read_text())
    content["model"]["merges"] = content["model"]["merges"][:-1]
    tokenizer_file.write_text(json.dumps(content))
    os.utime(tokenizer_file, ns=(0, 0))
    after = tokenizer_digest(tokenizer_file.parent)
    message = (f"{data_dir / 'tokens' / 'meta.json'} was made from other data than the data beside it "
               f"(tokenizer: {before[:12]} -> {after[:12]}); {RETOKENIZE}")
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        TokenStore(data_dir / "tokens", "train")
    shutil.copy2(Path(built_data["data_dir"]) / "tokenizer" / "tokenizer.json", tokenizer_file)
    TokenStore(data_dir / "tokens", "val")
    manifest = data_dir / "corpus" / "manifest.json"
    write_json(manifest, {**read_json(manifest), "rebuilt": True})
    with pytest.raises(DataError, match=r"\(corpus: [0-9a-f]{12} -> [0-9a-f]{12}\); rebuild it with"):
        TokenStore(data_dir / "tokens", "train")
    # ... and the token build refuses the tokenizer, which was made from the corpus before.
    with pytest.raises(DataError, match=r"tokenizer was made from another corpus \(corpus: [0-9a-f]{12} -> "
                                        r"[0-9a-f]{12}\); rebuild it with: snakemake --cores 1 --forcerun "
                                        r"train_tokenizer$"):
        tokens.build(config)


def test_data_built_before_lineage_is_read_with_one_warning(built_data, tmp_path, capsys):
    config = copied_data(built_data, tmp_path)
    data_dir = Path(config["data_dir"])
    meta = data_dir / "tokens" / "meta.json"
    write_json(meta, {key: value for key, value in read_json(meta).items() if key != "lineage"})
    capsys.readouterr()
    TokenStore(data_dir / "tokens", "train")
    TokenStore(data_dir / "tokens", "val")
    assert capsys.readouterr().err == (
        f"warning: {meta} records no lineage (built by an older mixbench): which corpus and tokenizer its token "
        f"ids come from cannot be checked; {RETOKENIZE}\n")
    (data_dir / "tokenizer" / "lineage.json").unlink()
    tokens.build(config)
    assert (f"warning: {data_dir / 'tokenizer'} has no lineage.json (built by an older mixbench): which corpus it "
            f"was made from cannot be checked") in capsys.readouterr().err
    assert read_json(meta)["lineage"]["tokenizer"] == tokenizer_digest(data_dir / "tokenizer")


def test_a_checkpoint_made_from_other_token_files_is_not_resumed(built_data, tmp_path, capsys):
    """After the token files are rebuilt (``snakemake --forcerun build_corpus`` rebuilds them too)
    an interrupted run starts again from step 0 instead of training on old and new token ids."""
    from models.train import train

    config = copied_data(built_data, tmp_path)
    out = tmp_path / "runs" / "uniform"
    run = lambda stop_after=None: train(config, "test", "uniform", 0, "final", out, {}, stop_after)  # noqa: E731
    steps = lambda: [folder.name for folder in checkpoint_dirs(out / "checkpoints")]  # noqa: E731
    assert not run(stop_after=10)
    assert not run(stop_after=12)  # the same inputs: resumed
    assert f"resumed from {out / 'checkpoints' / 'step000010'} at step 10" in capsys.readouterr().err
    assert steps() == ["step000010", "step000012"]
    meta = Path(config["data_dir"]) / "tokens" / "meta.json"
    old = file_digest(meta)
    tokens.build(config)
    new = file_digest(meta)
    assert old != new
    assert not run(stop_after=5)
    err = capsys.readouterr().err
    assert (f"warning: {out / 'checkpoints' / 'step000012'} was made from other inputs (tokens: {old[:12]} -> "
            f"{new[:12]}); removed this run's checkpoints and starting it from scratch") in err
    assert "resumed" not in err and steps() == ["step000005"]  # from step 0
    assert run()
    record = RunRecord.read(out / "run.json")
    fingerprint = run_fingerprint(config, cfg.Run(strategy="uniform", stage="final", size="test", seed=0))
    assert record.inputs == run_inputs(config, fingerprint, {}) == {
        "config": fingerprint, "tokens": new, "tokenizer": tokenizer_digest(Path(config["data_dir"]) / "tokenizer"),
        "upstream": {}}
    upstream_and_pack_checks(config, out, record, old)
    assert f"warning: {out / 'run.json'} records no inputs (an older run)" in capsys.readouterr().err


def upstream_and_pack_checks(config: dict, out: Path, record: RunRecord, old_tokens: str) -> None:
    """A finished run as the run before another one, and as a pack's finished run."""
    from models.train_pack import finished
    from models.upstream import strategy_context

    run = cfg.Run(strategy="uniform", stage="final", size="test", seed=0)
    assert strategy_context(config, run, 30, {"proxy": out}).upstream_weights["proxy"].shape == (6,)
    (out / TRAINING_LOG).touch()  # as models.train's entry point leaves it
    assert finished(out, record.fingerprint, inputs=record.inputs, needs_model=False)
    other = {**record.inputs, "tokens": old_tokens}
    assert not finished(out, record.fingerprint, inputs=other, needs_model=False)
    # Trained on other token files than this data's (a proxy of another corpus): refused.
    dataclasses.replace(record, inputs=other).write(out / "run.json")
    with pytest.raises(DataError, match=f"^upstream run 'proxy' \\({re.escape(str(out))}\\) was trained on other "
                                        f"data than .*\\(tokens: {old_tokens[:12]} -> {record.inputs['tokens'][:12]}\\); "
                                        f"retrain it: remove .* and run the workflow again$"):
        strategy_context(config, run, 30, {"proxy": out})
    dataclasses.replace(record, inputs=None).write(out / "run.json")
    strategy_context(config, run, 30, {"proxy": out})  # an older run: read, with a warning


def test_an_upstream_run_without_inputs_gets_one_warning(built_data, tmp_path, capsys):
    from models.upstream import check_upstream_data

    out = tmp_path / "proxy"
    out.mkdir()
    RunRecord(strategy="doremi", stage="proxy", size="test", steps=6, parameters=0, tokens=0, train_flops=0,
              token_passes={}, train_seconds=0.0, wall_seconds=0.0, config_hash="", git_commit="", seed=0,
              versions={}).write(out / "run.json")
    check_upstream_data(built_data["data_dir"], {"proxy": out})
    assert capsys.readouterr().err == (f"warning: {out / 'run.json'} records no inputs (an older run): whether "
                                       f"upstream run 'proxy' was trained on this data's token files and tokenizer "
                                       f"cannot be checked\n")


def test_a_checkpoint_without_inputs_or_with_others_is_not_this_runs(tmp_path):
    from models.loop_state import CHECKPOINT_FORMAT, Checkpoints

    inputs = {"config": "f", "tokens": "a" * 64, "tokenizer": "b" * 64, "upstream": {"proxy": "c" * 64}}
    checkpoints = Checkpoints(folder=tmp_path, fingerprint="f", inputs=inputs, settings=None, parts=None)
    saved = {"format": CHECKPOINT_FORMAT, "fingerprint": "f"}
    assert "records no inputs" in checkpoints._not_this_runs(saved)
    assert "records no inputs" in checkpoints._not_this_runs({**saved, "inputs": None})
    assert checkpoints._not_this_runs({**saved, "inputs": inputs}) is None
    moved = {**inputs, "upstream": {"proxy": "d" * 64}}
    assert checkpoints._not_this_runs({**saved, "inputs": moved}) == (
        f"was made from other inputs (upstream.proxy: {'d' * 12} -> {'c' * 12})")
    assert differences(moved, inputs) == [f"upstream.proxy: {'d' * 12} -> {'c' * 12}"]


def test_the_tokenizer_digest_is_the_same_whichever_tokenizers_release_saved_the_merges(tmp_path):
    from mixbench.lineage import tokenizer_digest

    def saved(folder, merges, vocab=None):
        folder.mkdir()
        model = {"type": "BPE", "vocab": vocab or {"a": 0, "b": 1, "ab": 2}, "merges": merges}
        (folder / "tokenizer.json").write_text(json.dumps({"model": model, "added_tokens": [], "version": "1.0"}))
        return folder

    pairs = tokenizer_digest(saved(tmp_path / "pairs", [["a", "b"]]))
    assert tokenizer_digest(saved(tmp_path / "strings", ["a b"])) == pairs
    assert tokenizer_digest(saved(tmp_path / "other", [["b", "a"]])) != pairs
    assert tokenizer_digest(saved(tmp_path / "vocab", [["a", "b"]], {"a": 0, "b": 1, "ba": 2})) != pairs
