"""Regressors from a mixture to a held-out loss: what RegMix's fit stage (strategies/regmix.py) and
the published-swarm track (eval/analysis/published_swarm.py) fit on a swarm's runs.

r is a mixture (K weights summing to 1), L the loss it is fitted to. Each kind is its paper's
functional form:

- ``lightgbm`` (RegMix, Liu et al. 2024, arXiv 2407.01492, §3.2): gradient-boosted trees, 1,000
  rounds at learning rate 0.01. Two settings: ``released``, the released notebook's
  (sail-sg/regmix ``regression_fitting/regression.ipynb``: LightGBM's defaults otherwise, so a leaf
  holds >= 20 runs, with early stopping after 3 rounds when held-out runs are given), and
  ``small_swarm``, which lets a leaf hold max(2, N // 16) runs and a histogram bin one run, so
  that a laptop swarm of 5 to 40 runs is not one constant leaf.
- ``linear``: L = b + Σ_j w_j r_j, least squares.
- ``mixing_law`` (Data Mixing Laws, Ye et al. 2024, arXiv 2403.16952; yegcjs/mixinglaws): the
  multi-domain law L = c + k · exp(Σ_j t_j r_j). On the simplex k is not identified apart from t
  (k · exp(t·r) = exp((t + ln k)·r) because Σ r = 1), so k = 1 here; c in [0, min L), least
  squares on L from several starting floors c.
- ``log_linear`` (olmix, allenai/olmix ``regression.type: log_linear``): the same family written
  as L = exp(a) + exp(Σ_j t_j r_j) (its floor positive by construction), fitted as olmix fits
  it: a Huber loss (δ = 0.02) on log L, from floors exp(a) with a on a grid over [-2, 1.5].
  Where the swarm has outliers the two fits differ; on clean data they agree.
- ``bimix`` (BiMix, Ge et al. 2024, arXiv 2405.14908): the bivariate law of a domain's loss in its
  own proportion r_i and the data volume s, L_i = A_i / r_i^α_i · (B_i / s^β_i + C_i). A swarm
  whose runs share one volume (RegMix's released swarm, mixbench's swarms) identifies only the
  proportion factor, L_i = A / r_i^α (log-linear least squares), which is what is fitted. The law
  is one domain's loss against that domain's weight: it needs ``domain``, and it has no value at
  r_i = 0 (+inf is predicted there); runs with r_i = 0 are left out of its fit, with a warning
  that counts them.

LightGBM and scipy are imported inside the methods that need them (strategy modules load while
the workflow is parsed).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

REGRESSORS = ("lightgbm", "linear", "mixing_law", "log_linear", "bimix")
LIGHTGBM_SETTINGS = ("small_swarm", "released")
MIN_RUNS = 4  # the fewest runs any regressor is fitted on
HUBER_DELTA = 0.02  # olmix's Huber threshold on log losses
LOG_LINEAR_FLOORS = np.linspace(-2.0, 1.5, 4)  # starting a = ln(floor), over olmix's range (each start reaches
# the same optimum on the published swarm: more cost time, not fit)
MIXING_LAW_FLOORS = (0.0, 0.5, 0.9)  # starting c, as fractions of min L


def _checked(mixtures, losses) -> tuple[np.ndarray, np.ndarray]:
    mixtures, losses = np.asarray(mixtures, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if mixtures.ndim != 2 or len(mixtures) != len(losses) or len(losses) < MIN_RUNS or not np.all(np.isfinite(losses)):
        raise ValueError(f"need >= {MIN_RUNS} swarm runs with finite losses, got {len(losses)} runs: {losses}")
    return mixtures, losses


class MixtureRegressor:
    """Predicted loss of a mixture, fitted on a swarm (mixtures (N, K), losses (N,)).

    ``domain``: the column of r whose loss is fitted (bimix needs it); ``settings``: LightGBM's
    (LIGHTGBM_SETTINGS); ``seed``: LightGBM's."""

    def __init__(self, *, kind: str = "lightgbm", seed: int = 0, settings: str = "small_swarm",
                 domain: int | None = None):
        if kind not in REGRESSORS:
            raise ValueError(f"regressor {kind!r}: expected one of {', '.join(REGRESSORS)}")
        if settings not in LIGHTGBM_SETTINGS:
            raise ValueError(f"LightGBM settings {settings!r}: expected one of {', '.join(LIGHTGBM_SETTINGS)}")
        if kind == "bimix" and domain is None:
            raise ValueError("bimix fits one domain's loss against that domain's weight: name the domain "
                             "(a target that is a domain, not the mean over domains)")
        self.kind, self.seed, self.settings, self.domain = kind, seed, settings, domain
        self.model = None
        self.fitted_runs = 0  # the runs the fit used (bimix leaves out those without the domain)

    def fit(self, mixtures, losses, *, held_out: tuple[np.ndarray, np.ndarray] | None = None) -> "MixtureRegressor":
        """Fit on the swarm; ``held_out`` (mixtures, losses) only stops LightGBM's released settings early."""
        mixtures, losses = _checked(mixtures, losses)
        self.fitted_runs = len(losses)
        getattr(self, f"_fit_{self.kind}")(mixtures, losses, held_out)
        if self.kind != "bimix" and np.ptp(self.predict(mixtures)) == 0:
            raise ValueError(f"the {self.kind} fit on {len(losses)} runs is constant (observed losses span "
                             f"{np.ptp(losses):.4g}); train more swarm runs or use another regressor")
        return self

    def predict(self, mixtures) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the regressor before predicting")
        mixtures = np.asarray(mixtures, dtype=np.float64)
        if self.kind == "lightgbm":  # the job's cores: candidates are 100,000 mixtures × 1,000 trees
            return self.model.predict(mixtures, num_threads=len(os.sched_getaffinity(0)))
        if self.kind == "linear":
            return mixtures @ self.model[:-1] + self.model[-1]
        if self.kind in ("mixing_law", "log_linear"):
            return law_floor(self.kind, self.model) + np.exp(mixtures @ self.model[1:])
        scale, exponent = self.model  # bimix: A / r^α, +inf where the domain has no weight
        share = mixtures[:, self.domain]
        with np.errstate(divide="ignore"):
            return np.where(share > 0, scale * np.power(np.where(share > 0, share, 1.0), -exponent), np.inf)

    def _fit_lightgbm(self, mixtures, losses, held_out) -> None:
        import lightgbm

        early = {}
        if self.settings == "released":
            # The notebook's metrics (l1 and l2): early stopping stops when either stops improving.
            own = {"metric": ["l1", "l2"]}
            if held_out is not None:  # the notebook stops on the held-out runs' l2 after 3 rounds without a gain
                early = {"eval_X": (held_out[0],), "eval_y": (held_out[1],), "eval_metric": "l2",
                         "callbacks": [lightgbm.early_stopping(stopping_rounds=3, verbose=False)]}
        else:
            own = {"min_child_samples": max(2, len(losses) // 16), "min_data_in_bin": 1, "num_leaves": 31}
        self.model = lightgbm.LGBMRegressor(n_estimators=1000, learning_rate=0.01, random_state=self.seed,
                                            deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1, **own)
        self.model.fit(mixtures, losses, **early)

    def _fit_linear(self, mixtures, losses, held_out) -> None:
        self.model, *_ = np.linalg.lstsq(np.column_stack([mixtures, np.ones(len(mixtures))]), losses, rcond=None)

    def _fit_mixing_law(self, mixtures, losses, held_out) -> None:
        from scipy.optimize import least_squares

        def residuals(p):
            return p[0] + np.exp(mixtures @ p[1:]) - losses

        def jacobian(p):  # d/dc = 1, d/dt_j = exp(t·r) r_j
            return np.column_stack([np.ones(len(losses)), np.exp(mixtures @ p[1:])[:, None] * mixtures])

        ceiling = float(losses.min()) * (1 - 1e-6)
        best = None
        for fraction in MIXING_LAW_FLOORS:
            floor = fraction * ceiling
            start = np.linalg.lstsq(mixtures, np.log(losses - floor), rcond=None)[0]  # ln(L - c) = t·r
            fit = least_squares(residuals, np.concatenate([[floor], start]), jac=jacobian,
                                bounds=([0.0] + [-np.inf] * len(start), [ceiling] + [np.inf] * len(start)))
            if best is None or fit.cost < best.cost:
                best = fit
        self.model = best.x

    def _fit_log_linear(self, mixtures, losses, held_out) -> None:
        from scipy.optimize import least_squares

        log_losses, best = np.log(losses), None

        def parts(p):
            return np.exp(p[0]), np.exp(mixtures @ p[1:])

        def residuals(p):
            floor, rest = parts(p)
            return np.log(floor + rest) - log_losses

        def jacobian(p):  # d/da = e^a / L̂, d/dt_j = e^(t·r) r_j / L̂
            floor, rest = parts(p)
            total = floor + rest
            return np.column_stack([floor / total, (rest / total)[:, None] * mixtures])

        for start_a in LOG_LINEAR_FLOORS:
            rest = np.maximum(losses - np.exp(start_a), 1e-3 * losses)  # the part above the floor, kept positive
            start = np.linalg.lstsq(mixtures, np.log(rest), rcond=None)[0]
            fit = least_squares(residuals, np.concatenate([[start_a], start]), jac=jacobian, loss="huber",
                                f_scale=HUBER_DELTA)
            if best is None or fit.cost < best.cost:
                best = fit
        self.model = best.x

    def _fit_bimix(self, mixtures, losses, held_out) -> None:
        share = mixtures[:, self.domain]
        kept = share > 0
        if kept.sum() < MIN_RUNS:
            raise ValueError(f"bimix needs >= {MIN_RUNS} runs with weight on domain {self.domain}; "
                             f"{int(kept.sum())} of {len(share)} have any")
        if not kept.all():
            warnings.warn(f"bimix: {int((~kept).sum())} of {len(share)} runs give domain {self.domain} no weight, "
                          f"where its law L = A / r^α has no value; fitted on the other {int(kept.sum())}",
                          stacklevel=3)
        slope, intercept = np.polyfit(np.log(share[kept]), np.log(losses[kept]), 1)  # ln L = ln A - α ln r
        self.model = np.array([np.exp(intercept), -slope])
        self.fitted_runs = int(kept.sum())


def law_floor(kind: str, parameters: np.ndarray) -> float:
    """The loss a mixing law tends to far from its exponential's reach: c (mixing_law), exp(a) (log_linear)."""
    return float(parameters[0]) if kind == "mixing_law" else float(np.exp(parameters[0]))
