"""DoGE: Domain Reweighting with Generalization Estimation (Fan, Pagliardini, Jaggi, ICML 2024,
arXiv 2310.15393), as the original implementation computes it.

Stages ``proxy → final``. The proxy samples batches uniformly over the training domains
(α never changes sampling, it only weights gradients). At each step:

1. g_i: gradient of domain i's mean loss over its part of the batch, clipped to
   ``max_grad_norm`` (5.0 universal, 1.0 out-of-domain). A domain absent from the batch keeps
   its last g_i for the scores and adds nothing to the update.
2. Alignment with a target gradient, by ``target``:
   - ``mix`` (the released universal setting): g_tgt on a held-out mixture of every training
     domain's validation data, W_i = ⟨g_i, g_tgt⟩;
   - ``train`` (the self-excluding form): W_i = ⟨g_i, Σ_{j≠i} g_j⟩;
   - a domain name (out-of-domain): g_tgt on that domain's train data, which is never trained
     on; W_i = ⟨g_i, g_tgt⟩.
3. Scores s = clip(lr_t · W / (mean_i ‖g_i‖ + 1e−6), lr_t · dw_min, lr_t · dw_max), and
   log α ← log_softmax(log α + s / μ) with μ = 0.01 universal, 0.05 OOD; no smoothing.
4. The proxy steps on Σ_i α_i g_i over the domains present (α just updated).

It hands on ᾱ = mean(α_1, …, α_T); the final run trains on ᾱ. Inner products and norms use
the parameters matching ``score_params`` (a regex; all by default; the last blocks keep the
cost down on large models); the update uses every parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from strategies.base import Strategy


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def alignment(grads: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    """W_i = ⟨g_i, g_tgt⟩, or with no target the self-excluding ⟨g_i, Σ_{j≠i} g_j⟩."""
    if target is not None:
        return grads @ target
    total = grads.sum(axis=0)
    return grads @ total - np.einsum("ij,ij->i", grads, grads)


def doge_scores(grads: np.ndarray, target: np.ndarray | None, lr: float, dw_min: float, dw_max: float) -> np.ndarray:
    """s = clip(lr · W / (mean ‖g_i‖ + 1e−6), lr · dw_min, lr · dw_max) over the rows of ``grads``."""
    mean_norm = np.linalg.norm(grads, axis=1).mean()
    return np.clip(lr * alignment(grads, target) / (mean_norm + 1e-6), lr * dw_min, lr * dw_max)


class DoGE(Strategy):
    stages = ("proxy", "final")
    signals = frozenset({"domain_gradients", "target_gradient"})
    defaults = {"target": "mix", "mu": None, "max_grad_norm": None, "dw_min": 0.0, "dw_max": 5.0,
                "score_params": ".*"}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["target"] not in ("mix", "train", *domains):
            raise ConfigError(f"target must be 'mix', 'train' or a domain ({', '.join(domains)}), got {h['target']!r}")
        for key in ("mu", "max_grad_norm"):
            if h[key] is not None and (not isinstance(h[key], (int, float)) or h[key] <= 0):
                raise ConfigError(f"{key} must be a positive number or null (the paper's default), got {h[key]!r}")
        if not 0 <= h["dw_min"] <= h["dw_max"]:
            raise ConfigError("need 0 <= dw_min <= dw_max")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        domains = list(context.domains)
        self.ood = self.hparams["target"] not in ("mix", "train")
        self.mu = self.hparams["mu"] or (0.05 if self.ood else 0.01)
        self.clip_norm = self.hparams["max_grad_norm"] or (1.0 if self.ood else 5.0)
        # Indices of the domains trained on: all but an out-of-domain target.
        self.train_idx = np.array([i for i, d in enumerate(domains) if d != self.hparams["target"]])
        self.log_alpha = np.full(len(self.train_idx), -np.log(len(self.train_idx)))
        self.last_grads: dict[int, np.ndarray] = {}
        self.alpha_sum, self.alpha_count = np.zeros(len(domains)), 0
        self.last_scores = np.zeros(len(self.train_idx))

    def alpha(self) -> np.ndarray:
        """α over all K domains (zero on an out-of-domain target)."""
        full = np.zeros(len(self.context.domains))
        full[self.train_idx] = np.exp(self.log_alpha)
        return full

    def initial_weights(self) -> np.ndarray:
        if self.context.stage == "final":
            return self.context.upstream_weights["proxy"]
        weights = np.zeros(len(self.context.domains))
        weights[self.train_idx] = 1.0 / len(self.train_idx)  # uniform over the training domains
        return weights

    def required_signals(self) -> frozenset[str]:
        if self.context.stage != "proxy":
            return frozenset()
        return frozenset({"domain_gradients"} | ({"target_gradient"} if self.hparams["target"] != "train" else set()))

    def domain_gradient_options(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm, "score_params": self.hparams["score_params"]}

    def target_batch(self) -> tuple[str, np.ndarray] | None:
        if self.hparams["target"] == "train":
            return None
        if self.ood:
            return "train", (np.array(self.context.domains) == self.hparams["target"]).astype(float)
        return "val", self.initial_weights()  # a mixture of every training domain's held-out data

    def update(self, stats) -> None:
        if self.context.stage != "proxy":
            return None
        self.last_grads.update({i: g for i, g in stats.extra["domain_gradients"].items() if i in set(self.train_idx)})
        known = [j for j, i in enumerate(self.train_idx) if i in self.last_grads]
        scores = np.zeros(len(self.train_idx))  # a domain never seen yet has no gradient to score
        if known:
            grads = np.stack([self.last_grads[self.train_idx[j]] for j in known]).astype(np.float64)
            target = stats.extra.get("target_gradient")
            target = None if target is None else np.asarray(target, dtype=np.float64)
            scores[known] = doge_scores(grads, target, stats.lr, self.hparams["dw_min"], self.hparams["dw_max"])
        self.log_alpha = log_softmax(self.log_alpha + scores / self.mu)
        self.last_scores = scores
        self.alpha_sum += self.alpha()
        self.alpha_count += 1
        return None  # sampling stays uniform

    def loss_weights(self) -> np.ndarray | None:
        return self.alpha() if self.context.stage == "proxy" else None  # Σ_i α_i g_i

    def final_weights(self) -> np.ndarray:
        if self.context.stage == "proxy" and self.alpha_count:
            return self.alpha_sum / self.alpha_count  # mean of α_1 … α_T
        return super().final_weights()

    def trace(self) -> dict[str, Any] | None:
        if self.context.stage != "proxy":
            return None
        return {"alpha": self.alpha(), "scores": self.last_scores}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_alpha": self.log_alpha.copy(), "last_grads": dict(self.last_grads),
                "alpha_sum": self.alpha_sum.copy(), "alpha_count": self.alpha_count,
                "last_scores": self.last_scores.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_alpha, self.last_grads = np.array(state["log_alpha"]), dict(state["last_grads"])
        self.alpha_sum, self.alpha_count = np.array(state["alpha_sum"]), int(state["alpha_count"])
        self.last_scores = np.array(state["last_scores"])
