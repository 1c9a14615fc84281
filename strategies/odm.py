"""ODM, Online Data Mixing (Albalak et al., 2023, arXiv 2312.02406): the mixture as a
multi-armed bandit over domains, solved with EXP3, the reward of a domain being the training
loss on it (a domain the model still finds hard is worth sampling).

The update, as the authors' code computes it (alon-albalak/online-data-mixing,
``megatron/data/data_sampling_utils.py``, class ``Exp3WeightUpdater``, method ``update``). At an
update step t, for each domain i that is rewarded, with r_i its mean token loss in the step:

    R̂_i ← R̂_i + (r_i / s) / π_i                   importance-weighted cumulative reward (s = 10)
    ε_t = min(1/K, √(ln K / (K · t)))               the exploration rate, falling with t
    w_j = exp(ε_{t-1} R̂_j) · (1 − K ε_t) / Σ_k exp(ε_{t-1} R̂_k) + ε_t
    π_j = w_j / Σ_k w_k                             the next step's mixture

with ε_0 = 1/K before the first update and π the mixture the step was drawn from. The code
scales the loss by 1/10 before using it (``reward_scale``); it updates at steps t > warmup with
t a multiple of the update frequency (its ``UpdateScheduler``), and starts from the configured
mixture, the Pile's natural one in the authors' runs (``initial``).

What the authors' code leaves open here: it draws each micro-batch from one domain, so a step
rewards one domain. mixbench's batches mix domains; every domain present in the step (tokens >
0) is rewarded with its own loss, divided by its own π_i, before the weights are computed once
(with one domain present this is the authors' update exactly). A domain absent from the step
gets no reward that step. The exp of ε R̂ is computed with the largest exponent subtracted, which
changes no weight (it cancels in the ratio) and keeps R̂ in the thousands finite.

Trace: ``cumulative_reward`` (R̂), ``epsilon`` (ε_t) and ``rewarded`` (the domains that counted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from strategies.base import StepStats, Strategy, check_named_mixture, first_update_after, named_mixture


def exp3_mixture(cumulative: np.ndarray, previous_epsilon: float, epsilon: float) -> np.ndarray:
    """π from R̂, ε_{t-1} and ε_t (the module's docstring)."""
    k = len(cumulative)
    exponents = previous_epsilon * np.asarray(cumulative, dtype=np.float64)
    scaled = np.exp(exponents - exponents.max())
    weights = scaled * (1 - k * epsilon) / scaled.sum() + epsilon
    return weights / weights.sum()


def exploration(step: int, domains: int) -> float:
    """ε_t = min(1/K, √(ln K / (K t)))."""
    return min(1 / domains, math.sqrt(math.log(domains) / (domains * step)))


class ODM(Strategy):
    defaults = {"warmup_steps": 0, "update_every": 1, "reward_scale": 10.0, "initial": "natural",
                "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["warmup_steps"] < 0 or h["update_every"] < 1 or not 0 < h["reward_scale"] < float("inf"):
            raise ConfigError(f"need warmup_steps >= 0, update_every >= 1 and a finite reward_scale > 0; got "
                              f"{h['warmup_steps']}, {h['update_every']}, {h['reward_scale']}")
        check_named_mixture("initial", h["initial"])
        if len(domains) < 2:
            raise ConfigError(f"odm is a bandit over domains: it needs >= 2, got {domains}")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """ODM updates after each multiple of update_every past its own warmup, before the last step."""
        every, warmup = hparams["update_every"], hparams["warmup_steps"]
        if first_update_after(warmup, every) <= steps - 1:
            return None
        return (f"no multiple of update_every {every} falls after its warmup_steps {warmup} and before the last "
                f"step {steps}, so it never updates; lower warmup_steps or update_every")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        k = len(context.domains)
        self.pi = named_mixture("initial", self.hparams["initial"], context)
        self.cumulative = np.zeros(k)
        self.epsilon = 1 / k
        self.rewarded: list[str] = []

    def initial_weights(self) -> np.ndarray:
        return self.pi.copy()

    def due(self, step: int) -> bool:
        return step > self.hparams["warmup_steps"] and step % self.hparams["update_every"] == 0

    def needs_step_stats(self, step: int) -> bool:
        return self.due(step)

    def update(self, stats: StepStats) -> np.ndarray | None:
        if not self.due(stats.step):
            return None
        present = (np.asarray(stats.domain_tokens) > 0) & np.isfinite(stats.domain_loss)
        reward = np.where(present, np.nan_to_num(stats.domain_loss) / self.hparams["reward_scale"], 0.0)
        self.cumulative = self.cumulative + np.where(present, reward / self.pi, 0.0)
        previous, self.epsilon = self.epsilon, exploration(stats.step, len(self.pi))
        self.pi = exp3_mixture(self.cumulative, previous, self.epsilon)
        self.rewarded = [d for d, p in zip(self.context.domains, present) if p]
        return self.pi.copy()

    def trace(self) -> dict[str, Any] | None:
        return {"cumulative_reward": self.cumulative.tolist(), "epsilon": self.epsilon, "rewarded": self.rewarded}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pi": self.pi.copy(), "cumulative": self.cumulative.copy(),
                "epsilon": self.epsilon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pi = np.asarray(state["pi"], dtype=np.float64).copy()
        self.cumulative = np.asarray(state["cumulative"], dtype=np.float64).copy()
        self.epsilon = float(state["epsilon"])
