"""RegMix: data mixture as regression (Liu et al., 2024, arXiv 2407.01492).

Stages ``swarm → fit → final``:

- swarm (a fan-out stage, ``swarm_runs`` runs ``swarm-0 … swarm-{N-1}``): run r trains a small
  model on a fixed mixture w_r drawn from Dir(c_r · p) around the natural distribution p, with
  c_r log-uniform in [min_concentration, max_concentration] (§3.1; the paper varies it from 0.1
  to 5.0). Run r draws from a stream of its own, keyed by the grid seed and r: run r of seed s
  always trains on the same mixture, however many runs the swarm has (so a swarm grows without
  retraining), and each run's weights.json records it. A swarm run depends on the concentration
  range alone: changing what the fit does (target, regressor, candidates, top_k, folds) or the
  number of runs retrains none of the swarm.
- fit (no training, models/fit.py): the target of each swarm run is its held-out loss after its
  last step: the mean over domains (``target: macro``) or one named domain (the paper's
  out-of-domain setting fits the loss of a domain it does not otherwise optimise). A regressor,
  LightGBM (the paper's choice, §3.2) or ``linear``, maps w_r to the target. The chosen mixture is
  the mean of the ``top_k`` of ``candidates`` mixtures drawn from the same distribution, ranked
  by predicted target (§3.3: 100,000 candidates, top 100). The fit's quality, the k-fold
  Spearman ρ between observed and out-of-fold predicted targets, goes into fit.json with every
  run's mixture, target and predictions.
- final: a static run on the chosen mixture.

Options (each documented in docs/strategies.md):
- ``swarm_draws``: ``continuous`` (above) or ``released``, the released code's scheme
  (strategies/regression_mixing.py: 15 strengths, prior^0.5, a 15-epoch cap, a 2e-4 grid);
- ``candidate_draws``: ``swarm`` (candidates drawn like a continuous swarm) or ``released``
  (Dir(1 · p), as the released notebook draws them; use it with ``top_k: 128``);
- ``regressor``: one of strategies/regressors.py (lightgbm, linear, mixing_law, log_linear,
  bimix), and ``lightgbm``: its settings, ``small_swarm`` or ``released``;
- ``swarm_files``: ``{mixtures: CSV, losses: CSV}`` (strategies/swarm_files.py, paths relative to
  where the workflow runs): the swarm's runs read from files instead of trained. The stages are
  then ``fit → final``; the mixtures must be over corpus.domains, and the target a domain the
  losses file scores (or ``macro``, the mean over the domains it scores).

With ``top_k`` = ``candidates`` the fit would ignore its regression (the mean of every candidate):
the config check refuses it unless ``allow_static: true``.

The regression itself is in strategies/regression_mixing.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixbench.config import Stage
from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy
from strategies.regression_mixing import (CANDIDATE_DRAWS, SWARM_DRAWS, kfold_rank_correlation, predicted_best,
                                          swarm_mixtures)
from strategies.regressors import LIGHTGBM_SETTINGS, REGRESSORS, MixtureRegressor
from strategies.swarm_files import SwarmRuns, read_swarm

MAX_SWARM_RUNS = 4096  # the paper trains 512; more is a typo (each is a job)
MAX_CANDIDATES = 10_000_000  # K floats each, held at once by the fit (the paper samples 100,000)
MIN_FIT_RUNS = 4  # the fewest runs a regressor is fitted on (MixtureRegressor)
# Concentrations outside this range make Dirichlet draws that underflow or are all natural.
CONCENTRATION_RANGE = (1e-3, 1e3)
# RegMix's random streams of one grid seed, apart from every other stream keyed by the seed
# (the sampler's are [seed, 0 or 1, ...]): the swarm's mixtures, the candidates, the folds.
REGMIX_TAG = 0x5245474D  # "REGM"
SWARM_STREAM, CANDIDATE_STREAM, FOLD_STREAM = 1, 2, 3
SWARM_HPARAMS = ("min_concentration", "max_concentration", "swarm_draws")  # all a swarm run depends on


class RegMix(Strategy):
    stages = ("swarm", "fit", "final")
    fan_out = {"swarm": "swarm_runs"}
    defaults = {"swarm_runs": 8, "target": "macro", "regressor": "lightgbm", "candidates": 100_000, "top_k": 100,
                "folds": 4, "min_concentration": 0.1, "max_concentration": 5.0, "allow_static": False,
                "swarm_draws": "continuous", "candidate_draws": "swarm", "lightgbm": "small_swarm", "swarm_files": None}
    choices = {"swarm_draws": SWARM_DRAWS, "candidate_draws": CANDIDATE_DRAWS, "lightgbm": LIGHTGBM_SETTINGS,
               "regressor": REGRESSORS}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        runs, folds = h["swarm_runs"], h["folds"]
        if not MIN_FIT_RUNS + 1 <= runs <= MAX_SWARM_RUNS:
            raise ConfigError(f"swarm_runs must be in [{MIN_FIT_RUNS + 1}, {MAX_SWARM_RUNS}], got {runs}")
        # Each fold's model is fitted on the runs outside it, the largest fold left out.
        if not 2 <= folds <= runs or runs - math.ceil(runs / folds) < MIN_FIT_RUNS:
            raise ConfigError(f"folds must be >= 2 and leave >= {MIN_FIT_RUNS} runs to fit on without the largest "
                              f"fold; got folds {folds} with swarm_runs {runs}")
        for key, allowed in cls.choices.items():
            if h[key] not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {h[key]!r}")
        scored = domains
        if h["swarm_files"] is not None:
            runs = cls.swarm_runs_from_files(h["swarm_files"])
            runs.mixtures_over(domains)  # a clear error unless the files' mixtures are over corpus.domains
            scored = runs.loss_domains
            if len(runs.index) - math.ceil(len(runs.index) / folds) < MIN_FIT_RUNS:
                raise ConfigError(f"the swarm's files hold {len(runs.index)} runs: too few for {folds} folds "
                                  f"that each leave >= {MIN_FIT_RUNS} to fit on")
        if h["target"] != "macro" and h["target"] not in scored:
            raise ConfigError(f"target must be 'macro' (the mean over domains) or one of the scored domains {scored}, "
                              f"got {h['target']!r}")
        if h["regressor"] == "bimix" and h["target"] == "macro":
            raise ConfigError("regressor bimix fits one domain's loss against that domain's weight (BiMix's law): "
                              "set target to a domain")
        if not 1 <= h["top_k"] <= h["candidates"] <= MAX_CANDIDATES:
            raise ConfigError(f"need 1 <= top_k <= candidates <= {MAX_CANDIDATES:,}, got top_k {h['top_k']}, "
                              f"candidates {h['candidates']}")
        low, high = CONCENTRATION_RANGE
        if not low <= h["min_concentration"] <= h["max_concentration"] <= high:
            raise ConfigError(f"need {low:g} <= min_concentration <= max_concentration <= {high:g}, got "
                              f"{h['min_concentration']}, {h['max_concentration']}")

    @staticmethod
    def swarm_runs_from_files(files: Any) -> SwarmRuns:
        if not isinstance(files, dict) or sorted(files) != ["losses", "mixtures"] or not all(
                isinstance(v, str) for v in files.values()):
            raise ConfigError(f"swarm_files must be {{mixtures: CSV path, losses: CSV path}}, got {files!r}")
        return read_swarm(files["mixtures"], files["losses"])

    @classmethod
    def stages_for(cls, hparams: dict[str, Any]) -> tuple[str, ...]:
        """A swarm read from files is not trained: ``fit → final``."""
        return ("fit", "final") if hparams.get("swarm_files") else cls.stages

    @classmethod
    def input_files(cls, hparams: dict[str, Any]) -> list[str]:
        files = hparams.get("swarm_files")
        return [files["mixtures"], files["losses"]] if files else []

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """With top_k = candidates the fit's mixture is the mean of every candidate, whatever the
        regression predicts: about the natural mixture, the swarm's results read for nothing."""
        if stage != "fit" or hparams["top_k"] < hparams["candidates"]:
            return None
        return (f"top_k {hparams['top_k']} = candidates {hparams['candidates']} makes the chosen mixture the mean "
                f"of every candidate, whatever the regression predicts (about the natural mixture); use "
                f"top_k < candidates (the paper's 100 of 100,000)")

    @classmethod
    def stage_hparams(cls, stage: str, hparams: dict[str, Any]) -> dict[str, Any]:
        if Stage.parse(stage).replica is not None:  # swarm-r
            return {key: hparams[key] for key in SWARM_HPARAMS}
        return hparams

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        if training["heldout_windows"] == 0:
            raise ConfigError("regmix fits the swarm runs' held-out losses: training.heldout_windows must be > 0")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        tokens = np.asarray(context.train_tokens, dtype=np.float64)
        self.natural = tokens / tokens.sum()
        self.chosen: np.ndarray | None = None
        self.report: dict[str, Any] | None = None

    def stream(self, which: int) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.context.seed, REGMIX_TAG, which])

    def swarm(self, runs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The mixtures (N, K) and concentrations (N,) of this seed's first ``runs`` swarm runs
        (all of them by default)."""
        return swarm_mixtures(self.natural, self.hparams["swarm_runs"] if runs is None else runs,
                              seed=self.stream(SWARM_STREAM), min_concentration=self.hparams["min_concentration"],
                              max_concentration=self.hparams["max_concentration"], draws=self.hparams["swarm_draws"])

    def initial_weights(self) -> np.ndarray:
        stage = self.context.stage
        if self.context.replica is not None:  # swarm-r
            return self.swarm(self.context.replica + 1)[0][self.context.replica]
        if stage == "fit":
            if self.chosen is None:
                self.chosen = self.fit()
            return self.chosen
        if "fit" not in self.context.upstream_weights:
            raise TrainingError(f"regmix's final stage trains on its fit's mixture: pass --upstream fit=DIR "
                                f"(got {sorted(self.context.upstream_weights)})")
        return self.context.upstream_weights["fit"]

    def targets(self, heldout: np.ndarray, scored: list[str]) -> np.ndarray:
        """The regression target of each run from its held-out loss on each ``scored`` domain (N, D)."""
        if self.hparams["target"] == "macro":
            return heldout.mean(axis=1)
        return heldout[:, scored.index(self.hparams["target"])]

    def trained_swarm(self) -> tuple[list[str], np.ndarray, list, np.ndarray, list[str]]:
        """(run names, mixtures (N, K), concentrations, held-out losses (N, K), scored domains) of
        the swarm this seed trained, checked against its draws."""
        context, h = self.context, self.hparams
        names = [str(Stage(kind="swarm", replica=r)) for r in range(h["swarm_runs"])]
        missing = [n for n in names if n not in context.upstream_weights or n not in context.upstream_heldout]
        if missing:
            raise TrainingError(f"the fit needs every swarm run's weights and held-out loss; missing {missing}")
        drawn, concentrations = self.swarm()
        trained = np.stack([context.upstream_weights[n] for n in names])
        if not np.allclose(trained, drawn, rtol=0, atol=1e-9):
            worst = int(np.abs(trained - drawn).max(axis=1).argmax())
            raise TrainingError(f"{names[worst]} trained on {trained[worst].tolist()}, not this seed's draw "
                                f"{drawn[worst].tolist()}: the swarm ran with other settings; rerun it")
        heldout = np.stack([context.upstream_heldout[n] for n in names])
        return names, drawn, [float(c) for c in concentrations], heldout, list(context.domains)

    def file_swarm(self) -> tuple[list[str], np.ndarray, list, np.ndarray, list[str]]:
        """The same of a swarm read from ``swarm_files`` (no concentrations: the files hold none)."""
        runs = self.swarm_runs_from_files(self.hparams["swarm_files"])
        return ([f"file:{i}" for i in runs.index], runs.mixtures_over(list(self.context.domains)),
                [None] * len(runs.index), runs.losses, runs.loss_domains)

    def fit(self) -> np.ndarray:
        context, h = self.context, self.hparams
        names, drawn, concentrations, heldout, scored = (self.file_swarm() if h["swarm_files"] else
                                                         self.trained_swarm())
        observed = self.targets(heldout, scored)
        seed = context.seed
        regressor_options = {"settings": h["lightgbm"],
                             "domain": None if h["target"] == "macro" else context.domains.index(h["target"])}
        try:
            regressor = MixtureRegressor(kind=h["regressor"], seed=seed, **regressor_options).fit(drawn, observed)
            quality = kfold_rank_correlation(drawn, observed, kind=h["regressor"], folds=h["folds"],
                                             seed=self.stream(FOLD_STREAM), regressor_seed=seed, **regressor_options)
        except (ValueError, RuntimeWarning) as exc:
            raise TrainingError(f"regmix fit on {len(names)} swarm runs (targets {observed.round(4).tolist()}): "
                                f"{exc}") from None
        chosen = predicted_best(regressor, self.natural, candidates=h["candidates"], top_k=h["top_k"],
                                seed=self.stream(CANDIDATE_STREAM), draws=h["candidate_draws"],
                                min_concentration=h["min_concentration"], max_concentration=h["max_concentration"])
        fitted = regressor.predict(drawn)
        self.report = {
            "domains": list(context.domains), "target": h["target"], "regressor": h["regressor"],
            "swarm_runs": len(names), "folds": quality["folds"], "spearman": quality["spearman"],
            "candidates": h["candidates"], "top_k": h["top_k"], "natural": self.natural.tolist(),
            "chosen": chosen.tolist(),
            "predicted_target_of_chosen": float(regressor.predict(chosen[None, :])[0]),
            "scored_domains": scored, "swarm_files": h["swarm_files"],
            "runs": [{"stage": name, "concentration": c, "weights": w.tolist(), "heldout": loss.tolist(),
                      "observed": float(y), "predicted_out_of_fold": float(p), "predicted": float(f)}
                     for name, c, w, loss, y, p, f in zip(names, concentrations, drawn, heldout, observed,
                                                          quality["predicted"], fitted)],
        }
        return chosen

    def fit_report(self) -> dict[str, Any] | None:
        return self.report
