"""The figures every grid has, from the result tables: the final mixtures and their
trajectories, bits per byte, downstream accuracy, compute against quality and model size. Each
takes the ``FigureData`` of eval/analysis/plotting.py and returns a matplotlib figure."""

from __future__ import annotations

import pandas as pd

from eval.analysis.plotting import domain_panels, grouped_bars, macro_per_seed, primary_label, size_panels
from eval.analysis.tables import downstream_summary
from eval.metrics import PRIMARY


def mixtures(figures):
    fig, axes = size_panels(figures.sizes)
    for size, ax in axes.items():
        grouped_bars(ax, figures.weights[figures.weights["size"] == size], figures.domains, "domain", "weight",
                     figures.strategies, figures.colour)
        ax.set_ylabel("sampling weight (share of training tokens)")
        ax.set_title(f"Final mixture ({size})")
        ax.legend(fontsize=8)
    return fig


def bits_per_byte(figures):
    """The primary held-out metric (eval/metrics.py) per domain and its macro average."""
    fig, axes = size_panels(figures.sizes, width=9)
    macro = macro_per_seed(figures.ppl).assign(domain="macro avg", **{PRIMARY.column: lambda f: f["macro"]})
    frame = pd.concat([figures.ppl, macro[figures.ppl.columns.intersection(macro.columns)]])
    for size, ax in axes.items():
        grouped_bars(ax, frame[frame["size"] == size], [*figures.domains, "macro avg"], "domain", PRIMARY.column,
                     figures.strategies, figures.colour)
        ax.set_ylabel(primary_label())
        ax.set_title(f"Held-out test split ({size}, {len(figures.grid['seeds'])} seeds)")
        ax.legend(fontsize=8, ncol=2)
    return fig


def trajectories(figures):
    """One panel per (strategy, stage) whose mixture changes during training (trajectories.csv,
    read from the runs' log.csv), for the first size."""
    traj = figures.traj[figures.traj["size"] == figures.sizes[0]]
    fig, panels = domain_panels(figures, traj, "weight", width=5, empty="The mixture of no stage of this grid changes "
                                "during training (the weights of every run's log.csv are constant).")
    for ax, strategy, stage, rows in panels:
        ax.set_title(f"{strategy}: {stage} stage ({rows['stage_size'].iloc[0]})", color=figures.colour[strategy])
        ax.set_xlabel("training step")
        ax.set_ylabel("domain weight" + (" (sampling × loss weights)" if rows["mixture"].iat[0] == "loss-weighted"
                                         else ""))
    if panels:
        panels[0][0].legend(fontsize=8)
    return fig


def downstream(figures):
    summary, _ = downstream_summary(figures.downstream_long)
    summary["item"] = summary["task"] + "\n" + summary["metric"]
    items = list(dict.fromkeys(summary["item"]))
    fig, axes = size_panels(figures.sizes, width=max(6, 1.2 * len(items)))
    for size, ax in axes.items():
        grouped_bars(ax, summary[summary["size"] == size], items, "item", "value", figures.strategies, figures.colour)
        for i, item in enumerate(items):
            if item.startswith("mixbench_choice"):  # chance: one candidate in `choices`
                chance = 1 / figures.config["downstream"]["choices"]
                ax.hlines(chance, i - 0.45, i + 0.45, colors="grey", linestyles="dashed")
        ax.set_ylabel("accuracy (higher is better)")
        ax.set_title(f"Downstream, zero-shot ({size}; dashed: chance)")
        ax.legend(fontsize=8)
    return fig


def compute_vs_quality(figures):
    fig, ax = figures.plt.subplots(figsize=(6.5, 4.5))
    flops = figures.compute.groupby(["size", "strategy", "seed"], sort=False)["flops"].sum().rename("flops")
    both = macro_per_seed(figures.ppl).join(flops, on=["size", "strategy", "seed"])
    markers = dict(zip(figures.sizes, "osD^v<>"))
    for (size, strategy), g in both.groupby(["size", "strategy"], sort=False):
        ax.errorbar(g["flops"].mean(), g["macro"].mean(), yerr=g["macro"].std() if len(g) > 1 else None,
                    marker=markers[size], color=figures.colour[strategy], capsize=3, linestyle="none",
                    label=strategy if size == figures.sizes[0] else None)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs, all stages (log scale)")
    ax.set_ylabel(primary_label("macro-average "))
    ax.set_title("Compute against quality"
                 + (f" (markers: {', '.join(figures.sizes)})" if len(figures.sizes) > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def bpb_vs_size(figures):
    fig, ax = figures.plt.subplots(figsize=(6.5, 4.5))
    params = figures.compute[figures.compute.stage == "final"].groupby("size")["parameters"].first()
    macro = macro_per_seed(figures.ppl)
    for strategy in figures.strategies:
        g = macro[macro.strategy == strategy].groupby("size", sort=False)["macro"].agg(["mean", "std"])
        g = g.reindex(figures.sizes)
        ax.errorbar(params.reindex(figures.sizes), g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3,
                    color=figures.colour[strategy], label=strategy)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(primary_label("macro-average "))
    ax.set_title(f"{PRIMARY.label.capitalize()} against model size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
