"""The regression machinery of RegMix (Liu et al., 2024, arXiv 2407.01492): draw a swarm of
mixtures, fit a regression from mixture to held-out loss on the small runs trained on them, and
take the mixture the regression predicts best.

Following the paper (§3), in two versions (``swarm_draws`` and ``candidate_draws`` of regmix):
- **Swarm mixtures** are drawn from Dirichlet distributions centred on the natural token
  distribution p, with the concentration varied from run to run so that the swarm holds both
  near-natural and sparse mixtures.
  ``continuous``: for run r, a scale c_r log-uniform in [c_min, c_max] and w_r ~ Dir(c_r · p).
  ``released`` (sail-sg/regmix ``mixture_config/synthesize_mixture.py``): c_r one of 15
  log-spaced strengths in [c_min, c_max], each equally likely; the prior flattened to
  p^0.5 / Σ p^0.5 first; a draw with any w_j > min(15 · p_j, 1) rejected (a domain repeated
  more than 15 epochs at the large run's budget) and drawn again; weights below 2e-4 set to 0 and
  the rest rounded to multiples of 2e-4. The release leaves the rounded weights summing to
  1 ± K · 1e-4; here they are renormalised once more so that they are a distribution (the
  sampler refuses anything else). The release also drops duplicate mixtures from a pool; here
  each run draws from a stream of its own, so two runs of a swarm may coincide (at K >= 3 and
  continuous weights, with probability ~0).
- **The regressor** (strategies/regressors.py) is fitted on (w_r, loss_r).
- **The predicted-best mixture** is the mean of the top-k of a large sample of candidates, ranked
  by predicted loss, which is more stable than the single argmin of a piecewise-constant model.
  ``swarm``: the candidates are drawn like a continuous swarm (the paper: 100,000 candidates,
  top 100); ``released``: from one Dirichlet at concentration 1 × p, as the released notebook
  does (with the top 128).
- **Fit quality** is the Spearman rank correlation between predicted and observed loss over
  k-fold held-out predictions: ranking mixtures is all the search needs.

LightGBM and scipy are imported inside the functions that need them: strategy modules must load
fast, because the workflow reads strategies' stage declarations while it is parsed.
"""

from __future__ import annotations

import warnings

import numpy as np

from strategies.regressors import MixtureRegressor

SWARM_DRAWS = ("continuous", "released")
CANDIDATE_DRAWS = ("swarm", "released")
# The released swarm's constants (synthesize_mixture.py): strengths, prior temperature, the most
# epochs of a domain at the large run's budget, the grid of weights.
RELEASED_STRENGTHS = 15
RELEASED_TEMPERATURE = 0.5
RELEASED_MAX_USAGE = 15.0
RELEASED_MINIMUM = 2e-4
MAX_REJECTIONS = 100_000  # a prior whose caps no draw meets fails instead of looping


def dirichlet_draw(natural: np.ndarray, rng: np.random.Generator, *, min_concentration: float = 0.1,
                   max_concentration: float = 5.0, draws: str = "continuous") -> tuple[np.ndarray, float]:
    """One swarm mixture and its concentration, from ``rng``: w ~ Dir(c · p) with c log-uniform
    in [min, max] (``continuous``), or the released scheme (``released``, the module's docstring)."""
    if draws == "released":
        return released_draw(natural, rng, min_concentration=min_concentration, max_concentration=max_concentration)
    if draws != "continuous":
        raise ValueError(f"swarm draws {draws!r}: expected one of {', '.join(SWARM_DRAWS)}")
    scale = float(np.exp(rng.uniform(np.log(min_concentration), np.log(max_concentration))))
    return finite_dirichlet(rng, scale, natural), scale


def finite_dirichlet(rng: np.random.Generator, scale: float, prior: np.ndarray) -> np.ndarray:
    mixture = rng.dirichlet(scale * prior)
    if not np.all(np.isfinite(mixture)):  # numpy's sampler underflows for very small alphas
        raise ValueError(f"a Dirichlet draw at concentration {scale:.3g} was not finite; raise min_concentration")
    return mixture


