"""Paths are data (a folder's name is never read as a pattern or a shell word), empty and root
folder settings are refused, each run keeps its own training log, and the start-up cleanup
removes only temporaries whose writer is gone."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_test_config
from mixbench import io
from mixbench.errors import ConfigError, DataError
from mixbench.lineage import TRAINING_LOG
from strategies import grid_config


# --- A: glob characters in a path -------------------------------------------------------------

def write_corpus(root: Path, documents: int) -> Path:
    folder = root / "corpus" / "web"
    folder.mkdir(parents=True)
    lines = (json.dumps({"id": str(i), "text": f"document {i} of {root.name} with a few words, then {i} {i * 7} {i * 13}"})
             for i in range(documents))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return root / "corpus"


def test_lm_eval_reads_exactly_the_generated_documents_whatever_the_folder_is_called(tmp_path):
    importlib.import_module("eval.harness.lm")  # first: it switches Hugging Face libraries offline
    from eval.harness.downstream_tasks import CLOZE, generate_downstream_tasks
    from eval.harness.tasks import generate_perplexity_tasks
    from lm_eval.tasks import TaskManager

    # `d*` and `d[ab]` as patterns both match `da`, a sibling with many more documents: read as a
    # pattern, `d*` read both folders (54 documents for 4) and `d[ab]` read `da`'s alone.
    generate_perplexity_tasks(write_corpus(tmp_path / "da", 50), tmp_path / "da" / "eval")
    for name, documents in (("d*", 4), ("d[ab]", 3), ("d?", 2)):
        root = tmp_path / name
        corpus = write_corpus(root, documents)
        manifest = generate_perplexity_tasks(corpus, root / "eval")
        assert manifest["domains"]["web"]["documents"] == documents
        tasks = TaskManager(include_path=str(root / "eval" / "perplexity"), include_defaults=False)
        task = tasks.load(["mixbench_ppl_web"])["tasks"]["mixbench_ppl_web"]
        assert [doc["id"] for doc in task.test_docs()] == [f"{i}#0" for i in range(documents)], name
    # The downstream tasks' data files too.
    root = tmp_path / "d[ab]"
    generate_downstream_tasks(root / "corpus", root / "eval", examples_per_domain=2, context_chars=40,
                              continuation_chars=10, choices=2)
    tasks = TaskManager(include_path=str(root / "eval" / "downstream"), include_defaults=False)
    task = tasks.load([f"{CLOZE}_web"])["tasks"][f"{CLOZE}_web"]
    expected = (root / "eval" / "downstream" / f"{CLOZE}_web.jsonl").read_text().splitlines()
    assert len(list(task.test_docs())) == len(expected) > 0


def test_a_path_with_a_file_system_chain_is_refused_in_one_line(tmp_path):
    from eval.harness.tasks import generate_perplexity_tasks

    with pytest.raises(DataError, match=r"reads '::' in a path .*move the data folder") as caught:
        generate_perplexity_tasks(write_corpus(tmp_path / "a::b", 2), tmp_path / "a::b" / "eval")
    assert "\n" not in str(caught.value)


def shell_strings(text: str) -> list[str]:
    """The quoted strings of every `shell:` block of a rule file, and of its *_LAUNCH / *_TO
    fragments (the shell commands are made of them)."""
    blocks = re.findall(r"^\s+shell:\n((?:\s+.*\n)+?)(?:\n|\Z)", text, flags=re.M)
    blocks += re.findall(r"^[A-Z_]+(?:LAUNCH|_TO) = \(?\n?((?:.*\n)+?)(?:\)|\n)", text, flags=re.M)
    return [s for block in blocks for s in re.findall(r'"((?:[^"\\]|\\.)*)"', block)]


def test_every_value_in_a_shell_command_is_quoted():
    strings = [s for rules in (REPO / "rules").glob("*.smk") for s in shell_strings(rules.read_text())]
    assert any("mixbench.training_log" in s for s in strings) and len(strings) > 20
    fields = [field for s in strings for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", s)]
    # EVAL_LAUNCH is quoted where it is made (shlex.join, rules/eval.smk).
    assert fields and [f for f in fields if not f.endswith(":q") and f != "EVAL_LAUNCH"] == []


def test_no_path_is_expanded_as_a_pattern_or_a_shell_word():
    # corpus.path is a glob by design (its schema says so); nothing else may be.
    allowed = {"corpus/sources.py"}
    found = []
    for path in [*REPO.glob("*/*.py"), *REPO.glob("*/*/*.py"), *(REPO / "rules").glob("*.smk")]:
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("tests/", ".venv/")) or rel in allowed:
            continue
        text = path.read_text()
        found += [f"{rel}: {m}" for m in re.findall(r"\bglob\.glob\(|\bfnmatch\b|shell=True|os\.system\(|os\.popen\(",
                                                     text)]
    assert found == []


# --- B: folder settings that name no folder of their own ------------------------------------------

@pytest.mark.parametrize("field, value", [("data_dir", ""), ("runs_dir", "   "), ("results_dir", "/"),
                                          ("data_dir", "//"), ("runs_dir", "/tmp/.."), ("deb_dir", ""),
                                          ("data_dir", "x/{size}"), ("data_dir", "a::b")])
def test_a_folder_setting_that_names_no_folder_of_its_own_is_refused(tmp_path, field, value):
    overrides = {"corpus": {"deb_dir": value}} if field == "deb_dir" else {field: value}
    with pytest.raises(ConfigError) as caught:
        grid_config.validate(make_test_config(tmp_path, **overrides))
    message = str(caught.value)
    assert "\n" not in message and re.search(rf"\b{field}: {re.escape(repr(value))}", message), message


def test_glob_characters_in_a_folder_setting_are_accepted(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, data_dir=str(tmp_path / "d*[ab]?")))
    assert config["data_dir"] == str(tmp_path / "d*[ab]?")


def test_the_workflow_refuses_an_empty_runs_dir_before_writing_anything(tmp_path):
    config = make_test_config(tmp_path, runs_dir="")
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
                           "--directory", str(tmp_path), "--configfiles", str(tmp_path / "config.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "mixbench: invalid configuration: runs_dir: '' names no folder" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["config.json"]


# --- C: each run's own training log ---------------------------------------------------------------

def test_every_attempt_appends_to_the_runs_own_log_and_the_job_log_says_where(tmp_path):
    run = tmp_path / "runs *[x]" / "final"
    job_log = tmp_path / "job.log"
    for attempt in ("first", "second"):
        with job_log.open("w") as handle:  # what Snakemake's `> {log:q} 2>&1` does to the job's log
            done = subprocess.run([sys.executable, "-m", "mixbench.training_log", "--run", str(run), "--",
                                   sys.executable, "-c", f"import sys; print('{attempt} out'); "
                                   f"print('{attempt} err', file=sys.stderr)"],
                                  stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, timeout=60)
        assert done.returncode == 0
    log = (run / TRAINING_LOG).read_text().splitlines()
    headers = [line for line in log if line.startswith("=== attempt ")]
    assert len(headers) == 2 and all(re.fullmatch(r"=== attempt \S+Z pid \d+ host \S+", h) for h in headers)
    assert [line for line in log if not line.startswith("===")] == ["first out", "first err", "second out",
                                                                    "second err"]
    assert job_log.read_text().strip().endswith(str(run / TRAINING_LOG))  # the job's log: only where to look


def test_a_trainer_whose_job_log_was_deleted_still_keeps_its_training_log(tmp_path):
    # A Snakemake rerun deletes the job's log while the orphaned trainer still runs.
    run, job_log = tmp_path / "run", tmp_path / "job.log"
    script = "import sys, time; print('started', flush=True); sys.stdin.readline(); print('finished', flush=True)"
    with job_log.open("w") as handle:
        trainer = subprocess.Popen([sys.executable, "-m", "mixbench.training_log", "--run", str(run), "--",
                                    sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=handle,
                                   stderr=subprocess.STDOUT, cwd=REPO, text=True)
    deadline = time.time() + 30
    while "started" not in ((run / TRAINING_LOG).read_text() if (run / TRAINING_LOG).exists() else ""):
        assert time.time() < deadline and trainer.poll() is None
        time.sleep(0.05)
    job_log.unlink()
    trainer.communicate("go\n", timeout=30)
    assert (run / TRAINING_LOG).read_text().splitlines()[-2:] == ["started", "finished"]


def test_redirected_sends_the_process_output_to_the_run_log_and_back(tmp_path):
    # What a pack does around each of its runs (models/train_pack.py); a process of its own, as
    # pytest's capture replaces sys.stdout.
    script = ("import os, sys; from mixbench.training_log import redirected\n"
              "with redirected(sys.argv[1]):\n    print('inside'); os.write(2, b'from a library\\n')\n"
              "print('outside')")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout == "outside\n" and done.stderr == ""
    assert (tmp_path / "run" / TRAINING_LOG).read_text().splitlines()[1:] == ["inside", "from a library"]


def test_a_run_trained_by_hand_keeps_its_log_and_shows_it_on_the_terminal(tmp_path):
    # `python -m models.train` without the workflow's wrapper: the output is also appended to the
    # run's log (a finished run without it is incomplete); under the wrapper nothing is added twice.
    script = ("import sys; from mixbench.training_log import kept\n"
              "with kept(sys.argv[1]):\n    print('step 1'); print('a warning', file=sys.stderr)\n"
              "print('after')")
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, "MIXBENCH_TRAINING_LOG": ""})
    assert done.returncode == 0 and done.stdout == "step 1\nafter\n" and done.stderr == "a warning\n"
    lines = (run / TRAINING_LOG).read_text().splitlines()
    assert lines[0].startswith("=== attempt ") and lines[1:] == ["step 1", "a warning"]
    wrapped = {**os.environ, "MIXBENCH_TRAINING_LOG": str((run / TRAINING_LOG).resolve())}
    done = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env=wrapped)
    assert done.returncode == 0 and (run / TRAINING_LOG).read_text().splitlines() == lines


def test_an_upstream_run_without_its_training_log_is_refused(tmp_path):
    from models.upstream import read_upstream

    run = tmp_path / "proxy"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(DataError, match=rf"{re.escape(str(run / TRAINING_LOG))} is missing: .*incomplete") as caught:
        read_upstream([f"proxy={run}"])
    assert "\n" not in str(caught.value)
    (run / TRAINING_LOG).write_text("=== attempt\n")
    assert read_upstream([f"proxy={run}"]) == {"proxy": run}


# --- D: temporaries of a live writer survive another workflow's start -----------------------------

WRITER = """
import sys
from mixbench.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp, flush=True)
    sys.stdin.readline()
    tmp.write_text("whole")
