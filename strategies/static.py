"""Static mixtures: the weights never change during training.

- ``uniform``: every domain equally often, α = u.
- ``natural``: domains in proportion to their train-split tokens, α_i ∝ N_i.
- ``static``: weights given in the config (e.g. a published mixture), normalised to sum to 1.
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


class Static(Strategy):
    defaults = {"weights": {}}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        weights = hparams.get("weights", {})
        if set(weights) != set(domains):
            raise ConfigError(
                f"weights must name every domain exactly once; missing {sorted(set(domains) - set(weights))}, "
                f"unknown {sorted(set(weights) - set(domains))}"
            )
        values = np.array([weights[d] for d in domains], dtype=float)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            raise ConfigError(f"weights must be finite, non-negative and not all zero: {weights}")

    def initial_weights(self) -> np.ndarray:
        values = np.array([self.hparams["weights"][d] for d in self.context.domains], dtype=np.float64)
        return values / values.sum()
