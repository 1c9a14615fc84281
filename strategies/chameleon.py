"""Chameleon (Xie, Tonin, Cevher, "Chameleon: A Flexible Data-mixing Framework for Language Model
Pretraining and Finetuning", ICML 2025, arXiv 2505.24844), pre-training weights as the authors' code
(LIONS-EPFL/Chameleon: ``utils.py``, ``compute_chameleon_weights.py --mode pretrain``) computes them.

Stages ``proxy → final``.

- proxy: a plain run on uniform weights that never changes its sampling weights (so its model is
  the one a ``uniform`` run of the same size, seed and length trains). At its last step T it asks
  for the ``domain_embeddings`` signal, one vector e_i per domain (E ∈ R^{K×d}), and computes, in
  the authors' notation (k = K domains):
      Ω = (E − 1ē)(E − 1ē)ᵀ          the linear kernel E Eᵀ, centred (sklearn's KernelCenterer:
                                     H E Eᵀ H with H = I − 11ᵀ/k), the "domain affinity matrix"
      S_λ(D_i) = [Ω (Ω + λ k I)^{-1}]_ii       kernel ridge leverage scores; the ridge is λ·k
      S ← S / Σ_j S_j                           (``normalize_scores``; the current utils.py)
      α_i = exp(S_i^{-1} / τ) / Σ_j exp(S_j^{-1} / τ)   with S_i^{-1} = 1 / (S_i + 1e−12)
  Defaults are the released code's: λ = 10 (``lambda_reg``), τ = 5 (``temperature``, its
  ``pt_temperature``). Inverse scores upweight the domains that share the others' representation
  (a domain near the embeddings' centre has a small score); the paper's finetuning weights
  (softmax of S / 0.2) are not a pre-training mixture and are not offered here. The softmax is
  taken after subtracting the largest logit (the released code exponentiates directly, which
  overflows to nan when a score is ~0; the weights are the same wherever it does not).
  ``update`` returns None (sampling stays uniform); the proxy's ``final_weights()`` is α.
- final: a static run on the proxy's α.

The embeddings, as the authors make them (``get_random_samples``, ``_get_single_batch_gpt2_embeddings``,
``load_and_prepare_embeddings``, ``calculate_domain_average_embeddings``): 2048 random windows of
512 tokens from each domain's **train** split; each window's embedding is the mean over its
positions of the proxy's **middle hidden state**, ``hidden_states[len(hidden_states) // 2]`` of
``GPT2Model(..., output_hidden_states=True)`` (the residual stream after block ⌈n_layer/2⌉, no
layer norm; after 6 of 12 blocks), in fp32; duplicate window embeddings are dropped; a domain's
embedding is the mean of its windows' embeddings. No normalisation of the vectors. This module asks
the provider for exactly that: ``signal_options()`` gives ``split`` (``train``), ``windows`` (2048)
and ``layer`` (``middle``; ``final`` is the last hidden state after the final layer norm). Their
windows are random, decoded to text and re-tokenised (right-padded with EOS, and the pad positions
counted in the mean); the provider's are evenly spaced token windows of ``training.seq_len``, all of
one length, so the mean over each window's positions then over windows is the mean over every token.
The authors embed with the finished proxy; the signal at step T is taken before step T's update.

The weights are computed in the proxy run, so its fingerprint holds every hyperparameter:
changing ``lambda_reg``, ``temperature`` or ``normalize_scores`` trains the proxy again, though
its model and embeddings would be the same.

Trace (once, at step T): ``kernel`` (Ω), ``leverage_scores`` (S, as normalised) and ``alpha`` (α).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy

SIGNAL = "domain_embeddings"
LAYERS = ("middle", "final")
SPLITS = ("train", "val")
# The released code's guard against a zero score before inverting it.
INVERSE_EPS = 1e-12


def centred_affinity(embeddings: np.ndarray) -> np.ndarray:
    """Ω = H E Eᵀ H (H = I − 11ᵀ/k): the Gram matrix of the embeddings less their mean."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    return centred @ centred.T


def ridge_leverage_scores(omega: np.ndarray, lambda_reg: float) -> np.ndarray:
    """S_i = [Ω (Ω + λ k I)^{-1}]_ii. Ω and (Ω + λkI)^{-1} commute, so this is the diagonal of
    solve(Ω + λkI, Ω); λ > 0 keeps the system nonsingular although the centred Ω has rank < k."""
    k = omega.shape[0]
    return np.diag(np.linalg.solve(omega + lambda_reg * k * np.eye(k), omega)).copy()


