"""Static mixtures: the weights never change during training.

- ``uniform``: every domain equally often, α = u.
- ``natural``: domains in proportion to their train-split tokens, α_i ∝ N_i.
- ``static``: weights given in the config (e.g. a published mixture): a mapping
  ``{domain: weight}``, or a list in ``corpus.domains`` order (what a config overlay needs to
  replace a mixture over other domains, since overlays merge mappings key by key). They must sum
  to 1 unless the entry says ``normalize: true`` (see ``Static``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from strategies.base import Strategy, named_mixture

SUM_TOLERANCE = 1e-6


class Uniform(Strategy):
    def initial_weights(self) -> np.ndarray:
        k = len(self.context.domains)
        return np.full(k, 1.0 / k)


class Natural(Strategy):
    def initial_weights(self) -> np.ndarray:
        return named_mixture("natural", "natural", self.context)


def as_mapping(weights: Any, domains: list[str] | tuple[str, ...]) -> dict:
    """A mixture given as a list, in domain order, as a mapping; a mapping unchanged."""
    if isinstance(weights, list):
        if len(weights) != len(domains):
            raise ConfigError(f"weights given as a list need one number per domain in corpus.domains order "
                              f"({len(domains)}: {', '.join(domains)}); got {len(weights)}: {weights}")
        return dict(zip(domains, weights))
    if not isinstance(weights, dict):
        raise ConfigError(f"weights must be a mapping {{domain: weight}} or a list in corpus.domains order, "
                          f"got {weights!r}")
    return weights


def mixture(hparams: dict[str, Any], domains: list[str] | tuple[str, ...]) -> np.ndarray:
    """The weights of ``hparams`` in domain order, checked, on the simplex."""
    weights = as_mapping(hparams.get("weights", {}), domains)
    if set(weights) != set(domains):
        raise ConfigError(
            f"weights must name every domain of corpus.domains exactly once; missing "
            f"{sorted(set(domains) - set(weights), key=str)}, unknown {sorted(set(weights) - set(domains), key=str)}")
    not_numbers = {d: w for d, w in weights.items() if isinstance(w, bool) or not isinstance(w, (int, float))}
    if not_numbers:
        raise ConfigError(f"weights must be numbers; got {not_numbers}")
    try:
        values = np.array([weights[d] for d in domains], dtype=np.float64)
    except OverflowError:  # a Python int beyond the largest float
        raise ConfigError(f"weights must be finite, non-negative and not all zero: {weights}") from None
    with np.errstate(over="ignore"):
        total = values.sum()
    if not np.isfinite(total) or np.any(values < 0) or total <= 0:
        raise ConfigError(f"weights must be finite, non-negative and not all zero: {weights}")
    if not hparams.get("normalize", False) and abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"weights sum to {total:.8g}, not 1 (within {SUM_TOLERANCE:g}): {weights}; correct them, "
                          f"or set `normalize: true` in the entry to divide them by their sum")
    # Within the tolerance, or normalize: true. Divided either way, so that the sampler gets an
    # exact simplex rather than one off by the rounding of the printed numbers.
    return values / total


class Static(Strategy):
    """Weights from the config, fixed for the whole run.

    ``weights``: a number for every domain of ``corpus.domains`` (a mapping, or a list in that
    order): not text, not booleans, finite, non-negative, summing to 1 within 1e-6. A mixture
    that does not sum to 1 is refused by default, since a typo is likelier than an intent;
    ``normalize: true`` divides the weights by their sum instead, for a published mixture printed
    rounded (DoReMi's SlimPajama one sums to 1.00006) or relative weights such as
    ``{code: 2, books: 1}``.
    """

    defaults = {"weights": {}, "normalize": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        weights = as_mapping(hparams.get("weights", {}), domains)
        super().check_hparams({**hparams, "weights": weights}, domains)
        mixture(hparams, domains)

    def initial_weights(self) -> np.ndarray:
        return mixture(self.hparams, self.context.domains)
