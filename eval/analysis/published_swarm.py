"""The published-swarm track (docs/published_swarm.md, config/published_swarm.yaml): every
regressor of strategies/regressors.py fitted on a released swarm's training runs and scored on its
held-out runs, with no model of mixbench's trained.

    python -m eval.analysis.published_swarm --config config/published_swarm.yaml

For each regressor and target (each scored domain's loss, and ``macro``, their mean):
- ``spearman``: Spearman ρ between predicted and observed loss over the held-out runs;
- ``ranking_accuracy``: the share of held-out pairs with different observed losses that the
  prediction orders the same way (a tie in the prediction counts half);
- ``chosen_predicted``: the predicted loss of the mixture the regressor chooses (the mean of the
  ``top_k`` of ``candidates`` mixtures drawn from Dir(1 · prior), as RegMix's notebook chooses),
  beside ``best_heldout_observed`` and ``best_heldout_predicted``, the best held-out run's
  observed and predicted loss.
Bimix's law is per domain: its macro prediction is the mean of its per-domain predictions.
No fit sees the held-out runs (LightGBM runs its full 1,000 rounds).

The notebook table repeats the released notebook's own procedure (LightGBM's released
settings, stopped early on the held-out runs, so its ρ has seen them) per domain and sets it
beside the correlations the notebook printed.

Outputs, under the config's results_dir: tables/published_swarm.{csv,md,tex},
tables/published_swarm_notebook.{csv,md} and figures/published_swarm.{png,pdf}.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mixbench.io import write_text
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError
from strategies import grid_config
from strategies.regression_mixing import candidate_mixtures, mean_of_best
from strategies.regressors import MixtureRegressor
from strategies.swarm_files import SwarmRuns, read_swarm

MACRO = "macro"
NAME = "published_swarm"


def ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values)  # +inf (bimix where a domain has no weight) ranks last, ties share a rank


def spearman(predicted: np.ndarray, observed: np.ndarray) -> float:
    """scipy's Spearman ρ (ranks with ties averaged, so +inf predictions rank last together)."""
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, observed).statistic)


def ranking_accuracy(predicted: np.ndarray, observed: np.ndarray) -> float:
    first, second = np.triu_indices(len(observed), 1)
    order_p, order_o = ranks(predicted), np.asarray(observed, dtype=np.float64)
    sign_p, sign_o = np.sign(order_p[first] - order_p[second]), np.sign(order_o[first] - order_o[second])
    counted = sign_o != 0
    agree = np.where(sign_p == 0, 0.5, (sign_p == sign_o).astype(float))
    return float(agree[counted].mean())


