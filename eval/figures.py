"""Paper figures from the result tables (and, for DoGraph, the runs' probe snapshots and traces).

    python -m eval.figures --config config/config.yaml

Reads ``{results_dir}/tables/*.csv`` (written by ``python -m eval.aggregate``) and writes each
figure as PNG and PDF to ``{results_dir}/figures/``. Every strategy keeps one colour in every
figure (its position in ``grid.strategies``), every domain another palette's colour. Which
figures exist follows from the config alone (``figure_names``), so the workflow knows its
outputs before anything runs; a figure whose data the runs lack says so on its canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.tables import downstream_summary, per_seed
from mixbench.cli import config_command
from mixbench.io import atomic_path

FORMATS = ("png", "pdf")
# Each figure's caption for the Snakemake report: rules/report/figures/{name}.rst.


def figure_names(config: dict) -> list[str]:
    """The figures this config produces, known before any run exists."""
    from eval.collect import strategy_class

    names = ["mixtures", "trajectories", "bits_per_byte", "val_curves", "mixture_entropy"]
    if config["downstream"]["tasks"]:
        names.append("downstream")
    names += ["compute_vs_quality", "val_loss_vs_flops"]
    if len(config["grid"]["sizes"]) > 1:
        names.append("bpb_vs_size")
    if config["grid"]["variants"]:
        names.append("sweeps")
    for strategy in config["grid"]["strategies"]:  # e.g. DoReMi's excess losses, DoGraph's gradient PCA
        names += [n for n in strategy_class(config, strategy).extra_figures if n not in names]
    return names


def strategy_colours(strategies: list[str]) -> dict[str, tuple]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    return {s: palette(i % 10) for i, s in enumerate(strategies)}


def domain_colours(domains: list[str]) -> dict[str, tuple]:
    import matplotlib

    palette = matplotlib.colormaps["Dark2" if len(domains) <= 8 else "tab20"]
    return {d: palette(i % palette.N) for i, d in enumerate(domains)}


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def grouped_bars(ax, frame: pd.DataFrame, items: list[str], item_col: str, value: str, strategies: list[str],
                 colours: dict) -> None:
    """Bars per item (x) and strategy (colour): the mean over seeds with std error bars."""
    stats = frame.groupby(["strategy", item_col], sort=False)[value].agg(["mean", "std"])
    width = 0.8 / max(1, len(strategies))
    x = np.arange(len(items))
    for i, s in enumerate(strategies):
        means = [stats["mean"].get((s, it), np.nan) for it in items]
        stds = [stats["std"].get((s, it), np.nan) for it in items]
        ax.bar(x + (i - (len(strategies) - 1) / 2) * width, means, width, yerr=np.nan_to_num(stds), capsize=2,
               color=colours[s], label=s)
    ax.set_xticks(x, items, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def seed_band(ax, frame: pd.DataFrame, x: str, y: str, colour, label: str | None, **style) -> None:
    """Mean over seeds of ``y`` at each ``x``, with the range from the lowest to the highest seed shaded."""
    by_x = frame.groupby(x)[y]
    mean = by_x.mean()
    ax.plot(mean.index, mean.values, color=colour, label=label, **style)
    ax.fill_between(mean.index, by_x.min().values, by_x.max().values, color=colour, alpha=0.2, linewidth=0)


def size_panels(plt, sizes: list[str], width: float = 7.5, height: float = 4.0):
    fig, axes = plt.subplots(1, len(sizes), figsize=(width * len(sizes), height), squeeze=False)
    return fig, dict(zip(sizes, axes[0]))


def macro_per_seed(ppl: pd.DataFrame) -> pd.DataFrame:
    """size, strategy, seed and the macro-average bits per byte, as in the perplexity table."""
    return per_seed(ppl, "bits_per_byte", "domain", summaries=True)["macro avg"].rename("macro").reset_index()


class Figures:
    """Draws each figure from the tables; one method per name in ``figure_names``."""

    def __init__(self, config: dict):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.config, self.grid = plt, config, config["grid"]
        tables = Path(config["results_dir"]) / "tables"
        read = lambda name: pd.read_csv(tables / f"{name}.csv")  # noqa: E731
        self.ppl, self.weights, self.compute = read("perplexity"), read("weights"), read("compute")
        self.traj = read("trajectories")
        self.curves, self.entropy = read("curves"), read("entropy")
        self.downstream_long = read("downstream") if config["downstream"]["tasks"] else None
        self.strategies, self.sizes = self.grid["strategies"], self.grid["sizes"]
        self.domains = config["corpus"]["domains"]
        self.colour = strategy_colours(self.strategies)
        self.domain_colour = domain_colours(self.domains)

    def mixtures(self):
        fig, axes = size_panels(self.plt, self.sizes)
        for size, ax in axes.items():
            grouped_bars(ax, self.weights[self.weights["size"] == size], self.domains, "domain", "weight",
                         self.strategies, self.colour)
            ax.set_ylabel("sampling weight (share of training tokens)")
            ax.set_title(f"Final mixture ({size})")
            ax.legend(fontsize=8)
        return fig

    def bits_per_byte(self):
        fig, axes = size_panels(self.plt, self.sizes, width=9)
        macro = macro_per_seed(self.ppl).assign(domain="macro avg", bits_per_byte=lambda f: f["macro"])
        frame = pd.concat([self.ppl, macro[self.ppl.columns.intersection(macro.columns)]])
        for size, ax in axes.items():
            grouped_bars(ax, frame[frame["size"] == size], [*self.domains, "macro avg"], "domain", "bits_per_byte",
                         self.strategies, self.colour)
            ax.set_ylabel("bits per byte (lower is better)")
            ax.set_title(f"Held-out test split ({size}, {len(self.grid['seeds'])} seeds)")
            ax.legend(fontsize=8, ncol=2)
        return fig

    def trajectories(self):
        traj = self.traj[self.traj["size"] == self.sizes[0]]
        moving = [(s, st) for (s, st), g in traj.groupby(["strategy", "stage"], sort=False)
                  if g.groupby("domain")["weight"].std().max() > 1e-9]
        fig, axes = self.plt.subplots(1, max(1, len(moving)), figsize=(5 * max(1, len(moving)), 4), squeeze=False)
        if not moving:
            note(axes[0][0], "No strategy in this grid changes its weights during training.")
            return fig
        for ax, (strategy, stage) in zip(axes[0], moving):
            rows = traj[(traj.strategy == strategy) & (traj.stage == stage)]
            for d in self.domains:
                seed_band(ax, rows[rows.domain == d], "step", "weight", self.domain_colour[d], d)
            ax.set_title(f"{strategy}: {stage} stage ({rows['stage_size'].iloc[0]})", color=self.colour[strategy])
            ax.set_xlabel("training step")
            ax.set_ylabel("domain weight")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        return fig

    def downstream(self):
        long = self.downstream_long
        summary, _ = downstream_summary(long)
        summary["item"] = summary["task"] + "\n" + summary["metric"]
        items = list(dict.fromkeys(summary["item"]))
        fig, axes = size_panels(self.plt, self.sizes, width=max(6, 1.2 * len(items)))
        for size, ax in axes.items():
            grouped_bars(ax, summary[summary["size"] == size], items, "item", "value", self.strategies, self.colour)
            for i, item in enumerate(items):
                if item.startswith("mixbench_choice"):  # chance: one candidate in `choices`
                    chance = 1 / self.config["downstream"]["choices"]
                    ax.hlines(chance, i - 0.45, i + 0.45, colors="grey", linestyles="dashed")
            ax.set_ylabel("accuracy (higher is better)")
            ax.set_title(f"Downstream, zero-shot ({size}; dashed: chance)")
            ax.legend(fontsize=8)
        return fig

    def compute_vs_quality(self):
        fig, ax = self.plt.subplots(figsize=(6.5, 4.5))
        flops = self.compute.groupby(["size", "strategy", "seed"], sort=False)["flops"].sum().rename("flops")
        both = macro_per_seed(self.ppl).join(flops, on=["size", "strategy", "seed"])
        markers = dict(zip(self.sizes, "osD^v<>"))
        for (size, strategy), g in both.groupby(["size", "strategy"], sort=False):
            ax.errorbar(g["flops"].mean(), g["macro"].mean(), yerr=g["macro"].std() if len(g) > 1 else None,
                        marker=markers[size], color=self.colour[strategy], capsize=3, linestyle="none",
                        label=strategy if size == self.sizes[0] else None)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs, all stages (log scale)")
        ax.set_ylabel("macro-average bits per byte (lower is better)")
        ax.set_title("Compute against quality" + (f" (markers: {', '.join(self.sizes)})" if len(self.sizes) > 1 else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    def bpb_vs_size(self):
        fig, ax = self.plt.subplots(figsize=(6.5, 4.5))
        params = self.compute[self.compute.stage == "final"].groupby("size")["parameters"].first()
        macro = macro_per_seed(self.ppl)
        for strategy in self.strategies:
            g = macro[macro.strategy == strategy].groupby("size", sort=False)["macro"].agg(["mean", "std"])
            g = g.reindex(self.sizes)
            ax.errorbar(params.reindex(self.sizes), g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3,
                        color=self.colour[strategy], label=strategy)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel("macro-average bits per byte (lower is better)")
        ax.set_title("Bits per byte against model size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    def val_curves(self):
        from eval.curve_figures import val_curves

        return val_curves(self)

    def mixture_entropy(self):
        from eval.curve_figures import mixture_entropy

        return mixture_entropy(self)

    def val_loss_vs_flops(self):
        from eval.curve_figures import val_loss_vs_flops

        return val_loss_vs_flops(self)

    def sweeps(self):
        from eval.curve_figures import sweeps

        return sweeps(self)

    def doremi_excess(self):
        from eval.curve_figures import doremi_excess

        return doremi_excess(self)

    def gradient_pca(self):
        from eval.gradient_figures import gradient_pca

        return gradient_pca(self)

    def regmix_fit(self):
        from eval.fit_figures import regmix_fit

        return regmix_fit(self)

    def dograph_graph(self):
        from eval.gradient_figures import graph_snapshots

        return graph_snapshots(self)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = []
    fig.tight_layout()
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    return paths


def make_figures(config: dict) -> None:
    figures = Figures(config)
    out = Path(config["results_dir"]) / "figures"
    for name in figure_names(config):
        fig = getattr(figures, name)()
        paths = save(fig, out, name)
        figures.plt.close(fig)
        print(f"wrote {', '.join(str(p) for p in paths)}", flush=True)


main = config_command(make_figures, __doc__)


if __name__ == "__main__":
    main()
