"""DoReMi: Domain Reweighting with Minimax Optimization (Xie et al., NeurIPS 2023, arXiv 2305.10429),
as the original implementation computes it.

Stages ``reference → proxy → final``; with ``rounds: R > 1`` (iterated DoReMi) the pair repeats
as ``reference-r2, proxy-r2, ...`` and round r's reference trains on round r−1's ᾱ.

- reference: a plain run on the reference weights (``reference_weights``: natural or uniform).
- proxy: same size as the reference, from scratch; batches are sampled uniformly (p = u) and
  α_0 = u. At each optimizer step, over all the step's tokens (Algorithm 1 of the paper):
      λ_i = mean over domain i's tokens of max(ℓ_θ(x_j) − ℓ_ref(x_j), 0)   (clipped per token)
  a domain absent from the step keeps its last λ_i (initially log|V|), then
      α' = softmax(log α_{t−1} + η λ),   α_t = (1 − c) α' + c u,
  where α_{t−1} is the previous smoothed vector. The same step's proxy loss uses α_t:
  per-token weights w_d = α_t,d / p_d, loss = Σ_j w_d(j) ℓ_j / Σ_j w_d(j).
  It hands on ᾱ = mean(α_0, α_1, …, α_T): the initial vector counts, which matters for short runs.
- final: a static run on the last proxy's ᾱ.

Defaults η = 1, c = 1e−3 are the paper's runs (the released code defaults to c = 1e−4). c = 1 pins
α_t to u, a proxy that never acts: the config check refuses it unless ``allow_static: true``.

The proxy's log.csv holds each step's loss weights w (``loss_weight/<d>``; its sampling is
uniform, so the mixture it trains on is α_t). Its trace, per step: ``alpha``, α_t after the
step's update, and ``excess``, λ (the per-domain excess losses the doremi_excess figure draws).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.config import Stage
from mixbench.errors import ConfigError
from strategies.base import Strategy, check_named_mixture, named_mixture

# Each round trains a reference and a proxy per seed; more rounds than this is a typo, and the
# stage list of a huge count would not even fit in memory while the workflow is parsed.
MAX_ROUNDS = 20


def stage_name(kind: str, round_: int) -> str:
    """The stage of round ``round_`` of ``kind``: 'proxy', 'proxy-r2', ..."""
    return str(Stage(kind=kind, round=round_))


def excess_loss_per_domain(token_loss: np.ndarray, reference_loss: np.ndarray, token_domains: np.ndarray,
                           num_domains: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over each domain's tokens of the per-token clipped excess loss, and the token counts.
    Clipping each token before averaging is the original code's rule (a domain's mean excess
    would cancel a token the proxy does worse on against one it does better on)."""
    clipped = np.maximum(token_loss - reference_loss, 0.0).astype(np.float64)  # (B, L)
    per_row = clipped.sum(axis=1)
    sums = np.bincount(token_domains, weights=per_row, minlength=num_domains)
    counts = np.bincount(token_domains, minlength=num_domains) * token_loss.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan), counts


def exponentiated_gradient_step(alpha: np.ndarray, excess: np.ndarray, step_size: float,
                                smoothing: float) -> np.ndarray:
    """α' = softmax(log α + η λ), then (1 − c) α' + c u."""
    logits = np.log(alpha) + step_size * excess
    updated = np.exp(logits - logits.max())
    updated /= updated.sum()
    return (1.0 - smoothing) * updated + smoothing / len(alpha)