"""


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    return writer, Path(writer.stdout.readline().strip())


def test_a_temporary_records_its_writer(tmp_path):
    with io.atomic_path(tmp_path / "log.csv") as tmp:
        assert re.fullmatch(rf"\.log\.csv\.{re.escape(io.host_name())}-{os.getpid()}\.\w+\.tmp", tmp.name)
        assert io.is_temporary(tmp.name)


def test_the_cleanup_keeps_a_live_writers_temporary_and_removes_a_dead_ones(tmp_path):
    live, live_tmp = start_writer(tmp_path / "live.json")
    dead, dead_tmp = start_writer(tmp_path / "sub" / "dead.json")
    dead.kill()
    dead.wait()
    try:
        removed = io.remove_stale_temporaries(tmp_path, unrecorded_idle_s=io.UNRECORDED_WRITER_IDLE_S)
        assert removed == [dead_tmp] and not dead_tmp.exists() and live_tmp.read_text() == "half"
    finally:
        live.communicate("go\n", timeout=30)
    assert (tmp_path / "live.json").read_text() == "whole"  # its write went through


def test_writer_policy_for_other_hosts_and_unrecorded_writers(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = io.host_name()
    try:
        names = {"live": f".a.json.{here}-{sleeper.pid}.k2j3abcd.tmp", "dead": f".b.json.{here}-{gone.pid}.x8y9.tmp",
                 "other_host": f".c.json.{here}x-{gone.pid}.q1w2.tmp", "old_fresh": ".d.json.a8b9.tmp",
                 "old_idle": ".e.json.c3d4.tmp"}
        for name in names.values():
            (tmp_path / name).write_text("half")
        hours_ago = time.time() - 2 * 3600
        os.utime(tmp_path / names["old_idle"], (hours_ago, hours_ago))
        removed = io.remove_stale_temporaries(tmp_path, unrecorded_idle_s=io.UNRECORDED_WRITER_IDLE_S)
        assert sorted(p.name for p in removed) == sorted([names["dead"], names["old_idle"]])
        removed = io.remove_stale_temporaries(tmp_path)  # unrecorded ones at once, recorded live ones kept
        assert [p.name for p in removed] == [names["old_fresh"]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], names["other_host"]])
        # A run's lock holder (no other writer in its folder) removes every one, another machine's too.
        removed = io.remove_stale_temporaries(tmp_path, locked=True)
        assert sorted(p.name for p in removed) == sorted([names["live"], names["other_host"]])
    finally:
        sleeper.kill()
        sleeper.wait()
