"""Every shell command that README.md and docs/*.md show is run by a test.

A command is a line of a ```bash or ```sh block (comments dropped, continuation lines joined), or a
`$ ` line of a ```console block. Each one is either cheap, and run here on a copy of the repository
(dry runs, the cost plan, a configuration error), its output compared with what the docs show; or
it needs a finished grid, GPUs, a cluster or the network, and COVERED names the end-to-end test that
runs the same command on the test configuration or with stand-ins, with a string that test file must
hold (the command's entry point). A command in neither fails this test: the docs show nothing that
nothing runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, job_counts
from test_add_strategy import copy_repo

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Commands run here: the command as the docs write it (normalised by shlex) -> whether it succeeds.
RUN_HERE = {
    "snakemake --cores all -n": True,
    "snakemake -n --configfile config/paper.yaml": True,
    "snakemake -n --configfiles config/paper.yaml config/rehearsal.yaml": True,
    """snakemake --cores all -n --config 'grid={"strategies": ["unifrom"]}'""": False,
    "python -m eval.analysis.plan --config config/paper.yaml": True,
}

# Entry points the workflow's rules run: a hand-run `python -m MODULE ...` is the command of a rule,
# which every workflow test runs on the test configuration.
RULE_MODULES = ("corpus.build", "corpus.tokenizer", "corpus.tokens", "models.train", "eval.harness.tasks",
                "eval.harness.evaluate", "eval.harness.score_runs", "eval.analysis.aggregate", "eval.analysis.figures",
                "eval.analysis.jobs")

# Commands too costly to run here: pattern (a full match on the command's words) -> the file
# that runs the same command (on the test configuration, with stand-ins, or on a fresh clone), and
# a string that file must hold.
COVERED = {
    r"bash scripts/mixbench\.sh test": (".ci/run", "bash scripts/mixbench.sh test"),  # CI, on a fresh clone
    # Set-up as in .ci/run (the same ensure_venv), then `snakemake --cores all`, below.
    r"bash scripts/mixbench\.sh benchmark": ("tests/test_workflow.py", "result = snakemake(root, config_file)"),
    r"bash scripts/mixbench\.sh rehearsal": ("tests/test_paper_grid.py", "rehearsal.yaml"),
    r"snakemake --cores all": ("tests/test_workflow.py", "result = snakemake(root, config_file)"),
    r"snakemake --cores 1 figures": ("tests/test_workflow.py", 'snakemake(root, config_file, "figures")'),
    r"snakemake --report \S+": ("tests/test_workflow.py", '"--report"'),
    # The two-minute grid: the README's "Add a strategy" runs a config whose base it is.
    r"snakemake --cores all --configfile config/try\.yaml": ("tests/test_add_strategy.py", "config/try.yaml"),
    # The landscape study: the shipped config under the test configuration (a 3-point lattice).
    r"snakemake --cores all --configfile config/landscape\.yaml": ("tests/test_landscape_workflow.py",
                                                                    "snakemake(root, [LANDSCAPE, overlay]"),
    # The methods grid: the shipped config under the test configuration, Skill-It and Chameleon.
    r"snakemake --cores all --configfile config/methods\.yaml": ("tests/test_methods_grid.py",
                                                                  "snakemake(tmp_path, [METHODS, overlay]"),
    # The published-swarm track: the shipped config, two regressors (tests/test_published_swarm.py).
    r"snakemake --cores all --configfile config/published_swarm\.yaml": ("tests/test_published_swarm.py",
                                                                          "snakemake(REPO, [CONFIG, overlay])"),
    r"pytest tests/test_temperature\.py": ("tests/test_add_strategy.py", 'run_commands(blocks["run"]'),
    r"snakemake --cores all --configfile temperature\.yaml": ("tests/test_add_strategy.py", 'run_commands(blocks["run"]'),
    # GPUs: the profile's dry run with a pool of stand-in GPUs, and the device slots on fake GPUs.
    r"(MIXBENCH_GPUS=\S+ )?snakemake --profile profiles/gpu .*": ("tests/test_gpus.py", '"--profile", "profiles/gpu"'),
    r"python -m mixbench\.gpus count": ("tests/test_gpus.py", '"-m", "mixbench.gpus", "count"'),
    r"python -m models\.preflight .*": ("tests/test_preflight.py", "preflight.main("),
    # SLURM: the real executor plugin with a stand-in sbatch/srun/sacct (tests/fake_slurm.py).
    r"snakemake --profile profiles/slurm .*": ("tests/test_slurm.py", "profiles/slurm"),
    # Network: the tests check that the offline build prints these commands, and read what they fetch.
    r"python -c .*save_pretrained\('data/gpt2-tokenizer'\).*": ("tests/test_tokenizer_sources.py",
                                                                 "save_pretrained('data/gpt2-tokenizer')"),
    r"hf download cerebras/SlimPajama-627B .*": ("tests/test_corpus_streaming.py", "hf download cerebras/SlimPajama-627B"),
    # Benchmarks and the GPU acceptance check (on the CPU, --cpu-smoke).
    r"python -m benchmarks\.throughput .*": ("tests/test_benchmarks.py", '"-m", "benchmarks.throughput"'),
    r"python -m benchmarks\.strategy_overhead .*": ("tests/test_benchmarks.py", '"-m", "benchmarks.strategy_overhead"'),
    r"python scripts/gpu_check\.py .*": ("tests/test_benchmarks.py", '"scripts/gpu_check.py", "--cpu-smoke"'),
}


# Entry points the docs name in their prose (`python -m MODULE ...` inside a sentence) and the
# test that runs each: the same module run by hand, through its main(), or as a rule's command.
PROSE_MODULES = {
    "benchmarks.startup": ("tests/test_benchmarks.py", '"-m", "benchmarks.startup"'),
    "benchmarks.corpus_build": ("tests/test_benchmarks.py", '"-m", "benchmarks.corpus_build"'),
    "benchmarks.fault_injection": ("tests/test_benchmarks.py", '"-m", "benchmarks.fault_injection"'),
    "benchmarks.throughput": ("tests/test_benchmarks.py", '"-m", "benchmarks.throughput"'),
    "benchmarks.strategy_overhead": ("tests/test_benchmarks.py", '"-m", "benchmarks.strategy_overhead"'),
    "corpus.debian": ("tests/test_debian_corpus.py", 'debian.main(["--print-packages"])'),
    "eval.harness.downstream": ("tests/test_downstream.py", "eval_downstream.main("),
    "eval.analysis.plan": ("tests/test_docs.py", '"python -m eval.analysis.plan --config config/paper.yaml"'),
    "eval.analysis.readme_results": ("tests/test_figures.py", "readme_results(["),
    "mixbench.gpus": ("tests/test_gpus.py", '"-m", "mixbench.gpus"'),
    "models.preflight": ("tests/test_preflight.py", "preflight.main("),
    # The fit rule's entry point: the RegMix workflow runs one fit job.
    "models.fit": ("tests/test_regmix_workflow.py", 'jobs["fit"] == 1'),
}

def shell_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every bash, sh or console block, list indentation removed."""
    blocks = re.findall(r"^( *)```(bash|sh|console)\n(.*?)^\1```", text, flags=re.S | re.M)
    return [(language, textwrap.dedent(body)) for _, language, body in blocks]


