"""UniMax (Chung et al., 2023, arXiv 2304.09151): the training budget spread as uniformly as
possible over the domains, no domain repeated more than N epochs. Static: the weights are fixed
before the first step.

The paper's Algorithm 1, with languages as domains and characters as tokens. With B the run's
budget (steps × batch_size × seq_len tokens), c_i domain i's train-split tokens and N
``max_epochs``: visit the domains from the smallest c_i up; each gets

    b_i = min(N · c_i, B_left / L_left)

where B_left is the budget not yet given and L_left the domains not yet visited (i included);
then B_left -= b_i. The weights are w_i = b_i / B: a small domain takes its N epochs and leaves
the rest of its uniform share to the larger ones, which split it evenly.

Where B exceeds N epochs of every domain (Σ_i N · c_i < B) the algorithm gives out less than B,
and any mixture repeats some domain more than N times. Then w_i = b_i / Σ_j b_j (proportional to
c_i, the natural mixture of the split), with a warning that gives the numbers: the budget is
above what the corpus holds at N epochs.

The counts c_i are the train split's tokens as tokenized (after corpus.max_bytes_per_domain), the
same counts the data budget (corpus/budget.py) measures epochs against; ``max_epochs`` is N, the
paper's one hyperparameter (default 1: no domain is repeated).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy


def unimax_allocation(budget: float, available: np.ndarray, max_epochs: float) -> np.ndarray:
    """Tokens b_i given to each domain by Algorithm 1 (the module's docstring)."""
    available = np.asarray(available, dtype=np.float64)
    given = np.zeros_like(available)
    left = float(budget)
    order = np.argsort(available, kind="stable")  # smallest first; ties in domain order
    for visited, domain in enumerate(order):
        share = left / (len(order) - visited)
        given[domain] = min(max_epochs * available[domain], share)
        left -= given[domain]
    return given


class UniMax(Strategy):
    defaults = {"max_epochs": 1.0}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        epochs = {**cls.defaults, **hparams}["max_epochs"]
        if not 0 < epochs < float("inf"):
            raise ConfigError(f"max_epochs must be a positive number of passes over a domain, got {epochs}")

    def initial_weights(self) -> np.ndarray:
        context = self.context
        if context.available_tokens is None or context.planned_tokens <= 0:
            raise TrainingError("unimax needs the run's token budget and the split's tokens per domain "
                                "(StrategyContext.planned_tokens, available_tokens)")
        available = np.asarray(context.available_tokens, dtype=np.float64)
        if np.any(available <= 0):
            empty = [d for d, n in zip(context.domains, available) if n <= 0]
            raise TrainingError(f"unimax: domains {empty} have no train tokens")
        epochs = float(self.hparams["max_epochs"])
        given = unimax_allocation(context.planned_tokens, available, epochs)
        if given.sum() < context.planned_tokens * (1 - 1e-9):
            warnings.warn(f"unimax: the budget of {context.planned_tokens:,} tokens exceeds {epochs:g} epoch(s) of "
                          f"every domain ({epochs * available.sum():,.0f} tokens): the weights are proportional to "
                          f"the domains' tokens, and every domain is repeated "
                          f"{context.planned_tokens / available.sum():.2f} times", stacklevel=2)
        return given / given.sum()
