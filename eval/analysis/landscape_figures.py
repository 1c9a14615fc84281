"""The landscape study's figure (eval/analysis/landscape.py has its numbers): the lattice's mean
test bits per byte over the simplex, with every strategy's final mixture on it.

For three domains the simplex is a triangle, drawn with barycentric coordinates: a mixture
(w_1, w_2, w_3) sits at x = w_2 + w_3 / 2, y = w_3 √3 / 2, so each corner is one domain alone.
For any other number of domains the lattice is drawn as its mixtures sorted by their mean test
loss, each strategy as a line at its own mean test loss, labelled with its nearest lattice
mixture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eval.analysis.plotting import macro_per_seed, note, primary_label
from eval.metrics import PRIMARY


def barycentric_xy(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates of mixtures (n, 3) in the triangle with corners (0, 0), (1, 0), (1/2, √3/2)."""
    weights = np.asarray(weights, dtype=float)
    return weights[:, 1] + weights[:, 2] / 2, weights[:, 2] * np.sqrt(3) / 2


def strategy_mixtures(figures, size: str) -> pd.DataFrame:
    """Each strategy's final mixture at ``size``, mean over seeds (index strategy, columns domains)."""
    weights = figures.weights
    rows = weights[weights["size"] == size]
    return rows.pivot_table(index="strategy", columns="domain", values="weight", aggfunc="mean")[figures.domains]


def final_trajectories(figures, size: str) -> dict[str, np.ndarray]:
    """{strategy: (steps, K) mean mixture over seeds} of every final stage whose mixture changes."""
    traj = figures.traj
    rows = traj[(traj["size"] == size) & (traj["stage"] == "final")]
    paths = {}
    for strategy, group in rows.groupby("strategy", sort=False):
        mean = group.pivot_table(index="step", columns="domain", values="weight", aggfunc="mean")
        paths[strategy] = mean[figures.domains].to_numpy()
    return paths


def ternary(ax, figures, lattice: pd.DataFrame, size: str) -> None:
    domains = figures.domains
    points = lattice.groupby("point").agg({**{f"weight/{d}": "first" for d in domains}, "test_macro": "mean"})
    x, y = barycentric_xy(points[[f"weight/{d}" for d in domains]].to_numpy())
    ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="black", linewidth=0.8)
    if len(points) >= 3:
        filled = ax.tricontourf(x, y, points["test_macro"], levels=12, cmap="viridis_r", alpha=0.85)
        figures.plt.colorbar(filled, ax=ax, label=primary_label("lattice mean test "))
    ax.scatter(x, y, c="white", edgecolors="black", s=14, zorder=3, linewidths=0.5)
    chosen = lattice[lattice["chosen"]].groupby("point").size()
    cx, cy = barycentric_xy(points.loc[chosen.index, [f"weight/{d}" for d in domains]].to_numpy())
    ax.scatter(cx, cy, marker="*", s=60 + 40 * chosen.to_numpy(), c="gold", edgecolors="black", zorder=4,
               label="chosen on val (size: seeds)")
    for strategy, path in final_trajectories(figures, size).items():
        px, py = barycentric_xy(path)
        ax.plot(px, py, color=figures.colour[strategy], linewidth=1, alpha=0.8, zorder=4)
    mixtures = strategy_mixtures(figures, size)
    for strategy in mixtures.index:
        sx, sy = barycentric_xy(mixtures.loc[[strategy]].to_numpy())
        ax.scatter(sx, sy, marker="o", s=45, color=figures.colour[strategy], edgecolors="black", zorder=5,
                   label=strategy)
    for (cx_, cy_), domain, align in zip([(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)], domains,
                                         [("right", "top"), ("left", "top"), ("center", "bottom")]):
        ax.text(cx_, cy_, f" {domain} ", ha=align[0], va=align[1], fontsize=9)
    ax.set_xlim(-0.15, 1.15)  # room for the corners' labels
    ax.set_ylim(-0.08, np.sqrt(3) / 2 + 0.08)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.legend(loc="upper left", fontsize=7, frameon=False, bbox_to_anchor=(-0.05, 1.0))


def sorted_profile(ax, figures, lattice: pd.DataFrame, size: str) -> None:
    domains = figures.domains
    points = lattice.groupby("point").agg({**{f"weight/{d}": "first" for d in domains}, "test_macro": "mean"})
    ordered = points.sort_values("test_macro")
    ax.plot(np.arange(1, len(ordered) + 1), ordered["test_macro"], "o", color="grey", markersize=3,
            label="lattice mixtures")
    macro = macro_per_seed(figures.ppl)
    macro = macro[macro["size"] == size].groupby("strategy")["macro"].mean()
    mixtures = strategy_mixtures(figures, size)
    grid_weights = points[[f"weight/{d}" for d in domains]].to_numpy()
    for strategy, value in macro.items():
        nearest = int(np.argmin(np.abs(grid_weights - mixtures.loc[strategy].to_numpy()).sum(axis=1)))
        ax.axhline(value, color=figures.colour[strategy], linewidth=1,
                   label=f"{strategy} (nearest: ({', '.join(f'{w:.2f}' for w in grid_weights[nearest])}))")
    ax.set_xlabel("lattice mixtures, best first")
    ax.set_ylabel(primary_label("test "))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def landscape(figures):
    lattice = figures.read("lattice")
    sizes = list(dict.fromkeys(lattice["size"])) or figures.sizes[:1]
    fig, axes = figures.plt.subplots(1, len(sizes), figsize=(7.5 * len(sizes), 6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rows = lattice[lattice["size"] == size]
        if rows.empty:
            note(ax, "no lattice run is finished and scored yet")
        elif len(figures.domains) == 3:
            ternary(ax, figures, rows, size)
        else:
            sorted_profile(ax, figures, rows, size)
        ax.set_title(f"{size}: the lattice's mean test {PRIMARY.label} and each strategy's final mixture", fontsize=9,
                     pad=14)
    return fig
