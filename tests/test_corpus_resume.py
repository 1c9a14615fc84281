"""A corpus build stopped part-way resumes after the last input it finished and gives the same
splits and manifest as a build that never stopped; with other settings it starts afresh."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from conftest import FIXTURE_CORPUS, make_test_config
from corpus import build, progress, sources
from corpus.records import Finished, Record
from corpus.spool import SPLITS
from mixbench import config as cfg


class Interrupted(Exception):
    """Stands for a kill: nothing after it runs."""


def shuffled_parts(folder: Path, parts: int = 3) -> Path:
    """The fixture corpus shuffled (every part holds every domain) into ``parts`` jsonl files."""
    lines = FIXTURE_CORPUS.read_text().splitlines(keepends=True)
    random.Random(0).shuffle(lines)
    folder.mkdir(parents=True)
    for index in range(parts):
        (folder / f"part{index}.jsonl").write_text("".join(lines[index::parts]))
    return folder


def config_for(root: Path, **corpus) -> dict:
    return cfg.validate(make_test_config(root, corpus=corpus))


def built(config: dict) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {domain/split: bytes}) of the corpus folder as the build left it."""
    out = Path(config["data_dir"]) / "corpus"
    files = {f"{d}/{s}": (out / d / f"{s}.jsonl").read_bytes() for d in config["corpus"]["domains"] for s in SPLITS}
    return json.loads((out / "manifest.json").read_text()), files


def interrupt_after(monkeypatch, finished: int, then_records: int) -> None:
    """Make the next build's read stop ``then_records`` records after its ``finished``-th input."""
    real = sources.records

    def stopping(corpus, position=None):
        done = seen = 0
        for item in real(corpus, position):
            yield item
            done += isinstance(item, Finished)
            seen += done == finished and isinstance(item, Record)
            if seen == then_records:
                raise Interrupted

    monkeypatch.setattr(build, "records", stopping)


def counting_records(monkeypatch) -> list:
    """Record what the next builds read."""
    real, read = sources.records, []

    def counting(corpus, position=None):
        for item in real(corpus, position):
            read.append(item)
            yield item

    monkeypatch.setattr(build, "records", counting)
    return read


@pytest.fixture
def save_at_every_input(monkeypatch):
    monkeypatch.setattr(progress, "SAVE_EVERY_S", 0.0)


def test_a_killed_build_resumes_after_its_last_finished_file_into_the_same_corpus(tmp_path, monkeypatch, capsys,
                                                                                  save_at_every_input):
    parts = shuffled_parts(tmp_path / "input")
    # Caps that bind in the second file: its rewrites (duplicates dropped at the cap) happen after
    # the save the resume starts from.
    settings = {"path": str(parts / "*.jsonl"), "max_bytes_per_domain": 35000}
    whole = config_for(tmp_path / "whole", **settings)
    build.build(whole)
    expected = built(whole)
    assert any(e["cap_reached"] for e in expected[0]["domains"].values())

    stopped = config_for(tmp_path / "stopped", **settings)
    interrupt_after(monkeypatch, finished=1, then_records=100)
    with pytest.raises(Interrupted):
        build.build(stopped)
    partial = Path(stopped["data_dir"]) / "corpus.partial"
    assert json.loads((partial / "progress.json").read_text())["finished"] == str(parts / "part0.jsonl")
    assert not (Path(stopped["data_dir"]) / "corpus").exists()

    read = counting_records(monkeypatch)
    build.build(stopped)
    assert "resuming the corpus build after " + str(parts / "part0.jsonl") in capsys.readouterr().err
    # Only the files after the first were read again, and the corpus is the uninterrupted one.
    lines = sum(len((parts / f"part{i}.jsonl").read_text().splitlines()) for i in (1, 2))
    assert sum(isinstance(item, Record) for item in read) == lines
    assert built(stopped) == expected
    assert not partial.exists()


def test_an_unfinished_build_with_other_settings_is_never_resumed(tmp_path, monkeypatch, capsys, save_at_every_input):
    parts = shuffled_parts(tmp_path / "input")
    root = tmp_path / "changed"
    interrupt_after(monkeypatch, finished=1, then_records=10)
    with pytest.raises(Interrupted):
        build.build(config_for(root, path=str(parts / "*.jsonl"), max_bytes_per_domain=35000))
    read = counting_records(monkeypatch)
    changed = config_for(root, path=str(parts / "*.jsonl"), max_bytes_per_domain=30000)
    build.build(changed)
    assert "other settings (corpus.max_bytes_per_domain); starting afresh" in capsys.readouterr().err
    assert sum(isinstance(item, Record) for item in read) == 360  # every file read again
    fresh = config_for(tmp_path / "fresh", path=str(parts / "*.jsonl"), max_bytes_per_domain=30000)
    build.build(fresh)
    assert built(changed) == built(fresh)

    # An input file that changed since the stop is a change of settings too.
    interrupt_after(monkeypatch, finished=1, then_records=10)
    with pytest.raises(Interrupted):
        build.build(changed)
    with open(parts / "part2.jsonl", "a") as f:
        f.write(json.dumps({"domain": "code", "text": "one more document"}) + "\n")
    monkeypatch.setattr(build, "records", sources.records)
    build.build(changed)
    assert "other settings (inputs)" in capsys.readouterr().err


def test_a_build_stopped_while_writing_its_splits_does_not_read_again(tmp_path, monkeypatch, capsys):
    from corpus.spool import DomainSpool

    parts = shuffled_parts(tmp_path / "input")
    whole = config_for(tmp_path / "whole", path=str(parts / "*.jsonl"))
    build.build(whole)
    stopped = config_for(tmp_path / "stopped", path=str(parts / "*.jsonl"))
    real, written = DomainSpool.write_splits, []

    def stopping(spool, *args, **kwargs):
        if len(written) == 2:
            raise Interrupted
        written.append(spool.domain)
        return real(spool, *args, **kwargs)

    monkeypatch.setattr(DomainSpool, "write_splits", stopping)
    with pytest.raises(Interrupted):
        build.build(stopped)
    monkeypatch.setattr(DomainSpool, "write_splits", real)
    read = counting_records(monkeypatch)
    build.build(stopped)
    assert "resuming the corpus build after the whole read" in capsys.readouterr().err and read == []
    assert built(stopped) == built(whole)


def test_the_build_s_time_limit_follows_its_read_budget_and_caps(tmp_path):
    from corpus.build_time import build_minutes

    # Six domains capped at 3 MB: without a budget the read takes at least the 18 MB it keeps.
    corpus = config_for(tmp_path)["corpus"]
    assert build_minutes(corpus) == 10 + math.ceil((18e6 + 18e6) / 40e6 * 1.5 / 60)
    assert build_minutes(dict(corpus, max_read_bytes=120 * 10**9)) == 10 + math.ceil((120e9 + 18e6) / 40e6 * 1.5 / 60)
    # A hub stream's rate is assumed at half the local files' (no stream was measured).
    hub = dict(corpus, source="huggingface", max_read_bytes=120 * 10**9)
    assert build_minutes(hub) == 10 + math.ceil((120e9 + 18e6) / 20e6 * 1.5 / 60)
