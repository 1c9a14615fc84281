"""The landscape study's tables (config/landscape.yaml, docs/landscape.md): how far each strategy's
final model is from the best mixture of a simplex lattice (strategies/lattice.py).

Per grid seed s and size:

- the lattice's mixtures each trained one run (the lattice entry's swarm, at the final models'
  size and steps) scored on the test split (``RUN/eval/perplexity.json``, eval/harness/score_runs.py,
  the same lm-eval tasks as every final model's evaluation);
- the **chosen** mixture c(s) is the lattice run with the lowest mean held-out loss over domains on
  the validation split (its val.csv after the last step), the first on a tie: chosen without
  looking at the numbers it is scored on;
- a strategy's **regret** at seed s is its final model's test macro bits per byte minus c(s)'s,
  and its **rank** 1 + the number of lattice mixtures whose test macro bits per byte is lower.

Regrets are then compared over seeds exactly as the comparison table compares strategies with
uniform (eval/analysis/stats.py): mean, paired t 95% interval, exact sign-flip p, Holm across the
strategies, and the smallest regret the seeds detect with 80% power, beside the spread of the
lattice's mean test losses (best to worst), which a detectable regret must be well inside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.analysis.stats import holm, paired_test, smallest_p
from eval.analysis.tables import verdict
from eval.metrics import PRIMARY
from mixbench.errors import DataError
from mixbench.io import read_json
from models.upstream import final_heldout_loss
from strategies.runs import landscape_runs, lattice_stages

LATTICE_COLUMNS = ["size", "seed", "stage", "point", "val_macro_loss", "test_macro", "chosen"]


def lattice_entry(config: dict) -> str:
    """The strategies entry whose swarm is the study's lattice (``landscape.lattice``)."""
    return config["landscape"]["lattice"]


def lattice_runs(config: dict) -> pd.DataFrame:
    """One row per finished and scored lattice run: size, seed, stage, point (its index), its
    weights (``weight/<domain>``), val macro loss (nats per token), test bits per byte per domain
    (``test/<domain>``) and their macro average, and whether it is its seed's chosen mixture."""
    domains = config["corpus"]["domains"]
    stages = lattice_stages(config, lattice_entry(config))
    rows = []
    for size, seed, point, stage, folder in landscape_runs(config):
        run = Path(folder)
        scored = run / "eval" / "perplexity.json"
        if not scored.is_file():
            continue
        tasks = read_json(scored)["tasks"]
        missing = [d for d in domains if d not in tasks]
        if missing:
            raise DataError(f"{scored} has no result for domain(s) {missing}; rescore it (delete the file)")
        test = [tasks[d][PRIMARY.name] for d in domains]
        mixture = read_json(run / "weights.json")["final_weights"]
        rows.append({"size": size, "seed": seed, "stage": stage, "point": point,
                     **{f"weight/{d}": w for d, w in zip(domains, mixture)},
                     "val_macro_loss": float(np.mean(final_heldout_loss(run, domains))),
                     **{f"test/{d}": v for d, v in zip(domains, test)}, "test_macro": float(np.mean(test))})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=LATTICE_COLUMNS)
    frame["chosen"] = False
    for _, group in frame.groupby(["size", "seed"], sort=False):
        if len(group) == len(stages):  # a seed's choice only once its whole lattice is scored
            frame.loc[group["val_macro_loss"].idxmin(), "chosen"] = True  # idxmin: the first on a tie
    return frame


