"""The throughput benchmark's targets and its summary on the terminal (benchmarks/throughput.py
writes the full report as JSON)."""

from __future__ import annotations

OVERHEAD_TARGET = 1.05  # the loop may take at most 5% longer than the minimal step
HELDOUT_TARGET = 0.05  # the held-out curves may cost at most 5% of a run's time


def print_report(report: dict) -> None:
    def speed(r: dict) -> str:
        utilisation = "n/a (no peak FLOP/s known)" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        return f"{r['step_s']:.3f} s/step, {r['tokens_per_s']:,.0f} tokens/s, MFU {utilisation}"

    r = report
    print(f"{r['device']}: size {r['size']} ({r['parameters'] / 1e6:.1f}M parameters, vocabulary {r['vocab_size']} "
          f"padded to {r['padded_vocab_size']}), batch {r['batch_size']} x {r['seq_len']} in micro-batches of "
          f"{r['micro_batch_size']}, {'bf16' if r['bf16'] else 'fp32'}, compiled: {r['compiled']}")
    for name, r in report["strategies"].items():
        print(f"{name:>10} ({r['stage']}): {speed(r)}, peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB; "
              f"{r['step_time_vs_uniform']:.2f}x uniform's step time, {r['peak_memory_vs_uniform']:.2f}x its "
              f"memory (+{r['extra_memory_copies']:.2f} parameter copies)")
        if r["heldout_measurements"]:
            print(f"{'':>12}held-out curve: {r['heldout_measurements']} measurements of {r['heldout_s']:.3f} s = "
                  f"{100 * r['heldout_fraction']:.1f}% of the run (target <= {100 * HELDOUT_TARGET:.0f}%: "
                  f"{'met' if r['heldout_met'] else 'NOT met'})")
        for group in r["step_groups"] if len(r["step_groups"]) > 1 else []:
            print(f"{'':>12}{group['steps_in_run']} of {r['run_steps']} steps with signals {group['signals']}: "
                  f"{group['median_step_s']:.3f} s/step")
    uniform = report["strategies"]["uniform"]
    print(f"{'minimal':>10} (step): {speed(report['minimal_step'])}\nloop vs minimal step: "
          f"{uniform['loop_overhead_ratio']:.3f}x (target <= {OVERHEAD_TARGET}: "
          f"{'met' if uniform['loop_overhead_met'] else 'NOT met'}); sampler "
          f"{uniform['sampler_sequences_per_s']:,.0f} sequences/s")
