"""Corpus build and tokenization benchmark on a generated local corpus: peak memory, MB/s, workers.

    python -m benchmarks.corpus_build [--sizes-gb 0.5 1 2] [--long-document-mb 50] [--tokenize-mb 64]

For each size it writes a jsonl corpus of that many bytes over 7 domains, one holding a quarter of
it (500 MB at 2 GB) and one a four-hundredth (5 MB at 2 GB), and builds it with ``corpus.build``
in a child process: no cap binds, so every document is read, indexed and written (the most memory
a build needs), and the small domain never lets the read stop early. A last case puts one 50 MB
document in a domain capped at 100 kB. Tokenization is timed on a ~64 MB corpus with 1 and 2
workers (``corpus.tokens --workers``). Peak RSS is the child's own (``wait4``), so each case is
measured alone. Results go to ``results/benchmarks/corpus_build.json`` and ``.md``; it measures
and never asserts: the targets (≤ 1 GB peak whatever the size, ≥ 1.7× with 2 workers) are
printed beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from mixbench.io import write_json, write_text

DOMAINS = ["web", "code", "papers", "books", "qa", "wiki", "math"]
SHARES = {"web": 0.25, "math": 0.0025}  # the rest split the remainder equally
PEAK_RSS_TARGET_MB = 1024
SPEEDUP_TARGET = 1.7
REPO = Path(__file__).resolve().parent.parent


def domain_bytes(total: int) -> dict[str, int]:
    rest = (1 - sum(SHARES.values())) / (len(DOMAINS) - len(SHARES))
    return {d: int(total * SHARES.get(d, rest)) for d in DOMAINS}


def word_pool(seed: int, size: int = 1 << 24) -> str:
    """~16 MB of text from a 5,000-word vocabulary with line breaks: documents are slices of it."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    vocabulary = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(5000)]
    words = rng.choice(vocabulary, size=size // 6)
    separators = rng.choice([" ", " ", " ", " ", " ", " ", " ", " ", " ", "\n"], size=words.size)
    return "".join(np.char.add(words, separators).tolist())


def write_corpus(path: Path, total: int, seed: int = 0) -> int:
    """Documents of 0.5–16 kB (shorter in small corpora), each a distinct slice of the pool, domains
    interleaved at random."""
    rng = np.random.default_rng(seed)
    pool = word_pool(seed)
    remaining = domain_bytes(total)
    # At least ~20 documents per domain however small the corpus (a split needs a few).
    longest = {d: max(100, min(16_000, size // 20)) for d, size in remaining.items()}
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while remaining:
            names = list(remaining)
            domain = names[rng.integers(len(names))]
            length = min(int(rng.integers(longest[domain] // 32, longest[domain])), remaining[domain])
            start = int(rng.integers(0, len(pool) - length))
            text = pool[start:start + length]
            f.write(json.dumps({"domain": domain, "text": text}) + "\n")
            written += len(text)
            remaining[domain] -= length
            if remaining[domain] <= 0:
                del remaining[domain]
    return written


# Runs a module and writes its peak RSS (VmHWM, which exec resets: the fork's copy of the parent is
# not counted, unlike wait4's ru_maxrss) to the file named by its first argument.
PEAK_WRAPPER = """
import atexit, runpy, sys
peak_file, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
def record():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(peak_file, "w").write(line.split()[1])
atexit.register(record)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_measured(module: str, args: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of ``python -m module args`` in a child process."""
    peak_file = log.with_suffix(".peak")
    started = time.monotonic()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(peak_file), module, *args],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"python -m {module} {' '.join(args)} failed; see {log}:\n{log.read_text()[-2000:]}")
    return seconds, int(peak_file.read_text()) / 1024


def config_for(workdir: Path, corpus_path: Path, **corpus) -> Path:
    config = {
        "data_dir": str(workdir / "data"), "runs_dir": str(workdir / "runs"), "results_dir": str(workdir / "results"),
        "corpus": {"source": "jsonl", "path": str(corpus_path), "domains": DOMAINS,
                   "max_bytes_per_domain": 10**10, "min_split_documents": 1, **corpus},
        "tokenizer": {"vocab_size": 8192},
        "grid": {"sizes": ["tiny"], "strategies": ["uniform"]},  # every config names one; nothing trains here
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bench_build(workdir: Path, size_gb: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    corpus = workdir / "corpus.jsonl"
    text_bytes = write_corpus(corpus, int(size_gb * 1e9))
    config = config_for(workdir, corpus)
    seconds, peak = run_measured("corpus.build", ["--config", str(config)], workdir / "build.log")
    manifest = json.loads((workdir / "data" / "corpus" / "manifest.json").read_text())
    row = {"case": f"{size_gb:g} GB, 7 domains, nothing capped", "input_mb": corpus.stat().st_size / 1e6,
           "text_mb": text_bytes / 1e6, "documents": manifest["read"]["records"], "seconds": seconds,
           "mb_per_s": corpus.stat().st_size / 1e6 / seconds, "peak_rss_mb": peak}
    shutil.rmtree(workdir)
    return row


def bench_long_document(workdir: Path, document_mb: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    corpus = workdir / "corpus.jsonl"
    pool = word_pool(1)
    with open(corpus, "w") as f:
        for i in range(70):
            f.write(json.dumps({"domain": DOMAINS[i % 7], "text": pool[i * 5000:(i + 1) * 5000]}) + "\n")
        f.write(json.dumps({"domain": "web", "text": (pool * 4)[:int(document_mb * 1e6)]}) + "\n")
    config = config_for(workdir, corpus, max_bytes_per_domain=100_000)
    seconds, peak = run_measured("corpus.build", ["--config", str(config)], workdir / "build.log")
    manifest = json.loads((workdir / "data" / "corpus" / "manifest.json").read_text())
    kept = sum(s["bytes"] for s in manifest["domains"]["web"]["splits"].values())
    row = {"case": f"one {document_mb:g} MB document, domain capped at 100 kB", "input_mb": corpus.stat().st_size / 1e6,
           "documents": manifest["read"]["records"], "seconds": seconds,
           "mb_per_s": corpus.stat().st_size / 1e6 / seconds, "peak_rss_mb": peak, "kept_bytes_of_that_domain": kept}
    shutil.rmtree(workdir)
    return row


def bench_tokenize(workdir: Path, size_mb: float) -> list[dict]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    corpus = workdir / "corpus.jsonl"
    write_corpus(corpus, int(size_mb * 1e6), seed=2)
    config = str(config_for(workdir, corpus))
    for step in ("corpus.build", "corpus.tokenizer"):
        run_measured(step, ["--config", config], workdir / f"{step}.log")
    split_mb = sum(p.stat().st_size for p in (workdir / "data" / "corpus").rglob("*.jsonl")) / 1e6
    rows, hashes = [], []
    for workers in (1, 2):
        seconds, peak = run_measured("corpus.tokens", ["--config", config, "--workers", str(workers)],
                                     workdir / f"tokens-{workers}.log")
        meta = json.loads((workdir / "data" / "tokens" / "meta.json").read_text())
        hashes.append({d: {s: e["sha256"] for s, e in splits.items()} for d, splits in meta["domains"].items()})
        rows.append({"workers": workers, "split_mb": split_mb, "seconds": seconds, "mb_per_s": split_mb / seconds,
                     "peak_rss_mb": peak})
    for row in rows:
        row["speedup"] = row["mb_per_s"] / rows[0]["mb_per_s"]
        row["same_bytes_as_1_worker"] = hashes[rows.index(row)] == hashes[0]
    shutil.rmtree(workdir)
    return rows


def markdown(report: dict) -> str:
    lines = ["# Corpus build benchmark", "", f"Machine: {report['machine']}", "",
             f"Build (target: peak RSS ≤ {PEAK_RSS_TARGET_MB} MB whatever the corpus size):", "",
             "| case | input MB | documents | seconds | MB/s | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for row in report["build"]:
        lines.append(f"| {row['case']} | {row['input_mb']:,.0f} | {row['documents']:,} | {row['seconds']:.1f} | "
                     f"{row['mb_per_s']:.1f} | {row['peak_rss_mb']:,.0f} |")
    lines += ["", f"Tokenization (byte-level BPE, 8,192 tokens; target: ≥ {SPEEDUP_TARGET}× with 2 workers):", "",
              "| workers | split MB | seconds | MB/s | speedup | same bytes | peak RSS MB (main process) |",
              "|---:|---:|---:|---:|---:|---|---:|"]
    for row in report["tokenize"]:
        lines.append(f"| {row['workers']} | {row['split_mb']:.1f} | {row['seconds']:.1f} | {row['mb_per_s']:.2f} | "
                     f"{row['speedup']:.2f}× | {row['same_bytes_as_1_worker']} | {row['peak_rss_mb']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--long-document-mb", type=float, default=50.0)
    parser.add_argument("--tokenize-mb", type=float, default=64.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mixbench-corpus-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    args = parser.parse_args(argv)
    machine = f"{os.cpu_count()} CPU(s), {os.uname().machine}, Python {sys.version.split()[0]}"
    build_rows = []
    for size in args.sizes_gb:
        build_rows.append(bench_build(args.workdir, size))
        print(json.dumps(build_rows[-1]), file=sys.stderr)
    build_rows.append(bench_long_document(args.workdir, args.long_document_mb))
    print(json.dumps(build_rows[-1]), file=sys.stderr)
    tokenize_rows = bench_tokenize(args.workdir, args.tokenize_mb) if args.tokenize_mb > 0 else []
    report = {"machine": machine, "build": build_rows, "tokenize": tokenize_rows,
              "targets": {"peak_rss_mb": PEAK_RSS_TARGET_MB, "speedup_2_workers": SPEEDUP_TARGET}}
    write_json(args.out / "corpus_build.json", report)
    write_text(args.out / "corpus_build.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