def commands_of(language: str, body: str) -> list[tuple[str, list[str]]]:
    """(command, the output the docs show under it) of a block; commands normalised by shlex."""
    if language == "console":
        parts = re.split(r"^\$ (.*)\n", body, flags=re.M)[1:]
        return [(shlex.join(shlex.split(command)), output.splitlines()) for command, output in zip(parts[::2], parts[1::2])]
    joined = re.sub(r"\\\n\s*", " ", body)
    return [(shlex.join(tokens), []) for line in joined.splitlines() if (tokens := shlex.split(line, comments=True))]


def doc_commands() -> list[tuple[Path, str, list[str]]]:
    return [(doc, command, output) for doc in DOCS for language, body in shell_blocks(doc.read_text())
            for command, output in commands_of(language, body)]


def covered(command: str) -> bool:
    """Whether a COVERED pattern matches the command, its words joined by spaces (quotes removed)."""
    words = " ".join(shlex.split(command))
    return any(re.fullmatch(pattern, words) for pattern in COVERED)


def rule_module(command: str) -> str | None:
    match = re.fullmatch(r"python -m (\S+)( .*)?", command)
    return match.group(1) if match and match.group(1) in RULE_MODULES else None


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every RUN_HERE command, run once, three at a time, in one copy of the repository."""
    repo = copy_repo(tmp_path_factory.mktemp("docs") / "repo")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    interpreter = {"snakemake": [sys.executable, "-m", "snakemake"], "python": [sys.executable]}

    def run(command: str) -> subprocess.CompletedProcess:
        program, *args = shlex.split(command)
        return subprocess.run([*interpreter[program], *args], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(RUN_HERE, pool.map(run, RUN_HERE)))


def test_every_command_the_docs_show_is_run_by_a_test():
    found = doc_commands()
    assert len(found) > 20, "the extraction found too few commands: has the block syntax changed?"
    unrun = [f"{doc.relative_to(REPO)}: {command}" for doc, command, _ in found
             if command not in RUN_HERE and not rule_module(command)
             and not covered(command)]
    assert not unrun, "commands no test runs (run them in tests/test_docs.py or add them to COVERED):\n" + "\n".join(unrun)
    shown = {command for _, command, _ in found}
    assert set(RUN_HERE) <= shown, f"RUN_HERE names commands the docs no longer show: {set(RUN_HERE) - shown}"
    unused = [pattern for pattern in COVERED
              if not any(re.fullmatch(pattern, " ".join(shlex.split(command))) for command in shown)]
    assert not unused, f"COVERED names commands the docs no longer show: {unused}"


def test_each_covering_test_holds_the_commands_entry_point():
    for pattern, (path, evidence) in COVERED.items():
        assert evidence in (REPO / path).read_text(), f"{path} does not hold {evidence!r}, which covers {pattern!r}"
    rules = "\n".join(path.read_text() for path in (REPO / "rules").glob("*.smk"))
    workflow_test = (REPO / "tests" / "test_workflow.py").read_text()
    assert "result = snakemake(root, config_file)" in workflow_test
    for module in RULE_MODULES:
        assert f"-m {module} " in rules, f"no rule runs python -m {module}: a test must run it by hand"


def test_the_cheap_commands_run_and_print_what_the_docs_show(ran):
    for doc, command, shown in doc_commands():
        if command not in RUN_HERE:
            continue
        done = ran[command]
        output = done.stdout + done.stderr
        assert (done.returncode == 0) == RUN_HERE[command], f"{command}: exit {done.returncode}\n{output[-3000:]}"
        shown_counts = {rule: int(n) for rule, n in (re.match(r"(\w+)\s+(\d+)\b", line).groups()
                                                      for line in shown if re.match(r"\w+\s+\d+\b", line))}
        if shown_counts:  # a dry run's job table: the same jobs per rule
            assert job_counts(done.stdout) == {r: n for r, n in shown_counts.items() if r != "total"}, command
            assert sum(job_counts(done.stdout).values()) == shown_counts["total"], command
        else:
            for line in filter(None, shown):
                assert line.strip() in output, f"{doc.name}: {command} no longer prints {line!r}\n{output[-3000:]}"


def test_the_cost_plan_and_the_job_counts_in_the_docs_are_current(ran):
    plan = ran["python -m eval.analysis.plan --config config/paper.yaml"].stdout
    paper_grid = (REPO / "docs" / "paper-grid.md").read_text()
    lines = [line for line in plan.splitlines() if line.startswith(("|", "Total:"))]
    assert len(lines) > 10 and all(line in paper_grid for line in lines), "docs/paper-grid.md shows another plan"
    total = sum(job_counts(ran["snakemake --cores all -n"].stdout).values())
    assert f"The default grid is {total} jobs" in (REPO / "docs" / "performance.md").read_text()
    assert re.search(rf"corpus, {total}\s+jobs", (REPO / "README.md").read_text()), f"the README's default grid: {total} jobs"


def test_every_module_the_docs_name_is_run_by_a_test():
    named = {module for doc in DOCS for module in re.findall(r"python -m ([\w.]+)", doc.read_text())}
    missing = [m for m in named if not (REPO / (m.replace(".", "/") + ".py")).is_file()]
    assert not missing, f"the docs name modules that do not exist: {missing}"
    unrun = sorted(named - set(RULE_MODULES) - set(PROSE_MODULES))
    assert not unrun, f"modules the docs name that no test runs (add them to PROSE_MODULES): {unrun}"
    for module, (path, evidence) in PROSE_MODULES.items():
        assert module in named, f"PROSE_MODULES names {module}, which the docs no longer name"
        assert evidence in (REPO / path).read_text(), f"{path} does not hold {evidence!r}, which runs {module}"
