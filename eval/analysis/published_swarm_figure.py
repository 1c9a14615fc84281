"""The published-swarm track's figure (eval/analysis/published_swarm.py has its numbers): each
regressor's held-out Spearman ρ per target, and how far its chosen mixture's predicted macro
loss lies from the best held-out run's observed one."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from eval.analysis.plotting import save  # noqa: E402

MACRO = "macro"


def figure(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = list(dict.fromkeys(frame.target))
    kinds = list(dict.fromkeys(frame.regressor))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    for offset, kind in enumerate(kinds):
        rows = frame[frame.regressor == kind].set_index("target").loc[targets]
        shift = (offset - (len(kinds) - 1) / 2) * 0.12
        left.plot([i + shift for i in range(len(targets))], rows.spearman, "o", label=kind, markersize=5)
    left.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize=8)
    left.set_ylabel("Spearman ρ on the held-out runs")
    left.set_title("Ranking the held-out runs, per target")
    left.axhline(1.0, color="grey", lw=0.5)
    left.legend(fontsize=8, ncol=len(kinds), loc="lower left")
    macro = frame[frame.target == MACRO].set_index("regressor").loc[kinds]
    right.barh(kinds, macro.chosen_predicted - macro.best_heldout_observed, color="tab:blue")
    right.axvline(0, color="black", lw=0.8)
    right.set_xlabel("chosen mixture's predicted macro loss\nminus the best held-out run's observed")
    right.set_title("The choice, in the regressor's own eyes", fontsize=10)
    paths = save(fig, out_dir, "published_swarm")
    plt.close(fig)
    return paths