def regret_rows(lattice: pd.DataFrame, macro: pd.DataFrame, strategies: list[str]) -> list[dict]:
    """Per size and strategy, the paired regret over the seeds where both the strategy and a
    complete lattice exist. ``macro``: index (size, strategy, seed), column ``macro avg`` (test
    bits per byte); ``lattice``: ``lattice_runs``' rows (a seed counts once it has a chosen
    mixture, which ``lattice_runs`` marks only on a complete lattice)."""
    rows, macro = [], macro.sort_index()
    for size, runs in lattice.groupby("size", sort=False):
        seeds_done = sorted(set(runs.loc[runs["chosen"], "seed"]))  # lattice_runs chooses on complete seeds only
        runs = runs[runs["seed"].isin(seeds_done)]
        chosen = runs[runs["chosen"]].set_index("seed")["test_macro"]
        spread = runs.groupby("point")["test_macro"].mean()
        rivals = [s for s in strategies if (size, s) in macro.index.droplevel("seed")]
        for strategy in rivals:
            ours = macro.loc[(size, strategy), "macro avg"]
            seeds = sorted(set(ours.index) & set(seeds_done))
            if len(seeds) < 2:
                continue
            test = paired_test(ours.loc[seeds], chosen.loc[seeds])
            ranks = [1 + int((runs.loc[runs["seed"] == s, "test_macro"] < ours.loc[s]).sum()) for s in seeds]
            rows.append({"size": size, "strategy": strategy, "metric": f"{PRIMARY.label}, macro avg",
                         "strategy_mean": float(ours.loc[seeds].mean()), "chosen_mean": float(chosen.loc[seeds].mean()),
                         "regret": test.mean, "ci_low": test.low, "ci_high": test.high, "sd_of_differences": test.sd,
                         "p_sign_flip": test.p_value, "min_detectable": test.mdd, "pairs": test.pairs,
                         "comparisons": len(rivals), "mean_rank": float(np.mean(ranks)), "points": len(spread),
                         "lattice_best": float(spread.min()), "lattice_worst": float(spread.max()),
                         "lattice_spread": float(spread.max() - spread.min())})
    for group in pd.DataFrame(rows).groupby("size", sort=False).groups.values() if rows else []:
        for i, p in zip(group, holm([rows[i]["p_sign_flip"] for i in group])):
            rows[i]["p_holm"] = float(p)
            # verdict() names the difference as a strategy against a baseline; a positive regret is "worse"
            rows[i]["verdict"] = verdict({**rows[i], "difference": rows[i]["regret"]}, higher_is_better=False)
    return rows


def regret_markdown(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "size": frame["size"], "strategy": frame["strategy"],
        "test macro bpb": frame["strategy_mean"].map(lambda v: f"{v:.4f}"),
        "regret [95% t-interval]": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                                    for d, lo, hi in zip(frame["regret"], frame["ci_low"], frame["ci_high"])],
        "p (sign-flip)": frame["p_sign_flip"].map(lambda p: f"{p:.3g}"),
        "p (Holm)": frame["p_holm"].map(lambda p: f"{p:.3g}"),
        "detectable at 80% power": frame["min_detectable"].map(lambda d: f"{d:.4f}"),
        "rank among the lattice": [f"{r:.1f} of {int(n)}" for r, n in zip(frame["mean_rank"], frame["points"])],
        "seeds": frame["pairs"], "verdict": frame["verdict"],
    })


def regret_note(frame: pd.DataFrame, lattice: pd.DataFrame) -> str:
    """What the study can show, from its own numbers: the lattice's spread against the largest
    regret the seeds could miss."""
    pairs, comparisons = int(frame["pairs"].min()), int(frame["comparisons"].max())
    floor = smallest_p(pairs) * comparisons
    worst_mdd, spread = float(frame["min_detectable"].max()), float(frame["lattice_spread"].max())
    chosen = lattice[lattice["chosen"]]
    return (f"The lattice: {int(frame['points'].max())} mixtures; their mean test macro bits per byte spans "
            f"{frame['lattice_best'].min():.4f} to {frame['lattice_worst'].max():.4f} ({spread:.4f}). The "
            f"validation-chosen mixture scores {chosen['test_macro'].mean():.4f} on the test split (mean over "
            f"{len(chosen)} seeds). With {pairs} seeds the smallest sign-flip p after Holm over {comparisons} "
            f"strateg{'y' if comparisons == 1 else 'ies'} is {min(1.0, floor):.3g}; the smallest regret the seeds "
            f"detect with 80% power is at most {worst_mdd:.4f} (the largest over the strategies), "
            f"{worst_mdd / spread:.1%} of the lattice's spread.")


def lattice(results) -> None:
    """``lattice.csv``: every finished and scored lattice run."""
    results.write_csv(lattice_runs(results.config), "lattice")


def landscape(results) -> None:
    """``landscape.csv``/``.md``: the regret of every strategy."""
    lattice = lattice_runs(results.config)
    frame = pd.DataFrame(regret_rows(lattice, results.primary, results.grid["strategies"]))
    results.write_csv(frame, "landscape")
    if frame.empty:
        shown = pd.DataFrame({"note": ["no regret: it needs at least 2 seeds with a finished, scored lattice and the "
                                       "strategy's final model"]})
        title = "Regret against the lattice"
    else:
        shown = regret_markdown(frame)
        title = ("Each strategy's test macro bits per byte minus that of the lattice mixture chosen on the validation "
                 "split, on the same seeds: mean regret [paired t 95% interval], exact sign-flip p, Holm-adjusted "
                 "across the strategies, the smallest regret the seeds detect with 80% power, and the mean rank of the "
                 "strategy's final model among the lattice's mixtures on the test split. " + regret_note(frame, lattice))
    results.write_sections("landscape", [(title, shown)])

