"""The regression machinery of RegMix (Liu et al., 2024, arXiv 2407.01492): draw a swarm of
mixtures, fit a regression from mixture to held-out loss on the small runs trained on them, and
take the mixture the regression predicts best.

Following the paper (§3):
- **Swarm mixtures** are drawn from Dirichlet distributions centred on the natural token
  distribution p, with the concentration varied from run to run so that the swarm holds both
  near-natural and sparse mixtures: for run r, a scale c_r log-uniform in [c_min, c_max] and
  w_r ~ Dir(c_r · p). The paper varies the concentration from 0.1 to 5.0.
- **The regressor** is LightGBM (the paper's choice) or linear regression, fitted on (w_r, loss_r).
- **The predicted-best mixture** is the mean of the top-k of a large sample of candidates drawn
  from the same distribution, ranked by predicted loss (the paper: 100,000 candidates, top 100),
  which is more stable than the single argmin of a piecewise-constant model.
- **Fit quality** is the Spearman rank correlation between predicted and observed loss over
  k-fold held-out predictions: ranking mixtures is all the search needs.

LightGBM and scipy are imported inside the functions that need them: strategy modules must load
fast, because the workflow reads strategies' stage declarations while it is parsed.
"""

from __future__ import annotations

import warnings

import numpy as np

REGRESSORS = ("lightgbm", "linear")


def dirichlet_draw(natural: np.ndarray, rng: np.random.Generator, *, min_concentration: float = 0.1,
                   max_concentration: float = 5.0) -> tuple[np.ndarray, float]:
    """One mixture w ~ Dir(c · p) and its scale c, log-uniform in [min, max], from ``rng``."""
    scale = float(np.exp(rng.uniform(np.log(min_concentration), np.log(max_concentration))))
    mixture = rng.dirichlet(scale * natural)
    if not np.all(np.isfinite(mixture)):  # numpy's sampler underflows for very small alphas
        raise ValueError(f"a Dirichlet draw at concentration {scale:.3g} was not finite; raise min_concentration")
    return mixture, scale


def check_natural(natural: np.ndarray, min_concentration: float, max_concentration: float) -> np.ndarray:
    natural = np.asarray(natural, dtype=np.float64)
    if natural.ndim != 1 or len(natural) < 2 or not np.all(natural > 0) or not np.isclose(natural.sum(), 1.0):
        raise ValueError(f"the natural distribution must be positive over >= 2 domains and sum to 1, got {natural}")
    if not 0 < min_concentration <= max_concentration < np.inf:
        raise ValueError(f"need 0 < min_concentration <= max_concentration < inf, got {min_concentration}, "
                         f"{max_concentration}")
    return natural


