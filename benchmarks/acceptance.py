"""The parts of the device acceptance check (scripts/gpu_check.py), each a function returning
its rows: peak memory of one step per size against models/memory.py, the throughput benchmark
(benchmarks/throughput.py) at GPT-2 small and at RegMix's swarm model, a compiled against an
eager step, and one evaluation on one lm-eval registry task.

Every model gets GPT-2's vocabulary (``--vocab``) and is fed the fixture corpus's token ids: a
step costs the same whichever ids occur, so speed and memory are GPT-2's.
"""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.peak_memory import PeakMemory
from benchmarks.throughput import Setup, Subject, measure
from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.eval_datasets import cache_problem, default_cache_dir, task_datasets
from strategies import grid_config
from models.flat_params import unwrap
from models.gpt2 import build_model, gpt2_config
from models.memory import GIB, training_memory
from models.optim import make_optimizer
from mixbench.model_sizes import SIZES
from models.step import model_token_loss

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
# Goals of one H100 (llm.c reaches about 460k tokens/s on GPT-2 small there).
GOALS = {"tokens_per_s": 400_000, "mfu": 0.40, "step_time_vs_uniform": {"doge": 1.5, "doremi": 1.4}}
# What each strategy's working stage is here: RegMix's is a swarm run (its final model is a static run).
STAGES = {"regmix": "swarm-0"}
STRATEGIES = ["uniform", "doremi", "doge", "dograph", "regmix"]


def make_config(root: Path, *, sizes: list[str], strategies: list[str], training: dict) -> dict:
    """benchmarks/fixture.yaml on the data under ``root``, with the paper grid's run lengths and
    strategy settings (DoGraph probing every 500 of 20,000 steps, DoReMi's two forwards)."""
    raw = yaml.safe_load((REPO / "benchmarks" / "fixture.yaml").read_text())
    raw.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"), results_dir=str(root / "results"))
    raw["corpus"]["path"] = str(REPO / "tests" / "fixtures" / "corpus.jsonl")
    # RegMix at its defaults: its swarm-0 is the same run whatever the swarm's size and fit.
    paper = {name: {k: v for k, v in PAPER["strategies"][name].items() if k != "stages"}
             for name in strategies if name in ("doremi", "doge", "dograph")}
    downstream = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())["downstream"]
    keep = ("steps", "warmup_steps", "reweighted_step", "lr", "threads")
    return grid_config.validate(cfg.deep_merge(raw, {
        "grid": {"sizes": sizes, "strategies": strategies}, "downstream": downstream, "strategies": paper,
        "stages": {"reference": {"steps": 10000}, "proxy": {"steps": 10000}},
        "training": {**{k: PAPER["training"][k] for k in keep}, **training}}))


