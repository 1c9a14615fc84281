"""Device acceptance check: what a person with one GPU runs before the paper grid (under 8 minutes).

    python scripts/gpu_check.py --out results/gpu-check            # on one GPU
    python scripts/gpu_check.py --cpu-smoke --out /tmp/gpu-check   # the same code on a CPU, tiny, seconds

Builds the fixture corpus (tests/fixtures), then (benchmarks/acceptance.py):

1. memory: one step of each of ``--sizes`` (small, medium, large) at its micro-batch of
   config/paper.yaml and sequence 1024, not compiled: peak allocated memory against
   models/memory.py's estimate (its CUDA context left out: the allocator does not see it).
2. throughput: benchmarks/throughput.py at GPT-2 small, sequence 1024, batch 32 × 1024, compiled:
   uniform's tokens/s and MFU beside the minimal hand-written step, and every strategy's working
   stage (DoReMi's and DoGE's proxies, DoGraph with its probes amortised over 20,000 steps and
   one probe step on its own, a RegMix swarm run) as a step-time ratio to uniform.
3. swarm model: RegMix's ``regmix-1m`` swarm run at its paper shape (256 × 1024 in micro-batches of
   64), compiled: tokens/s and MFU.
4. compile: three steps eager and compiled from the same weights: the losses agree.
5. evaluation: a GPT-2 small on one lm-eval registry task (``--eval-task``, default copa) through
   ``python -m eval.harness.downstream`` offline; skipped, with the command that fills the cache, when its
   dataset is not cached.

``--curves`` adds the older check: the tiny model's loss curves on the CPU and on the device
(fp32, bf16, bf16 compiled) and every strategy's stages trained end to end on the device.
Writes ``{out}/gpu_check.json`` and ``{out}/gpu_check.md`` (the table docs/testing.md shows) and
prints the table, with the goals beside the measured values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench.model_sizes import GPT2_VOCAB  # noqa: E402 (after the path)

SMOKE = dict(device="cpu", sizes=["test"], throughput_size="test", swarm_size="test", agreement_size="test",
             seq_len=32, batch_size=8, micro_batch_size=4, swarm_batch_size=8, swarm_micro_batch_size=4, rounds=1,
             vocab=512, compile=False, compile_backend="eager", eval_limit=2, threads=1)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    parser.add_argument("--cpu-smoke", action="store_true", help="every part on the CPU at the test size (seconds)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "large"], help="sizes of the memory steps")
    parser.add_argument("--micro-batch-size", type=int, default=None,
                        help="of the memory steps (default: config/paper.yaml's per size)")
    parser.add_argument("--throughput-size", default="small")
    parser.add_argument("--swarm-size", default="regmix-1m")
    parser.add_argument("--agreement-size", default="small")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32, help="of the throughput benchmark (one micro-batch)")
    parser.add_argument("--swarm-batch-size", type=int, default=256)
    parser.add_argument("--swarm-micro-batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds of each benchmark")
    parser.add_argument("--threads", type=int, default=8, help="torch threads (CPU work of a step)")
    parser.add_argument("--vocab", type=int, default=GPT2_VOCAB, help="the models' vocabulary (GPT-2's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the benchmarks' models (default: on CUDA)")
    parser.add_argument("--compile-backend", default="inductor", help="of the compiled-vs-eager check")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU "
                        "(default: models/throughput.py's table)")
    parser.add_argument("--eval-task", default="copa", help="lm-eval registry task; 'none' skips the evaluation")
    parser.add_argument("--eval-limit", type=int, default=100, help="documents of the task scored")
    parser.add_argument("--curves", action="store_true", help="also the loss curves CPU vs device (see above)")
    parser.add_argument("--steps", type=int, default=40, help="steps of each --curves run")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.compile is None:
        args.compile = args.device == "cuda"
    return args


def build_data(root: Path) -> None:
    """The fixture corpus, its 512-token BPE and token files, unless a data folder is already there."""
    from benchmarks.acceptance import make_config
    from corpus import build, tokenizer, tokens

    if (root / "data" / "tokens" / "meta.json").exists():
        return
    config = make_config(root, sizes=["test"], strategies=["uniform"], training={"device": "cpu"})
    build.build(config)
    tokenizer.build(config)
    tokens.build(config)


def ratio_row(name: str, report: dict, goal: float | None) -> list:
    row = report["strategies"][name]
    ratio = row["step_time_vs_uniform"]
    probe = [g for g in row["step_groups"] if g["signals"]] if len(row["step_groups"]) > 1 else []
    note = (f"; a probe step alone {probe[0]['median_step_s'] / report['strategies']['uniform']['step_s']:.2f}×"
            if probe else "")
    return [f"{name} ({row['stage']}) step time × uniform", f"{ratio:.2f}×{note}",
            f"≤ {goal}×" if goal else "", "" if goal is None else ("yes" if ratio <= goal else "no")]


def markdown(report: dict) -> str:
    from benchmarks.acceptance import GOALS

    rows = [["check", "measured", "goal", "met"]]
    bench, swarm = report["throughput"], report["swarm"]
    uniform, minimal = bench["strategies"]["uniform"], bench["minimal_step"]
    mfu = lambda r: "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    at = f"{bench['size']}, {bench['batch_size']} × {bench['seq_len']}"
    rows += [[f"uniform tokens/s ({at})", f"{uniform['tokens_per_s']:,.0f}", f"≥ {GOALS['tokens_per_s']:,}",
              "yes" if uniform["tokens_per_s"] >= GOALS["tokens_per_s"] else "no"],
             [f"uniform MFU ({at})", mfu(uniform), f"≥ {GOALS['mfu']:.0%}",
              "yes" if (uniform["mfu"] or 0) >= GOALS["mfu"] else "no"],
             ["minimal step tokens/s, MFU", f"{minimal['tokens_per_s']:,.0f}, {mfu(minimal)}", "", ""],
             ["loop ÷ minimal step", f"{uniform['loop_overhead_ratio']:.3f}×", f"≤ {uniform['loop_overhead_target']}×",
              "yes" if uniform["loop_overhead_met"] else "no"]]
    rows += [ratio_row(name, bench, GOALS["step_time_vs_uniform"].get(name)) for name in bench["strategies"]
             if name != "uniform"]
    run = swarm["strategies"]["regmix"]
    rows.append([f"RegMix swarm run tokens/s, MFU ({swarm['size']}, {swarm['batch_size']} × {swarm['seq_len']} "
                 f"in micro-batches of {swarm['micro_batch_size']})", f"{run['tokens_per_s']:,.0f}, {mfu(run)}", "", ""])
    for step in report["memory"]:
        rows.append([f"peak memory, one step of {step['size']} (micro-batch {step['micro_batch']})",
                     f"{step['peak_gib']:.2f} GiB ({step['peak_vs_estimate']:.2f}× the estimate's "
                     f"{step['estimate_gib']:.2f})", "≤ the estimate", "yes" if step["peak_vs_estimate"] <= 1 else "no"])
    agreement = report["compile"]
    rows.append([f"compiled vs eager loss, 3 steps of {agreement['size']} ({agreement['backend']})",
                 f"max difference {agreement['max_abs_difference']:.2e}", f"≤ {agreement['tolerance']:g}",
                 "yes" if agreement["agree"] else "no"])
    evaluation = report["evaluation"]
    if "skipped" in evaluation:
        rows.append([f"evaluation on {evaluation['task']}", f"skipped: {evaluation['skipped']}", "", ""])
    elif evaluation:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in evaluation["results"].get(evaluation["task"], {}).items()
                           if isinstance(v, float))
        rows.append([f"evaluation on {evaluation['task']} ({evaluation['limit']} documents)",
                     f"{scores or 'no score'}; {evaluation['seconds']} s", "runs", "no" if evaluation["failed"] else "yes"])
    rows.append(["whole check", f"{report['wall_s']:.0f} s", "≤ 480 s", "yes" if report["wall_s"] <= 480 else "no"])
    lines = [f"{report['device']}, torch {report['torch']}:", ""]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows[:1]] + ["|---|---|---|---|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse(argv)
    import torch

    from benchmarks import acceptance

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine (--cpu-smoke tries it on a CPU)")
    started = time.time()
    root = args.out.resolve()
    build_data(root)
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__,
              "goals": acceptance.GOALS}
    report["memory"] = acceptance.memory_steps(root, args, args.vocab)
    report["throughput"] = acceptance.throughput(root, args, args.vocab, args.throughput_size, acceptance.STRATEGIES,
                                                 args.batch_size, args.batch_size)
    report["swarm"] = acceptance.throughput(root, args, args.vocab, args.swarm_size, ["uniform", "regmix"],
                                            args.swarm_batch_size, args.swarm_micro_batch_size)
    report["compile"] = acceptance.compile_agreement(root, args, args.vocab)
    report["evaluation"] = {} if args.eval_task == "none" else acceptance.evaluation(root, args)
    if args.curves:
        from benchmarks.acceptance_curves import curves

        report["curves"] = curves(root, args)
    report["wall_s"] = round(time.time() - started, 1)
    (root / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (root / "gpu_check.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