def inverse_score_softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """α_i ∝ exp((1 / (S_i + 1e−12)) / τ), taken after subtracting the largest logit."""
    logits = 1.0 / (scores + INVERSE_EPS) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def chameleon_weights(embeddings: np.ndarray, *, lambda_reg: float, temperature: float,
                      normalize_scores: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ω, S, α) from the domain embeddings E (k × d). ValueError where they cannot give weights."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"need one embedding vector per domain for at least two domains, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("the domain embeddings are not all finite")
    omega = centred_affinity(e)
    scores = ridge_leverage_scores(omega, lambda_reg)
    if not scores.sum() > 0:
        raise ValueError("every domain has the same embedding, so the centred kernel is 0 and every leverage "
                         "score 0: there is nothing to weight the domains by")
    if normalize_scores:
        scores = scores / scores.sum()
    return omega, scores, inverse_score_softmax(scores, temperature)


class Chameleon(Strategy):
    stages = ("proxy", "final")
    signals = frozenset({SIGNAL})
    defaults = {"lambda_reg": 10.0, "temperature": 5.0, "normalize_scores": True, "windows": 2048,
                "split": "train", "layer": "middle"}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if len(domains) < 2:
            raise ConfigError(f"chameleon weights domains against each other and needs at least two, got {domains}")
        if h["lambda_reg"] <= 0 or h["temperature"] <= 0:
            raise ConfigError(f"need lambda_reg > 0 and temperature > 0 (the released code's 10 and 5), got "
                              f"lambda_reg {h['lambda_reg']}, temperature {h['temperature']}")
        if h["windows"] < 1:
            raise ConfigError(f"windows (per domain, for its embedding) must be positive, got {h['windows']}")
        if h["split"] not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {h['split']!r}")
        if h["layer"] not in LAYERS:
            raise ConfigError(f"layer must be 'middle' (the authors' hidden state) or 'final', got {h['layer']!r}")

    @classmethod
    def check_stage_size(cls, hparams: dict[str, Any], *, stage: str, size: str, n_layer: int) -> None:
        """A middle layer needs two blocks: a one-block model's middle hidden state is its last."""
        if stage == "proxy" and hparams["layer"] == "middle" and n_layer < 2:
            raise ConfigError(f"chameleon embeds with the proxy's middle layer, but size {size!r} has {n_layer} "
                              f"block: give the proxy a size of 2 or more blocks, or set layer: final")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        self.proxy = context.stage == "proxy"
        self.kernel: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.alpha: np.ndarray | None = None

    def initial_weights(self) -> np.ndarray:
        if self.proxy:
            k = len(self.context.domains)
            return np.full(k, 1.0 / k)
        return self.context.upstream_weights["proxy"]

    def required_signals(self) -> frozenset[str]:
        return self.signals if self.proxy else frozenset()

    def signal_options(self) -> dict[str, dict[str, Any]]:
        if not self.proxy:
            return {}
        h = self.hparams
        return {SIGNAL: {"split": h["split"], "windows": h["windows"], "layer": h["layer"]}}

    def _last_step(self, step: int) -> bool:
        return self.proxy and step == self.context.total_steps

    def signal_due(self, signal: str, step: int) -> bool:
        return self._last_step(step)

    def needs_step_stats(self, step: int) -> bool:
        return self._last_step(step)

    def update(self, stats) -> None:
        if not self._last_step(stats.step):
            return None
        embeddings = np.asarray(stats.extra[SIGNAL], dtype=np.float64)
        k = len(self.context.domains)
        if embeddings.ndim != 2 or embeddings.shape[0] != k:
            raise TrainingError(f"strategy {self.context.name!r} at step {stats.step}: {SIGNAL} has shape "
                                f"{embeddings.shape}, expected ({k}, d_model)")
        h = self.hparams
        try:
            self.kernel, self.scores, self.alpha = chameleon_weights(
                embeddings, lambda_reg=h["lambda_reg"], temperature=h["temperature"],
                normalize_scores=h["normalize_scores"])
        except ValueError as exc:
            raise TrainingError(f"strategy {self.context.name!r} at step {stats.step}: {exc}") from None
        return None  # the proxy keeps sampling uniformly

    def final_weights(self) -> np.ndarray:
        if not self.proxy:
            return super().final_weights()
        if self.alpha is None:
            raise TrainingError(f"strategy {self.context.name!r}: the proxy has no Chameleon weights: they are "
                                f"computed from the {SIGNAL} signal at its last step ({self.context.total_steps}), "
                                "which it never received")
        return self.alpha.copy()

    def trace(self) -> dict[str, Any] | None:
        if self.alpha is None:
            return None
        return {"kernel": self.kernel, "leverage_scores": self.scores, "alpha": self.alpha}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.alpha is not None:
            state.update(kernel=self.kernel.copy(), leverage_scores=self.scores.copy(), alpha=self.alpha.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "alpha" in state:
            self.kernel = np.array(state["kernel"], dtype=np.float64)
            self.scores = np.array(state["leverage_scores"], dtype=np.float64)
            self.alpha = np.array(state["alpha"], dtype=np.float64)
