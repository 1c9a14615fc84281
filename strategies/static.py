"""Static mixtures: the weights never change during training.

- ``uniform``: every domain equally often, α = u.
- ``natural``: domains in proportion to their train-split tokens, α_i ∝ N_i.
- ``static``: weights given in the config (e.g. a published mixture), normalised to sum to 1:
  a mapping ``{domain: weight}``, or a list in ``corpus.domains`` order (what a config overlay
  needs to replace a mixture over other domains, since overlays merge mappings key by key).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from strategies.base import Strategy


class Uniform(Strategy):
    def initial_weights(self) -> np.ndarray:
        k = len(self.context.domains)
        return np.full(k, 1.0 / k)


class Natural(Strategy):
    def initial_weights(self) -> np.ndarray:
        tokens = np.asarray(self.context.train_tokens, dtype=np.float64)
        return tokens / tokens.sum()


def as_mapping(weights: dict | list, domains: list[str] | tuple[str, ...]) -> dict:
    """A mixture given as a list, in domain order, as a mapping; a mapping unchanged."""
    if not isinstance(weights, list):
        return weights
    if len(weights) != len(domains):
        raise ConfigError(f"weights given as a list need one number per domain in corpus.domains order "
                          f"({len(domains)}: {', '.join(domains)}); got {len(weights)}: {weights}")
    return dict(zip(domains, weights))


class Static(Strategy):
    defaults = {"weights": {}}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        weights = as_mapping(hparams.get("weights", {}), domains)
        super().check_hparams({**hparams, "weights": weights}, domains)
        if set(weights) != set(domains):
            raise ConfigError(
                f"weights must name every domain exactly once; missing {sorted(set(domains) - set(weights))}, "
                f"unknown {sorted(set(weights) - set(domains))}"
            )
        not_numbers = {d: w for d, w in weights.items() if isinstance(w, bool) or not isinstance(w, (int, float))}
        if not_numbers:
            raise ConfigError(f"weights must be numbers; got {not_numbers}")
        values = np.array([weights[d] for d in domains], dtype=float)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            raise ConfigError(f"weights must be finite, non-negative and not all zero: {weights}")

    def initial_weights(self) -> np.ndarray:
        weights = as_mapping(self.hparams["weights"], self.context.domains)
        values = np.array([weights[d] for d in self.context.domains], dtype=np.float64)
        return values / values.sum()