class DoReMi(Strategy):
    stages = ("reference", "proxy", "final")
    signals = frozenset({"reference_token_loss"})
    defaults = {"reference_weights": "natural", "step_size": 1.0, "smoothing": 1e-3, "rounds": 1, "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        check_named_mixture("reference_weights", h["reference_weights"])
        if h["step_size"] <= 0 or not 0 <= h["smoothing"] <= 1 or not 1 <= h["rounds"] <= MAX_ROUNDS:
            raise ConfigError(f"need step_size > 0, 0 <= smoothing <= 1 and 1 <= rounds <= {MAX_ROUNDS}, got "
                              f"step_size {h['step_size']}, smoothing {h['smoothing']}, rounds {h['rounds']}")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """Smoothing 1 replaces every update by u (step_size 0, which would too, is refused as invalid)."""
        if Stage.parse(stage).kind != "proxy" or hparams["smoothing"] < 1:
            return None
        return (f"smoothing {hparams['smoothing']} makes every update α_t = (1 − c)·α' + c·u = u, so its weights "
                f"stay uniform and it hands on uniform weights; use smoothing < 1 (the paper's 1e-3)")

    @classmethod
    def stages_for(cls, hparams: dict[str, Any]) -> tuple[str, ...]:
        rounds = hparams.get("rounds", cls.defaults["rounds"])
        pairs = [stage_name(kind, r) for r in range(1, rounds + 1) for kind in ("reference", "proxy")]
        return (*pairs, "final")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        stage = Stage.parse(context.stage)
        self.kind, self.round = stage.kind, stage.round
        k = len(context.domains)
        self.uniform = np.full(k, 1.0 / k)
        if self.kind == "proxy":
            self.alpha = self.uniform.copy()
            self.excess = np.full(k, np.log(context.vocab_size))  # λ before a domain is first seen
            self.alpha_sum, self.alpha_count = self.alpha.copy(), 1  # α_0 counts in ᾱ

    def initial_weights(self) -> np.ndarray:
        upstream = self.context.upstream_weights
        if self.kind == "proxy":
            return self.uniform  # sampling stays uniform: α only weights the loss
        if self.kind == "final":
            return upstream[stage_name("proxy", self.hparams["rounds"])]
        if self.round > 1:
            return upstream[stage_name("proxy", self.round - 1)]
        return named_mixture("reference_weights", self.hparams["reference_weights"], self.context)

    def required_signals(self) -> frozenset[str]:
        return self.signals if self.kind == "proxy" else frozenset()

    def reweights_current_step(self) -> bool:
        return self.kind == "proxy"

    def needs_step_stats(self, step: int) -> bool:
        return self.kind == "proxy"

    def signal_options(self) -> dict[str, dict[str, Any]]:
        if self.kind != "proxy":
            return {}
        return {"reference_token_loss": {"stage": stage_name("reference", self.round)}}  # this round's reference

    def update(self, stats) -> None:
        if self.kind != "proxy":
            return None
        signal = stats.extra["reference_token_loss"]  # the proxy's and the reference's token losses, all ranks
        excess, counts = excess_loss_per_domain(signal["token_loss"], signal["reference_token_loss"],
                                                signal["token_domains"], len(self.alpha))
        present = counts > 0
        self.excess = np.where(present, excess, self.excess)
        self.alpha = exponentiated_gradient_step(self.alpha, self.excess, self.hparams["step_size"],
                                                 self.hparams["smoothing"])
        self.alpha_sum += self.alpha
        self.alpha_count += 1
        return None  # sampling weights unchanged

    def has_loss_weights(self) -> bool:
        return self.kind == "proxy"

    def loss_weights(self) -> np.ndarray | None:
        if self.kind != "proxy":
            return None
        return self.alpha / self.uniform  # w_d = α_d / p_d with p = u

    def final_weights(self) -> np.ndarray:
        if self.kind == "proxy":
            return self.alpha_sum / self.alpha_count
        return super().final_weights()

    def trace(self) -> dict[str, Any] | None:
        return {"alpha": self.alpha, "excess": self.excess} if self.kind == "proxy" else None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.kind == "proxy":
            state.update(alpha=self.alpha.copy(), excess=self.excess.copy(), alpha_sum=self.alpha_sum.copy(),
                         alpha_count=self.alpha_count)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.kind == "proxy":
            self.alpha, self.excess = np.array(state["alpha"]), np.array(state["excess"])
            self.alpha_sum, self.alpha_count = np.array(state["alpha_sum"]), int(state["alpha_count"])