def memory_steps(root: Path, args, vocab: int) -> list[dict]:
    """One uniform step per size at its configured micro-batch (config/paper.yaml), not compiled:
    the peak the allocator saw above what the process held before, against the estimate."""
    rows = []
    for size in args.sizes:
        micro = args.micro_batch_size or cfg.micro_batch_size(PAPER["training"], size)
        config = make_config(root, sizes=[size], strategies=["uniform"], training={
            "device": args.device, "compile": False, "seq_len": args.seq_len, "batch_size": micro,
            "micro_batch_size": micro, "threads": args.threads})
        setup = Setup.of(config, size, vocab)
        meter = PeakMemory(setup.placement.device)
        started = time.time()
        with tempfile.TemporaryDirectory() as scratch:
            meter.mark()
            subject = Subject(config, "uniform", size, setup, Path(scratch))
            peak = meter.peak_of(subject.one_of_each_group)  # the first step: the optimizer's state appears
            del subject
        parts = training_memory(SIZES[size], vocab_size=-(-vocab // 64) * 64, seq_len=args.seq_len,
                                micro_batch=micro, bf16=setup.placement.bf16)
        allocated = parts["total"] - parts.get("cuda_context", 0)  # the allocator's peak has no context
        rows.append({"size": size, "micro_batch": micro, "seq_len": args.seq_len, "peak_gib": peak / GIB,
                     "estimate_gib": allocated / GIB, "peak_vs_estimate": peak / allocated,
                     "seconds": round(time.time() - started, 1)})
        release(setup.placement.device)
    return rows


def store(config: dict) -> TokenStore:
    return TokenStore(Path(config["data_dir"]) / "tokens", "train", config["corpus"]["domains"])


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def throughput(root: Path, args, vocab: int, size: str, strategies: list[str], batch: int, micro: int) -> dict:
    """benchmarks/throughput.py's report: each strategy's working stage and the minimal step."""
    config = make_config(root, sizes=[size], strategies=strategies, training={
        "device": args.device, "compile": args.compile, "seq_len": args.seq_len, "batch_size": batch,
        "micro_batch_size": micro, "peak_tflops": args.peak_tflops, "threads": args.threads})
    started = time.time()
    report = measure(config, strategies, size, args.rounds, vocab_size=vocab,
                     stages={k: v for k, v in STAGES.items() if k in strategies})
    report["seconds"] = round(time.time() - started, 1)
    release(torch.device(args.device))
    return report


def compile_agreement(root: Path, args, vocab: int) -> dict:
    """Three steps of the same model from the same weights on the same batches, eager and
    compiled (``--compile-backend``): forward, the training loop's chunked fp32 cross-entropy
    (models/token_loss.py, inside the compiled graph), backward, AdamW. Under bf16
    the two differ by rounding only; a compiler bug shows as a larger gap."""
    size = args.agreement_size
    config = make_config(root, sizes=[size], strategies=["uniform"], training={
        "device": args.device, "compile": False, "seq_len": args.seq_len, "batch_size": 8, "micro_batch_size": 8,
        "threads": args.threads})
    setup = Setup.of(config, size, vocab)
    eager = setup.model()
    compiled = torch.compile(copy.deepcopy(eager), backend=args.compile_backend)
    sampler = DomainSampler(store(config), args.seq_len, seed=3)
    k = len(config["corpus"]["domains"])
    device, bf16 = setup.placement.device, setup.placement.bf16
    batches = [torch.from_numpy(sampler.step_batch([1 / k] * k, 8, step=s).tokens).to(device) for s in (1, 2, 3)]
    started = time.time()
    losses = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        optimizer = make_optimizer(unwrap(model), setup.settings(steps=3))
        losses[name] = [step_loss(model, optimizer, tokens, bf16) for tokens in batches]
    gap = max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"]))
    tolerance = 2e-2 if bf16 else 1e-4
    release(device)
    return {"size": size, "backend": args.compile_backend, "bf16": bf16, **losses, "max_abs_difference": gap,
            "tolerance": tolerance, "agree": gap <= tolerance, "seconds": round(time.time() - started, 1)}


def step_loss(model, optimizer, tokens: torch.Tensor, bf16: bool) -> float:
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model_token_loss(model, tokens[:, :-1], tokens[:, 1:]).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def evaluation(root: Path, args) -> dict:
    """A GPT-2 small (random weights, the fixture's tokenizer) on one registry task, as the
    workflow evaluates (python -m eval.harness.downstream, offline); skipped if the dataset is not cached."""
    task = args.eval_task
    specs = task_datasets([task], cache_file=root / "eval-datasets.json")[task]  # lm-eval indexed once (~15 s)
    cache = default_cache_dir()
    missing = [(spec, why) for spec in specs if (why := cache_problem(spec, cache))]
    if missing:
        spec = missing[0][0]
        return {"task": task, "skipped": f"{spec.describe()} is not in the datasets cache {cache}; "
                                         f"python -c \"import datasets; {spec.load_call()}\" on a machine with network"}
    from transformers import AutoTokenizer

    model_dir = root / "eval-model"
    tokenizer = AutoTokenizer.from_pretrained(root / "data" / "tokenizer")
    build_model(gpt2_config("small", len(tokenizer), eos_id=tokenizer.eos_token_id)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = root / "eval-downstream.json"
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "eval.harness.downstream", "--model", str(model_dir), "--tasks", task,
                           "--out", str(out), "--device", args.device, "--limit", str(args.eval_limit)],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"evaluation on {task} failed:\n{done.stderr[-2000:]}")
    record = json.loads(out.read_text())
    return {"task": task, "limit": args.eval_limit, "failed": record.get("failed", {}),
            "results": record.get("results", {}), "seconds": round(time.time() - started, 1)}
