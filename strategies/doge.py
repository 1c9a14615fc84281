"""DoGE: Domain Reweighting with Generalization Estimation (Fan, Pagliardini, Jaggi, ICML 2024,
arXiv 2310.15393), as the original implementation computes it.

Stages ``proxy → final``. The proxy draws stratified batches, an equal share of every training
domain (the remainder at random): the same expectation as uniform sampling, and every domain
present at every step. α never changes sampling, it only weights gradients. At each step:

1. g_i: gradient of domain i's mean loss over its part of the batch, clipped to
   ``max_grad_norm`` (5.0 universal, 1.0 out-of-domain).
2. Alignment with a target gradient, by ``target``:
   - ``mix`` (the released universal setting): g_tgt on a held-out mixture of every training
     domain's validation data, W_i = ⟨g_i, g_tgt⟩;
   - ``train`` (the self-excluding form): W_i = ⟨g_i, Σ_{j≠i} g_j⟩;
   - a domain name (out-of-domain): g_tgt on that domain's train data, which is never trained
     on; W_i = ⟨g_i, g_tgt⟩.
   g_tgt is clipped like every g_i (the original clips each domain's gradient, the target's
   included). Its batch is ``target_batch_fraction`` of the training batch (drawn stratified):
   the proxy then costs about 1 + that fraction of a uniform step (1/K is the target domain's
   share of a batch in the original out-of-domain runs; 1 gives g_tgt the training batch's noise).
3. Scores s = clip(lr_t · W / (mean_i ‖g_i‖ + 1e−6), lr_t · dw_min, lr_t · dw_max), the mean
   over every training domain (a domain without a gradient counts as 0, as in the original), and
   log α ← log_softmax(log α + s / μ) with μ = 0.01 universal, 0.05 OOD; no smoothing.
4. The proxy steps on Σ_i α_i g_i (α just updated).

The gradients never leave the device (models/signals/domain_gradients.py): this module gets
only their inner products over ``score_params`` (a regex; all parameters by default, the last
blocks keep the cost down on large models) and works on that (K+1)×(K+1) matrix. A domain
absent from a step (impossible with stratified batches) has g_i = 0 there.
It hands on ᾱ = mean(α_1, …, α_T); the final run trains on ᾱ. Settings under which α cannot move
(dw_min = dw_max; one training domain; target ``train`` over two) are refused by the config
check unless ``allow_static: true``.

The proxy's log.csv holds each step's gradient weights α (``loss_weight/<d>``). Its trace, per
step: ``alpha``, α after the step's update, and ``scores``, the step's clipped scores s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy, check_name_pattern


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def alignment(gram: np.ndarray, train_idx: np.ndarray, target_index: int | None) -> np.ndarray:
    """W_i = ⟨g_i, g_tgt⟩ (row ``target_index`` of the inner products), or with no target the
    self-excluding ⟨g_i, Σ_{j≠i} g_j⟩ over the training domains."""
    if target_index is not None:
        return gram[train_idx, target_index]
    inner = gram[np.ix_(train_idx, train_idx)]
    return inner.sum(axis=1) - np.diag(inner)


def doge_scores(gram: np.ndarray, train_idx: np.ndarray, target_index: int | None, lr: float, dw_min: float,
                dw_max: float) -> np.ndarray:
    """s = clip(lr · W / (mean_i ‖g_i‖ + 1e−6), lr · dw_min, lr · dw_max) over the training domains,
    from the inner products alone (‖g_i‖ = √⟨g_i, g_i⟩; a zero gradient counts in the mean)."""
    norms = np.sqrt(np.clip(np.diag(gram)[train_idx], 0.0, None))
    return np.clip(lr * alignment(gram, train_idx, target_index) / (norms.mean() + 1e-6), lr * dw_min, lr * dw_max)


class DoGE(Strategy):
    stages = ("proxy", "final")
    signals = frozenset({"domain_gradients", "target_gradient"})
    defaults = {"target": "mix", "mu": None, "max_grad_norm": None, "dw_min": 0.0, "dw_max": 5.0,
                "score_params": ".*", "target_batch_fraction": 0.5, "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["target"] not in ("mix", "train", *domains):
            raise ConfigError(f"target must be 'mix', 'train' or a domain ({', '.join(domains)}), got {h['target']!r}")
        for key in ("mu", "max_grad_norm"):
            if h[key] is not None and (isinstance(h[key], bool) or not isinstance(h[key], (int, float)) or h[key] <= 0):
                raise ConfigError(f"{key} must be a positive number or null (the paper's default), got {h[key]!r}")
        if not 0 <= h["dw_min"] <= h["dw_max"]:
            raise ConfigError("need 0 <= dw_min <= dw_max")
        check_name_pattern("score_params", h["score_params"])
        if not 0 < h["target_batch_fraction"] <= 1:
            raise ConfigError(f"target_batch_fraction must be in (0, 1], got {h['target_batch_fraction']!r}")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """α moves only where the scores differ between domains: not with one training domain, not with
        target `train` over two (W_1 = W_2 = ⟨g_1, g_2⟩), not with dw_min = dw_max (every score clipped to
        the same lr · dw): log_softmax cancels a score every domain shares."""
        if stage != "proxy":
            return None
        trained = [d for d in domains if d != hparams["target"]]
        if len(trained) == 1:
            return (f"target {hparams['target']!r} leaves one training domain ({trained[0]}), whose weight is 1 "
                    f"at every step; add domains to corpus.domains, or use target 'mix' or 'train'")
        if hparams["target"] == "train" and len(trained) == 2:
            return (f"target 'train' over the two domains {trained[0]} and {trained[1]} gives both the same "
                    f"alignment ⟨g_1, g_2⟩, hence the same score, which log_softmax cancels, so α stays uniform; "
                    f"use target 'mix' or add domains to corpus.domains")
        if hparams["dw_min"] == hparams["dw_max"]:
            return (f"dw_min = dw_max = {hparams['dw_max']} clips every domain's score to the same lr · "
                    f"{hparams['dw_max']}, which log_softmax cancels, so α stays uniform; use dw_min < dw_max "
                    f"(the paper's 0 and 5)")
        return None

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        """The proxy's stratified batches must hold every training domain (split over the ranks by
        position, so a rank may hold none of a domain: corpus/sampler.py)."""
        trained = len(domains) - (hparams.get("target", "mix") in domains)
        if training["batch_size"] < trained:
            raise ConfigError(f"the proxy samples each of its {trained} training domains at every step, but "
                              f"training.batch_size is {training['batch_size']}; use batch_size >= {trained}")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        domains = list(context.domains)
        self.ood = self.hparams["target"] not in ("mix", "train")
        self.mu = self.hparams["mu"] or (0.05 if self.ood else 0.01)
        self.clip_norm = self.hparams["max_grad_norm"] or (1.0 if self.ood else 5.0)
        # Indices of the domains trained on: all but an out-of-domain target.
        self.train_idx = np.array([i for i, d in enumerate(domains) if d != self.hparams["target"]])
        self.log_alpha = np.full(len(self.train_idx), -np.log(len(self.train_idx)))
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
        return frozenset(self.signal_options())  # the proxy's: domain gradients, and a target unless `train`

    def stratified_batches(self) -> bool:
        return self.context.stage == "proxy"

    def needs_step_stats(self, step: int) -> bool:
        return self.context.stage == "proxy"

    def signal_options(self) -> dict[str, dict[str, Any]]:
        if self.context.stage != "proxy":
            return {}
        options = {"domain_gradients": {"clip_norm": self.clip_norm, "score_params": self.hparams["score_params"]}}
        if self.hparams["target"] != "train":
            # Out-of-domain: the target domain's train data (never trained on); else every
            # training domain's held-out data.
            split, weights = ("train", (np.array(self.context.domains) == self.hparams["target"]).astype(float)) \
                if self.ood else ("val", self.initial_weights())
            options["target_gradient"] = {"split": split, "weights": weights, "clip_norm": self.clip_norm,
                                          "batch_fraction": self.hparams["target_batch_fraction"]}
        return options

    def update(self, stats) -> None:
        if self.context.stage != "proxy":
            return None
        signal = stats.extra["domain_gradients"]
        if self.hparams["target"] != "train" and signal["target_index"] is None:
            raise TrainingError(f"doge at step {stats.step}: target {self.hparams['target']!r} needs the target "
                                "gradient, but the step's inner products have none")
        scores = doge_scores(signal["gram"], self.train_idx, signal["target_index"], stats.lr,
                             self.hparams["dw_min"], self.hparams["dw_max"])
        self.log_alpha = log_softmax(self.log_alpha + scores / self.mu)
        self.last_scores = scores
        self.alpha_sum += self.alpha()
        self.alpha_count += 1
        return None  # sampling stays uniform

    def has_loss_weights(self) -> bool:
        return self.context.stage == "proxy"

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
        return {**super().state_dict(), "log_alpha": self.log_alpha.copy(),
                "alpha_sum": self.alpha_sum.copy(), "alpha_count": self.alpha_count,
                "last_scores": self.last_scores.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_alpha = np.array(state["log_alpha"])
        self.alpha_sum, self.alpha_count = np.array(state["alpha_sum"]), int(state["alpha_count"])
        self.last_scores = np.array(state["last_scores"])
