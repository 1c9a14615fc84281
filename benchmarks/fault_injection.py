"""Kill training with SIGKILL at random steps, resume it, and check that the final model is the
one an uninterrupted run makes, byte for byte.

    python -m benchmarks.fault_injection [--kills 5] [--seed 0] [--workdir /tmp/mixbench-faults]
        [--out results/benchmarks] [--cases final reference proxy dograph]

On the committed fixture corpus at the `test` size (tests/config/test.yaml, built in
``--workdir`` on first use), for each kind of run: a static final run (uniform), DoReMi's
reference, DoReMi's proxy (reading that reference) and DoGraph's online final run. Each case
trains once uninterrupted, then trains again and is killed ``--kills`` times, each at a random
step drawn with ``--seed`` (checkpoints every 3 steps, so kills also land inside a checkpoint
write), each time resumed by running the same command, until it finishes. Reported per case:
kills, resumes, checkpoints found corrupt and moved aside, temporaries of cut writes
removed at a restart, and whether the final model's sha256
equals the uninterrupted one's. Written to ``OUT/fault_injection.{json,md}``; exits 1 if any
final model differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from mixbench import REPO_ROOT
from mixbench.io import sha256_file, write_json, write_text

CASES = {  # name: (strategy, stage, the stage it reads)
    "final": ("uniform", "final", None),
    "reference": ("doremi", "reference", None),
    "proxy": ("doremi", "proxy", "reference"),
    "dograph": ("dograph", "final", None),
}


def prepare(workdir: Path) -> Path:
    """The test config with absolute paths under ``workdir`` and its data built (once)."""
    config = yaml.safe_load((REPO_ROOT / "tests" / "config" / "test.yaml").read_text())
    config.update(data_dir=str(workdir / "data"), runs_dir=str(workdir / "runs"), results_dir=str(workdir / "results"))
    config["corpus"]["path"] = str(REPO_ROOT / "tests" / "fixtures" / "corpus.jsonl")
    config["grid"]["strategies"] = sorted({strategy for strategy, _, _ in CASES.values()})
    config["training"].update(checkpoint_every=3, dropout=0.1)  # dropout: the RNG state must come back too
    path = workdir / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    if not (workdir / "data" / "tokens" / "meta.json").exists():
        for step in ("corpus.build", "corpus.tokenizer", "corpus.tokens"):
            subprocess.run([sys.executable, "-m", step, "--config", str(path)], check=True, cwd=REPO_ROOT)
    return path


def command(config: Path, strategy: str, stage: str, out: Path, upstream: dict[str, Path]) -> list[str]:
    return [sys.executable, "-m", "models.train", "--config", str(config), "--size", "test", "--strategy", strategy,
            "--seed", "0", "--stage", stage, "--out", str(out),
            *(["--upstream", *(f"{s}={d}" for s, d in upstream.items())] if upstream else [])]


def run_until_step(argv: list[str], kill_at: int | None) -> tuple[int, str]:
    """Run ``argv``; SIGKILL it once its progress line for step ``kill_at`` appears. Return
    (exit code, stderr). The loop prints one progress line per step at these run lengths."""
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO_ROOT,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    lines = []
    for line in process.stderr:
        lines.append(line)
        if kill_at is not None and f" step {kill_at}/" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    return process.returncode, "".join(lines) + process.stderr.read()


def run_case(name: str, config: Path, workdir: Path, kills: int, rng: np.random.Generator,
             upstream: dict[str, Path]) -> dict:
    strategy, stage, _ = CASES[name]
    settings = yaml.safe_load(config.read_text())
    steps = settings["training"]["steps"] if stage == "final" else settings["stages"][stage]["steps"]
    whole, killed = workdir / "runs" / name / "whole", workdir / "runs" / name / "killed"
    shutil.rmtree(workdir / "runs" / name, ignore_errors=True)  # counts from a clean start
    code, err = run_until_step(command(config, strategy, stage, whole, upstream), None)
    if code != 0:
        raise SystemExit(f"{name}: the uninterrupted run failed:\n{err[-3000:]}")
    started = time.monotonic()
    points = sorted(rng.choice(np.arange(1, steps), size=kills, replace=kills > steps - 1).tolist())
    report = {"case": name, "strategy": strategy, "stage": stage, "steps": steps, "kill_steps": points,
              "kills": 0, "resumes": 0, "corrupt_moved_aside": 0, "stale_temporaries_removed": 0,
              "attempts": 0}
    for point in [*points, None]:
        code, err = run_until_step(command(config, strategy, stage, killed, upstream), point)
        report["attempts"] += 1
        report["kills"] += code == -signal.SIGKILL
        report["resumes"] += "resumed from" in err
        report["corrupt_moved_aside"] += err.count("corrupt checkpoint:")
        report["stale_temporaries_removed"] += err.count("left by a write that a crash cut short")
        if point is None and code != 0:
            raise SystemExit(f"{name}: the last attempt failed:\n{err[-3000:]}")
    expected, actual = (sha256_file(d / "model" / "model.safetensors") for d in (whole, killed))
    report.update(identical=expected == actual, sha256=actual, seconds=round(time.monotonic() - started, 1))
    print(f"{name}: {report['kills']} kills at steps {points}, {report['resumes']} resumes, "
          f"identical: {report['identical']}", file=sys.stderr)
    return report


def markdown(rows: list[dict]) -> str:
    lines = ["| case | strategy (stage) | steps | killed at | kills | resumes | corrupt, moved aside "
             "| temporaries cleared | final sha256 = uninterrupted |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['strategy']} ({r['stage']}) | {r['steps']} | {', '.join(map(str, r['kill_steps']))} "
              f"| {r['kills']} | {r['resumes']} | {r['corrupt_moved_aside']} | {r['stale_temporaries_removed']} "
              f"| {'yes' if r['identical'] else 'NO'} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="kills per case (at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill steps")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mixbench-faults"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmarks")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error(f"--kills must be at least 1, got {args.kills}")
    config = prepare(args.workdir)
    rng = np.random.default_rng(args.seed)
    rows, finished = [], {}
    for name in args.cases:
        needs = CASES[name][2]
        upstream = {}
        if needs:  # the proxy reads an uninterrupted run of the stage before it
            reference = [n for n, c in CASES.items() if c[1] == needs][0]
            upstream = {needs: finished.get(needs) or args.workdir / "runs" / reference / "whole"}
            if not (upstream[needs] / "run.json").exists():
                code, err = run_until_step(command(config, CASES[reference][0], needs, upstream[needs], {}), None)
                if code != 0:
                    raise SystemExit(f"{reference}: the upstream run failed:\n{err[-3000:]}")
        rows.append(run_case(name, config, args.workdir, args.kills, rng, upstream))
        finished[CASES[name][1]] = args.workdir / "runs" / name / "whole"
    write_json(args.out / "fault_injection.json", {"kills_per_case": args.kills, "seed": args.seed, "cases": rows})
    write_text(args.out / "fault_injection.md", markdown(rows))
    print(markdown(rows))
    if not all(r["identical"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
