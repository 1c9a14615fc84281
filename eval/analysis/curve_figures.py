"""Figures from the runs' training logs: held-out curves, mixture entropy, DoReMi's excess
losses, the compute-fair view, and hyperparameter sweeps. Each takes the ``FigureData`` of
eval/analysis/plotting.py (its tables, colours and pyplot) and returns a matplotlib figure. Every band is
the range over seeds (lowest to highest), around their mean: with a few seeds that is what the
data shows, not a confidence interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eval.analysis.plotting import domain_panels, macro_per_seed, note, primary_label, seed_band
from mixbench.config import Stage
from mixbench.variants import variants


def _no_curves(figures) -> str | None:
    if figures.curves.empty:
        return ("No held-out curves: these runs have no val.csv (training.heldout_windows: 0, or runs older than "
                "the held-out curves).")
    return None


def val_curves(figures):
    """One panel per domain and the macro average, one row per size, a line per strategy."""
    missing = _no_curves(figures)
    if missing:
        fig, ax = figures.plt.subplots(figsize=(6, 3))
        note(ax, missing)
        return fig
    curves = figures.curves[figures.curves.stage == "final"]
    panels = [*figures.domains, "macro avg"]
    columns = min(4, len(panels))
    rows_per_size = -(-len(panels) // columns)
    fig, axes = figures.plt.subplots(rows_per_size * len(figures.sizes), columns,
                                     figsize=(3.6 * columns, 2.9 * rows_per_size * len(figures.sizes)), squeeze=False)
    macro = (curves.groupby(["size", "strategy", "seed", "step", "tokens"], as_index=False)["val_loss"].mean()
             .assign(domain="macro avg"))
    both = pd.concat([curves, macro])
    flat = [ax for row in axes for ax in row]
    for s, size in enumerate(figures.sizes):
        cells = flat[s * rows_per_size * columns:(s + 1) * rows_per_size * columns]
        for ax in cells[len(panels):]:
            ax.set_axis_off()
        for i, (ax, domain) in enumerate(zip(cells, panels)):
            for strategy in figures.strategies:
                rows = both[(both["size"] == size) & (both.strategy == strategy) & (both.domain == domain)]
                if len(rows):
                    seed_band(ax, rows, "tokens", "val_loss", figures.colour[strategy], strategy)
            ax.set_title(f"{domain} ({size})", fontsize=9)
            ax.set_xlabel("training tokens")
            if i % columns == 0:
                ax.set_ylabel("held-out loss (nats/token)")
            ax.grid(alpha=0.3)
        cells[len(panels) - 1].legend(fontsize=7)
    return fig


def mixture_entropy(figures):
    """The entropy of each stage's mixture over its steps, one panel per size; log K is uniform."""
    fig, axes = figures.plt.subplots(1, len(figures.sizes), figsize=(6 * len(figures.sizes), 4), squeeze=False)
    table = figures.entropy
    for ax, size in zip(axes[0], figures.sizes):
        rows = table[table["size"] == size]
        if rows.empty:
            note(ax, "No training logs to read.")
            continue
        # A fan-out stage's runs (swarm-0 … swarm-{N-1}) draw one band: their mean and range.
        rows = rows.assign(stage=rows["stage"].map(lambda stage: Stage.parse(stage).group))
        for (strategy, stage), group in rows.groupby(["strategy", "stage"], sort=False):
            style = {"linestyle": {"final": "-", "proxy": "--"}.get(Stage.parse(stage).kind, "-.")}
            label = strategy if stage == "final" else f"{strategy} ({stage}, {group['mixture'].iat[0]})"
            seed_band(ax, group, "step", "entropy", figures.colour[strategy], label, **style)
        ax.axhline(np.log(len(figures.domains)), color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"Mixture entropy over training ({size}; dotted: uniform, log K)")
        ax.set_xlabel("step of the stage")
        ax.set_ylabel("entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def doremi_excess(figures):
    """DoReMi's per-domain excess loss over its proxy run: one panel per DoReMi strategy and
    proxy stage (iterated DoReMi has one per round: proxy, proxy-r2, ...)."""
    traj = figures.traj[figures.traj["excess"].notna() & (figures.traj["size"] == figures.sizes[0])]
    fig, panels = domain_panels(figures, traj, "excess", width=6, empty="No DoReMi proxy traced excess losses.")
    for ax, strategy, stage, _ in panels:
        ax.set_title(f"{strategy}: excess loss over the reference ({stage})", color=figures.colour[strategy])
        ax.set_xlabel("proxy step")
        ax.set_ylabel("mean clipped excess loss (nats/token)")
    if panels:
        panels[0][0].legend(fontsize=7)
    return fig


def val_loss_vs_flops(figures):
    """Macro held-out loss of each final model against every FLOP its cell spent: the reference,
    proxy and swarm stages shift a strategy's curve right by what they cost."""
    fig, axes = figures.plt.subplots(1, len(figures.sizes), figsize=(6.5 * len(figures.sizes), 4.5), squeeze=False)
    missing = _no_curves(figures)
    if missing:
        note(axes[0][0], missing)
        return fig
    final = figures.curves[figures.curves.stage == "final"]
    macro = final.groupby(["size", "strategy", "seed", "step"], as_index=False).agg(
        val_loss=("val_loss", "mean"), flops=("flops", "first"), upstream_flops=("upstream_flops", "first"))
    macro["total_flops"] = macro["upstream_flops"] + macro["flops"]
    for ax, size in zip(axes[0], figures.sizes):
        for strategy in figures.strategies:
            rows = macro[(macro["size"] == size) & (macro.strategy == strategy)]
            if len(rows):
                by_step = rows.groupby("step")
                flops, loss = by_step["total_flops"].mean(), by_step["val_loss"]
                ax.plot(flops.values, loss.mean().values, color=figures.colour[strategy], label=strategy)
                ax.fill_between(flops.values, loss.min().values, loss.max().values, color=figures.colour[strategy],
                                alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs spent by the cell so far, earlier stages included (log scale)")
        ax.set_ylabel("macro held-out loss (nats/token)")
        ax.set_title(f"Held-out loss against total compute ({size})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def sweeps(figures):
    """The macro bits per byte of each swept value, one panel per (strategy, hyperparameter),
    mean ± std over seeds; the base strategy (dotted) and uniform (dashed) where the grid has them."""
    found = variants(figures.config)
    panels = list(dict.fromkeys((v.base, param) for v in found.values() for param in v.values))
    fig, axes = figures.plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    macro = macro_per_seed(figures.ppl)
    macro = macro[macro["size"] == figures.sizes[0]]
    for ax, (base, param) in zip(axes[0], panels):
        # One line per combination of the other swept hyperparameters.
        members = {name: v for name, v in found.items() if v.base == base and param in v.values}
        lines: dict[tuple, list] = {}
        for name, v in members.items():
            others = tuple((k, x) for k, x in v.values.items() if k != param)
            lines.setdefault(others, []).append((v.values[param], name))
        for others, points in lines.items():
            xs = [str(value) for value, _ in points]
            stats = [macro[macro.strategy == name]["macro"].agg(["mean", "std"]) for _, name in points]
            label = ", ".join(f"{k}={x}" for k, x in others) or f"swept {param}"
            ax.errorbar(xs, [s["mean"] for s in stats], yerr=[0 if np.isnan(s["std"]) else s["std"] for s in stats],
                        marker="o", capsize=3, label=label, color=figures.colour[points[0][1]])
        # Each line named once: the swept lines by their values, the references as they run.
        for reference, style, label in ((base, ":", f"{base} (as configured)"), ("uniform", "--", "uniform")):
            if reference in figures.strategies:
                ax.axhline(macro[macro.strategy == reference]["macro"].mean(), color=figures.colour[reference],
                           linestyle=style, label=label)
        ax.set_xlabel(f"{base}: {param}")
        ax.set_ylabel(primary_label("macro-average "))
        ax.set_title(f"Sweep of {base}'s {param} ({figures.sizes[0]}, {len(figures.grid['seeds'])} seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not panels:
        note(axes[0][0], "No grid.variants in this config.")
    return fig