def read_prior(path: Path, domains: list[str]) -> np.ndarray:
    """The token shares the candidates are drawn around: a CSV of ``domain,share`` rows."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        shares = {row["domain"]: float(row["share"]) for row in csv.DictReader(handle)}
    if sorted(shares) != sorted(domains):
        raise ConfigError(f"{path} gives shares of {sorted(shares)}, the swarm's mixtures are over {sorted(domains)}")
    prior = np.array([shares[d] for d in domains])
    return prior / prior.sum()  # the released shares sum to 1 within their 9 decimals


class Track:
    def __init__(self, settings: dict):
        self.settings = settings
        self.train = read_swarm(settings["train"]["mixtures"], settings["train"]["losses"])
        self.heldout = read_swarm(settings["heldout"]["mixtures"], settings["heldout"]["losses"])
        self.domains = self.train.mixture_domains
        if self.heldout.mixture_domains != self.domains or self.heldout.loss_domains != self.train.loss_domains:
            raise ConfigError("the held-out runs' files must have the training runs' domains in the same order")
        self.scored = self.train.loss_domains
        self.prior = read_prior(settings["prior"], self.domains)
        self.pool = candidate_mixtures(self.prior, settings["candidates"], seed=settings["seed"], draws="released")

    def target(self, runs: SwarmRuns, target: str) -> np.ndarray:
        return runs.losses.mean(axis=1) if target == MACRO else runs.loss_of(target)

    def regressors(self, kind: str, target: str) -> list[MixtureRegressor]:
        """The fitted regressor(s) whose mean prediction is the target's; bimix's macro is one per domain."""
        per_domain = kind == "bimix" and target == MACRO
        fitted = []
        for name in (self.scored if per_domain else [target]):
            regressor = MixtureRegressor(kind=kind, seed=self.settings["seed"], settings=self.settings["lightgbm"],
                                         domain=self.domains.index(name) if kind == "bimix" else None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bimix's left-out runs are counted in the table instead
                fitted.append(regressor.fit(self.train.mixtures, self.target(self.train, name)))
        return fitted

    @staticmethod
    def predict(fitted, mixtures: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.mean([regressor.predict(mixtures) for regressor in fitted], axis=0)

    def row(self, kind: str, target: str) -> dict:
        fitted = self.regressors(kind, target)
        observed = self.target(self.heldout, target)
        predicted = self.predict(fitted, self.heldout.mixtures)
        pool_loss = self.predict(fitted, self.pool)
        chosen = mean_of_best(self.pool, pool_loss, self.settings["top_k"])
        best = int(np.argmin(observed))
        return {"regressor": kind, "target": target, "spearman": spearman(predicted, observed),
                "ranking_accuracy": ranking_accuracy(predicted, observed),
                "chosen_predicted": float(self.predict(fitted, chosen[None, :])[0]),
                "best_heldout_observed": float(observed[best]), "best_heldout_predicted": float(predicted[best]),
                "fitted_runs": min(r.fitted_runs for r in fitted), "train_runs": len(self.train.index),
                "heldout_runs": len(self.heldout.index),
                **{f"chosen/{d}": float(w) for d, w in zip(self.domains, chosen)}}

    def table(self, progress=print) -> pd.DataFrame:
        rows = []
        for kind in self.settings["regressors"]:
            started = time.time()
            rows += [self.row(kind, target) for target in [*self.scored, MACRO]]
            progress(f"{kind}: {len(self.scored) + 1} targets in {time.time() - started:.1f} s")
        return pd.DataFrame(rows)

    def notebook(self) -> pd.DataFrame:
        """Per domain: the released procedure's ρ (early stopping on the held-out runs) and the notebook's."""
        with Path(self.settings["notebook"]).open(newline="", encoding="utf-8") as handle:
            printed = {row["domain"]: float(row["spearman_percent"]) for row in csv.DictReader(handle)}
        rows = []
        for domain in self.scored:
            observed = self.heldout.loss_of(domain)
            regressor = MixtureRegressor(kind="lightgbm", seed=self.settings["seed"], settings="released").fit(
                self.train.mixtures, self.train.loss_of(domain), held_out=(self.heldout.mixtures, observed))
            rho = spearman(regressor.predict(self.heldout.mixtures), observed)
            rows.append({"domain": domain, "notebook_spearman": printed[domain] / 100, "spearman": rho,
                         "difference": rho - printed[domain] / 100,
                         "rounds": int(regressor.model.best_iteration_ or 1000)})
        return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The markdown view: per regressor, the macro target's scores and the domains' mean and worst ρ."""
    rows = []
    for kind, group in frame.groupby("regressor", sort=False):
        macro, domains = group[group.target == MACRO].iloc[0], group[group.target != MACRO]
        rows.append({"regressor": kind, "macro ρ": f"{macro.spearman:.4f}",
                     "macro ranking accuracy": f"{macro.ranking_accuracy:.4f}",
                     "domains' mean ρ": f"{domains.spearman.mean():.4f}",
                     "worst domain ρ": f"{domains.spearman.min():.4f} ({domains.loc[domains.spearman.idxmin(), 'target']})",
                     "chosen mixture's predicted macro loss": f"{macro.chosen_predicted:.4f}",
                     "best held-out run: observed / predicted": f"{macro.best_heldout_observed:.4f} / "
                                                                f"{macro.best_heldout_predicted:.4f}",
                     "runs fitted (fewest)": str(int(group.fitted_runs.min()))})
    return pd.DataFrame(rows)


def write_tables(out: Path, frame: pd.DataFrame, notebook: pd.DataFrame) -> None:
    from eval.analysis.tables import to_latex

    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    write_text(tables / f"{NAME}.csv", frame.to_csv(index=False))
    view = summary(frame)
    per_domain = frame.pivot(index="target", columns="regressor", values="spearman")
    per_domain = per_domain.loc[[t for t in frame.target.unique()], list(frame.regressor.unique())]
    per_domain = per_domain.map(lambda v: f"{v:.4f}").reset_index().rename(columns={"target": "target (held-out ρ)"})
    write_text(tables / f"{NAME}.md", "\n\n".join([
        "## Regressors on the published swarm\n\n" + view.to_markdown(index=False, disable_numparse=True),
        "## Held-out Spearman ρ per target\n\n" + per_domain.to_markdown(index=False, disable_numparse=True)]) + "\n")
    write_text(tables / f"{NAME}.tex", to_latex(view, "Regressors on the published swarm") + "\n")
    write_text(tables / f"{NAME}_notebook.csv", notebook.to_csv(index=False))
    shown = notebook.assign(**{c: notebook[c].map(lambda v: f"{round(v, 4) + 0.0:.4f}") for c in
                               ("notebook_spearman", "spearman", "difference")})
    write_text(tables / f"{NAME}_notebook.md", "## The released notebook's procedure, repeated\n\n"
               + shown.to_markdown(index=False, disable_numparse=True) + "\n")


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    args = parser.parse_args(argv)
    config = grid_config.load(*args.config)
    if config.get(NAME) is None:
        raise ConfigError(f"the config has no `{NAME}` section (config/published_swarm.yaml has one)")
    started = time.time()
    log = lambda line: print(line, file=sys.stderr, flush=True)
    track = Track(config[NAME])
    log(f"{len(track.train.index)} training runs, {len(track.heldout.index)} held-out runs, "
        f"{len(track.domains)} domains in the mixtures, {len(track.scored)} scored")
    frame, notebook = track.table(progress=log), track.notebook()
    out = Path(config["results_dir"])
    write_tables(out, frame, notebook)
    from eval.analysis.published_swarm_figure import figure

    figure(frame, out / "figures")
    log(f"published-swarm track written to {out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
