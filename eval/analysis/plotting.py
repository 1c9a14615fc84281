"""What every figure draws with: the tables it reads, one colour per strategy and per domain, and
the small drawing helpers the figure modules share (eval/analysis/figure_registry.py lists the
figures).

Every strategy keeps one colour in every figure (its position in ``grid.strategies``), every
domain another palette's colour. A figure whose data the runs lack says so on its canvas; on an
unfinished grid every figure names the cells its tables lack (``missing_line``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from eval.analysis.figure_registry import FORMATS
from eval.analysis.partial import read_table
from eval.analysis.tables import per_seed
from eval.metrics import PRIMARY
from mixbench.io import atomic_path

matplotlib.use("Agg")  # files only, on machines without a display
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)


def strategy_colours(strategies: list[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab10"]
    return {s: palette(i % 10) for i, s in enumerate(strategies)}


def domain_colours(domains: list[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["Dark2" if len(domains) <= 8 else "tab20"]
    return {d: palette(i % palette.N) for i, d in enumerate(domains)}


class FigureData:
    """The result tables a figure reads (written by ``python -m eval.analysis.aggregate``, each read
    when first asked for), the grid, pyplot and the colours; a figure function takes it and
    returns a matplotlib figure."""

    def __init__(self, config: dict):
        self.plt, self.config, self.grid = plt, config, config["grid"]
        self.tables = Path(config["results_dir"]) / "tables"
        self.strategies, self.sizes = self.grid["strategies"], self.grid["sizes"]
        self.domains = config["corpus"]["domains"]
        self.colour = strategy_colours(self.strategies)
        self.domain_colour = domain_colours(self.domains)
        self._read: dict[str, pd.DataFrame] = {}
        # {"size/strategy/seedN": why} of the cells the tables lack: perplexity.csv, which every grid
        # has, names them (eval/analysis/partial.py).
        names = self.tables / "perplexity.csv"
        self.missing = read_table(names)[1] if names.exists() else {}

    def read(self, table: str) -> pd.DataFrame:
        """A result table without the rows that mark missing cells."""
        if table not in self._read:
            self._read[table], missing = read_table(self.tables / f"{table}.csv")
            self.missing = {**self.missing, **missing}
        return self._read[table]

    def kept_cells(self) -> list[tuple[str, str, int]]:
        """The grid's cells the tables hold (every cell but the missing ones), in grid order."""
        return [(size, strategy, seed) for size in self.sizes for strategy in self.strategies
                for seed in self.grid["seeds"] if f"{size}/{strategy}/seed{seed}" not in self.missing]

    def missing_line(self) -> str | None:
        """The line each figure of an unfinished grid carries: the cells it lacks and why."""
        if not self.missing:
            return None
        return (f"Missing cells ({len(self.missing)}, see the tables): "
                + "; ".join(f"{cell} ({why})" for cell, why in self.missing.items()))

    ppl = property(lambda self: self.read("perplexity"))
    weights = property(lambda self: self.read("weights"))
    compute = property(lambda self: self.read("compute"))
    traj = property(lambda self: self.read("trajectories"))
    curves = property(lambda self: self.read("curves"))
    entropy = property(lambda self: self.read("entropy"))
    downstream_long = property(lambda self: self.read("downstream"))


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


def domain_panels(figures, traj: pd.DataFrame, value: str, *, width: float, empty: str) -> tuple:
    """One panel per (strategy, stage) of ``traj`` (trajectories.csv rows), each with a band per
    domain of ``value`` over the steps; (figure, [(axis, strategy, stage, rows)]). Without a panel
    the figure says ``empty`` on its canvas."""
    panels = list(dict.fromkeys(zip(traj["strategy"], traj["stage"])))
    fig, axes = figures.plt.subplots(1, max(1, len(panels)), figsize=(width * max(1, len(panels)), 4), squeeze=False)
    if not panels:
        note(axes[0][0], empty)
    drawn = []
    for ax, (strategy, stage) in zip(axes[0], panels):
        rows = traj[(traj.strategy == strategy) & (traj.stage == stage)]
        for domain in figures.domains:
            seed_band(ax, rows[rows.domain == domain], "step", value, figures.domain_colour[domain], domain)
        ax.grid(alpha=0.3)
        drawn.append((ax, strategy, stage, rows))
    return fig, drawn


def size_panels(sizes: list[str], width: float = 7.5, height: float = 4.0):
    fig, axes = plt.subplots(1, len(sizes), figsize=(width * len(sizes), height), squeeze=False)
    return fig, dict(zip(sizes, axes[0]))


def macro_per_seed(ppl: pd.DataFrame) -> pd.DataFrame:
    """size, strategy, seed and the macro average over domains of the primary held-out metric
    (eval/metrics.py: bits per byte), as in the perplexity table."""
    return per_seed(ppl, PRIMARY.column, "domain", summaries=True)["macro avg"].rename("macro").reset_index()


def primary_label(prefix: str = "") -> str:
    """The axis label of the primary held-out metric: ``prefix`` + "bits per byte (lower is better)"."""
    return f"{prefix}{PRIMARY.label} ({'higher' if PRIMARY.higher_is_better else 'lower'} is better)"


def save(fig, out_dir: Path, name: str, footer: str | None = None) -> list[Path]:
    """The figure as ``{name}.png`` and ``{name}.pdf`` in ``out_dir``, each written atomically;
    ``footer`` (an unfinished grid's missing cells) as a line of text below the axes."""
    paths = []
    fig.tight_layout()
    if footer:
        fig.text(0.01, 0.0, footer, ha="left", va="top", fontsize=7, color="darkred", wrap=True)
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            # Only with a footer: the box grows to hold it, where every other figure keeps its size.
            fig.savefig(tmp, format=fmt, dpi=150, **({"bbox_inches": "tight"} if footer else {}))
        paths.append(path)
    return paths
