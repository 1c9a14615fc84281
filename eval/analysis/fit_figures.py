"""The figure of a ``fit`` stage (RegMix): how well the regression ranks the swarm's runs, and
where the chosen mixture lies among the swarm's. Drawn from fits.csv and swarm.csv, for the
first size of the grid (a fixed-size swarm is the same for every final size)."""

from __future__ import annotations

from itertools import cycle

import numpy as np
import pandas as pd

from eval.analysis.plotting import note

SEED_MARKERS = "osD^v<>p*h"  # repeated beyond ten seeds


def regmix_fit(figures):
    fits, swarm = figures.read("fits"), figures.read("swarm")
    strategies = list(dict.fromkeys(fits["strategy"])) if len(fits) else []
    fig, axes = figures.plt.subplots(max(1, len(strategies)), 2, figsize=(12, 4.5 * max(1, len(strategies))),
                                     squeeze=False)
    if not strategies:
        note(axes[0, 0], "No fit stage in this grid.")
        note(axes[0, 1], "No fit stage in this grid.")
        return fig
    size = next(s for s in figures.sizes if (fits["size"] == s).any())
    for row, strategy in zip(axes, strategies):
        mine = fits[(fits["strategy"] == strategy) & (fits["size"] == size)]
        runs = swarm[(swarm["strategy"] == strategy) & (swarm["size"] == size)]
        predicted_against_observed(row[0], mine, runs, figures.colour[strategy], f"{strategy} ({size})")
        chosen_against_swarm(row[1], mine, runs, figures.domains, figures.colour[strategy], f"{strategy} ({size})")
    return fig


def predicted_against_observed(ax, fits: pd.DataFrame, runs: pd.DataFrame, colour, title: str) -> None:
    for marker, (seed, group) in zip(cycle(SEED_MARKERS), runs.groupby("seed", sort=True)):
        rho = fits.loc[fits["seed"] == seed, "spearman"].iat[0]
        ax.scatter(group["observed"], group["predicted_out_of_fold"], marker=marker, color=colour, alpha=0.7,
                   label=f"seed {seed}: ρ = {rho:.2f} ({len(group)} runs)")
    low = min(runs["observed"].min(), runs["predicted_out_of_fold"].min())
    high = max(runs["observed"].max(), runs["predicted_out_of_fold"].max())
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    target = fits["target"].iat[0]
    ax.set_xlabel(f"observed held-out loss ({target})")
    ax.set_ylabel("predicted, by a fit without the run (k-fold)")
    ax.set_title(f"Swarm: predicted against observed, {title}; dotted: equal")
    ax.legend(fontsize=8)


def chosen_against_swarm(ax, fits: pd.DataFrame, runs: pd.DataFrame, domains: list[str], colour, title: str) -> None:
    x = np.arange(len(domains))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=len(runs))  # a fixed spread, for overlap only
    for i, domain in enumerate(domains):
        ax.scatter(i + jitter, runs[f"weight/{domain}"], color="lightgrey", s=12,
                   label="swarm mixtures" if i == 0 else None)
    ax.plot(x, fits[[f"natural/{d}" for d in domains]].iloc[0], color="black", marker="_", markersize=18,
            linestyle="none", label="natural")
    for marker, (_, fit) in zip(cycle(SEED_MARKERS), fits.iterrows()):
        ax.scatter(x, [fit[f"weight/{d}"] for d in domains], color=colour, marker=marker, zorder=3,
                   label=f"chosen, seed {fit['seed']}")
    ax.set_xticks(x, domains, rotation=30, ha="right")
    ax.set_ylabel("weight")
    ax.set_title(f"Chosen mixture among the swarm's, {title}")
    ax.legend(fontsize=8)