def dirichlet_mixtures(natural: np.ndarray, count: int, *, seed: int | np.random.SeedSequence,
                       min_concentration: float = 0.1, max_concentration: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mixtures (count, K) and the concentration each was drawn with (count,), from one
    stream: a sample of candidates, whose size is fixed."""
    natural = check_natural(natural, min_concentration, max_concentration)
    rng = np.random.default_rng(seed)
    draws = [dirichlet_draw(natural, rng, min_concentration=min_concentration, max_concentration=max_concentration)
             for _ in range(count)]
    if not draws:
        return np.empty((0, len(natural))), np.empty(0)
    return np.stack([w for w, _ in draws]), np.array([c for _, c in draws])


def swarm_mixtures(natural: np.ndarray, count: int, *, seed: np.random.SeedSequence, min_concentration: float = 0.1,
                   max_concentration: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """The mixtures (count, K) and concentrations (count,) of a swarm: run r from a stream of its
    own (``seed`` spawned at r), so that its mixture does not depend on how many runs there are
    and a swarm can grow without retraining the runs it has."""
    natural = check_natural(natural, min_concentration, max_concentration)
    # What seed.spawn(count) gives, without advancing ``seed``'s own count of children.
    streams = [np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, run)) for run in range(count)]
    draws = [dirichlet_draw(natural, np.random.default_rng(stream), min_concentration=min_concentration,
                            max_concentration=max_concentration) for stream in streams]
    return np.stack([w for w, _ in draws]), np.array([c for _, c in draws])


class MixtureRegressor:
    """Predicted held-out loss of a mixture, fitted on a swarm (mixtures (N, K), losses (N,))."""

    def __init__(self, *, kind: str = "lightgbm", seed: int = 0):
        if kind not in REGRESSORS:
            raise ValueError(f"regressor {kind!r}: expected one of {', '.join(REGRESSORS)}")
        self.kind, self.seed, self.model = kind, seed, None

    def fit(self, mixtures: np.ndarray, losses: np.ndarray) -> "MixtureRegressor":
        mixtures, losses = np.asarray(mixtures, dtype=np.float64), np.asarray(losses, dtype=np.float64)
        if len(mixtures) != len(losses) or len(losses) < 4 or not np.all(np.isfinite(losses)):
            raise ValueError(f"need >= 4 swarm runs with finite losses, got {len(losses)} runs: {losses}")
        if self.kind == "linear":
            design = np.column_stack([mixtures, np.ones(len(mixtures))])
            self.model, *_ = np.linalg.lstsq(design, losses, rcond=None)
            return self
        import lightgbm

        # The paper's settings (1,000 rounds at rate 0.01), with leaves and histogram bins allowed
        # to hold as few runs as a laptop swarm has: LightGBM's defaults (20 per leaf, 3 per bin)
        # would make any swarm under 40 runs a constant, and one of 4 to 5 runs a single bin.
        self.model = lightgbm.LGBMRegressor(
            n_estimators=1000, learning_rate=0.01, min_child_samples=max(2, len(losses) // 16), min_data_in_bin=1,
            num_leaves=31,
            random_state=self.seed, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1)
        self.model.fit(mixtures, losses)
        spread = np.ptp(self.predict(mixtures))
        if spread == 0:
            raise ValueError(f"the LightGBM fit on {len(losses)} runs is constant (observed losses span "
                             f"{np.ptp(losses):.4g}); train more swarm runs or use the linear regressor")
        return self

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the regressor before predicting")
        mixtures = np.asarray(mixtures, dtype=np.float64)
        if self.kind == "linear":
            return mixtures @ self.model[:-1] + self.model[-1]
        return self.model.predict(mixtures)


def predicted_best(regressor: MixtureRegressor, natural: np.ndarray, *, candidates: int, top_k: int,
                   seed: int | np.random.SeedSequence,
                   min_concentration: float = 0.1, max_concentration: float = 5.0) -> np.ndarray:
    """The mean of the ``top_k`` of ``candidates`` sampled mixtures with the lowest predicted loss."""
    if not 1 <= top_k <= candidates:
        raise ValueError(f"need 1 <= top_k <= candidates, got top_k={top_k}, candidates={candidates}")
    pool, _ = dirichlet_mixtures(natural, candidates, seed=seed, min_concentration=min_concentration,
                                 max_concentration=max_concentration)
    best = np.argsort(regressor.predict(pool), kind="stable")[:top_k]
    return pool[best].mean(axis=0)


def kfold_rank_correlation(mixtures: np.ndarray, losses: np.ndarray, *, kind: str, folds: int,
                           seed: int | np.random.SeedSequence, regressor_seed: int = 0) -> dict:
    """Spearman ρ between observed losses and out-of-fold predictions (each run predicted by a
    model that did not see it), pooled over ``folds`` folds; also the per-run predictions.
    ``seed`` assigns the folds; ``regressor_seed`` is LightGBM's."""
    from scipy.stats import spearmanr

    losses = np.asarray(losses, dtype=np.float64)
    if not 2 <= folds <= len(losses):
        raise ValueError(f"need 2 <= folds <= swarm runs ({len(losses)}), got {folds}")
    order = np.random.default_rng(seed).permutation(len(losses))
    predicted = np.empty(len(losses))
    for held_out in np.array_split(order, folds):
        kept = np.setdiff1d(order, held_out)
        predicted[held_out] = MixtureRegressor(kind=kind, seed=regressor_seed).fit(mixtures[kept], losses[kept]).predict(
            mixtures[held_out])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant input makes ρ undefined: say so, do not return nan
        rho = float(spearmanr(predicted, losses).statistic)
    return {"spearman": rho, "folds": folds, "predicted": predicted.tolist(), "observed": losses.tolist()}