def released_draw(natural: np.ndarray, rng: np.random.Generator, *, min_concentration: float,
                  max_concentration: float) -> tuple[np.ndarray, float]:
    """One mixture as synthesize_mixture.py draws it: a strength of 15 log-spaced ones, Dir(c · p^0.5
    normalised), rejected above 15 × p_j, zeroed below 2e-4 and rounded to its multiples."""
    strengths = np.geomspace(min_concentration, max_concentration, RELEASED_STRENGTHS)
    flattened = natural**RELEASED_TEMPERATURE / np.sum(natural**RELEASED_TEMPERATURE)
    cap = np.minimum(RELEASED_MAX_USAGE * natural, 1.0)  # from the prior itself, not the flattened one
    for _ in range(MAX_REJECTIONS):
        scale = float(strengths[rng.integers(len(strengths))])
        mixture = finite_dirichlet(rng, scale, flattened)
        if np.any(mixture > cap):
            continue
        mixture = np.where(mixture < RELEASED_MINIMUM, 0.0, mixture)
        mixture = np.round(mixture / mixture.sum() / RELEASED_MINIMUM) * RELEASED_MINIMUM
        return mixture / mixture.sum(), scale
    raise ValueError(f"none of {MAX_REJECTIONS:,} released-scheme draws kept every weight under "
                     f"min(15 × natural, 1) = {np.round(cap, 4).tolist()}: use swarm_draws: continuous")


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
                   max_concentration: float = 5.0, draws: str = "continuous") -> tuple[np.ndarray, np.ndarray]:
    """The mixtures (count, K) and concentrations (count,) of a swarm: run r from a stream of its
    own (``seed`` spawned at r), so that its mixture does not depend on how many runs there are
    and a swarm can grow without retraining the runs it has."""
    natural = check_natural(natural, min_concentration, max_concentration)
    # What seed.spawn(count) gives, without advancing ``seed``'s own count of children.
    streams = [np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, run)) for run in range(count)]
    draws = [dirichlet_draw(natural, np.random.default_rng(stream), min_concentration=min_concentration,
                            max_concentration=max_concentration, draws=draws) for stream in streams]
    return np.stack([w for w, _ in draws]), np.array([c for _, c in draws])


def candidate_mixtures(natural: np.ndarray, count: int, *, seed: int | np.random.SeedSequence,
                       draws: str = "swarm", min_concentration: float = 0.1,
                       max_concentration: float = 5.0) -> np.ndarray:
    """The candidates (count, K) the fit ranks: drawn like a continuous swarm, or from Dir(1 · p)."""
    if draws == "released":
        natural = check_natural(natural, min_concentration, max_concentration)
        return np.random.default_rng(seed).dirichlet(natural, size=count)
    if draws != "swarm":
        raise ValueError(f"candidate draws {draws!r}: expected one of {', '.join(CANDIDATE_DRAWS)}")
    return dirichlet_mixtures(natural, count, seed=seed, min_concentration=min_concentration,
                              max_concentration=max_concentration)[0]


def predicted_best(regressor: MixtureRegressor, natural: np.ndarray, *, candidates: int, top_k: int,
                   seed: int | np.random.SeedSequence, draws: str = "swarm",
                   min_concentration: float = 0.1, max_concentration: float = 5.0) -> np.ndarray:
    """The mean of the ``top_k`` of ``candidates`` sampled mixtures with the lowest predicted loss."""
    if not 1 <= top_k <= candidates:
        raise ValueError(f"need 1 <= top_k <= candidates, got top_k={top_k}, candidates={candidates}")
    pool = candidate_mixtures(natural, candidates, seed=seed, draws=draws, min_concentration=min_concentration,
                              max_concentration=max_concentration)
    return mean_of_best(pool, regressor.predict(pool), top_k)


def mean_of_best(pool: np.ndarray, predicted: np.ndarray, top_k: int) -> np.ndarray:
    """The mean of the ``top_k`` mixtures of ``pool`` with the lowest predicted loss (the first on a tie)."""
    return pool[np.argsort(predicted, kind="stable")[:top_k]].mean(axis=0)


def kfold_rank_correlation(mixtures: np.ndarray, losses: np.ndarray, *, kind: str, folds: int,
                           seed: int | np.random.SeedSequence, regressor_seed: int = 0, **regressor) -> dict:
    """Spearman ρ between observed losses and out-of-fold predictions (each run predicted by a
    model that did not see it), pooled over ``folds`` folds; also the per-run predictions.
    ``seed`` assigns the folds; ``regressor_seed`` is LightGBM's; ``regressor`` MixtureRegressor's
    other keywords (settings, domain)."""
    from scipy.stats import spearmanr

    losses = np.asarray(losses, dtype=np.float64)
    if not 2 <= folds <= len(losses):
        raise ValueError(f"need 2 <= folds <= swarm runs ({len(losses)}), got {folds}")
    order = np.random.default_rng(seed).permutation(len(losses))
    predicted = np.empty(len(losses))
    for held_out in np.array_split(order, folds):
        kept = np.setdiff1d(order, held_out)
        predicted[held_out] = MixtureRegressor(kind=kind, seed=regressor_seed, **regressor).fit(mixtures[kept], losses[kept]).predict(
            mixtures[held_out])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant input makes ρ undefined: say so, do not return nan
        rho = float(spearmanr(predicted, losses).statistic)
    return {"spearman": rho, "folds": folds, "predicted": predicted.tolist(), "observed": losses.tolist()}
