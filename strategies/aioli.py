"""Aioli (Chen, Hu, Lourie, Cho, Ré, ICLR 2025, arXiv 2411.05735): an online mixture that estimates,
every round, how training on each domain moves the held-out loss of every domain, and takes an
exponentiated-gradient step on those estimates.

The paper's linear dynamic mixing law (A^t: round t's interaction matrix, m domains) and update:

    L_i^{t+1}(p) = L_i^t − Σ_j A^t_ij p_j,    p^t_j ∝ p^{t-1}_j · exp(η Σ_i A^t_ij)

The paper's text past its abstract was not reachable with our search tools: the details are read
from the authors' code, HazyResearch/aioli ``trainer/aioli_trainer.py``, class ``AioliTrainer``,
methods ``learn_params_subroutine`` (LearnParams) and ``train`` (the rounds). A round is
``update_steps`` = U steps. LearnParams takes its first L = lp_rounds · m · lp_steps steps: lp_rounds
sweeps, each a fresh random permutation of the domains; sub-round j trains lp_steps steps on
w^(j) = ε e_j + (1 − ε)/(m − 1) · (1 − e_j) (ε = ``one_hot_factor``), and the held-out loss L is read
at its start and end (each sub-round starts where the last ended):

    β_ij += L_i(before) − L_i(after),   β ← β / lp_rounds                     (loss decrease)
    A^t = β W^{-1}, W the matrix whose rows are w^(j)  (β_i· = W A^t_i·; for ε = 1, A^t = β)
    ``diagonal``: A^t = diag(β_ii / ε)
    ``normalize_a``: A ← A − min(A) if min(A) < 0, then A ← A / Σ_kl A_kl
    ``ema`` γ: Ā^1 = A^1, Ā^t = (1 − γ) A^t + γ Ā^{t-1}, and p^t ∝ exp(η Σ_i Ā^t_ij)  (from ones)
    ``ema`` null: p^t ∝ p^{t-1} ⊙ exp(η Σ_i A^t_ij), p^0 = uniform (the paper's EG step)

and the rest of the round trains on p^t. Both branches start from their ``weights_init`` of ones,
whatever the prior; ``prior_steps`` > 0 first trains that many steps on ``prior`` (their
``aioli_prior``). The perturbed mixtures do not depend on p: A^t sees p only through the model.

Defaults: ``update_steps`` 250 (SPEC §11; the authors' 2- and 3-domain ``scripts/arxiv_*/aioli/run.sh``);
the rest from their 7-domain SlimPajama ``scripts/full/aioli/run.sh`` (nearest mixbench's 7 domains;
it has update_steps 200): lp_rounds 2, lp_steps 10, η 1, ema 0.1, one_hot_factor 0.75, normalize_a
on; ``diagonal`` off and ``prior_steps`` 0 from ``main.py``'s argparse.

Open choices. (1) Timing. The loop measures ``heldout_loss`` at step t on the parameters after step
t − 1, and weights returned by ``update`` at step t apply from step t + 1. A round starting after
c steps trains its sub-rounds on steps c + qℓ + 1 … c + (q + 1)ℓ (ℓ = lp_steps); the mixture of each
is returned one step ahead (its draw needs no loss), and the loss is read at the sub-round
boundaries, steps c + qℓ + 1 for q = 0 … L/ℓ. The last reading (step c + L + 1) is the model after
LearnParams, so A^t and p^t are known only for step c + L + 2: step c + L + 1 trains on the
previous p (the prior before the first round), one step of lag per round that the authors' loop,
which stops for the evaluation, does not have. (2) A round whose LearnParams and one step of p^t
do not fit before the run's end is not started: the run ends on the last p^t (the authors' runs
are whole rounds). (3) The permutations come from ``numpy.random.default_rng([seed, round])``,
so the schedule needs no state. (4) The authors draw a LearnParams sub-round's sequences in exact
proportions (``SlimpjDataset.get_tokenized_dataset``, ``mapped_train``): ``stratified`` (on)
asks the sampler for stratified batches, the nearest mixbench has, for the whole run (the
learned part of a round too, where the authors sample at random: the same expected counts with
less variance; ``stratified: false`` samples every step at random). (5) Held-out loss on
``heldout_windows`` fixed windows per domain (the signal's default 8) where the authors use the
whole val split; the same windows each time, so the differences are paired. (6) ``diagonal`` also
at ε = 1 (their code ignores the flag there; its help asks ε ≠ 1). (7) Normalising a constant A
divides by zero in their code: here it warns and the round moves no weight. The eth-easl/mixtera
port (``mixtera/core/algo/aioli/aioli.py``) reads train-loss differences step to step and divides by
the sum only when min(A) < 0; we follow the authors' code.

Trace: at each loss reading ``round``, ``heldout_loss`` and ``trained_on`` (the domain of the
sub-round it ends; null at a round's start); at the reading that ends LearnParams also
``loss_decrease`` (β / lp_rounds), ``interaction_matrix`` (A^t as estimated), ``applied_matrix``
(after normalisation and EMA: what the step used) and ``mixture`` (p^t).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from mixbench.errors import ConfigError, TrainingError
from strategies.base import StepStats, Strategy, check_named_mixture, named_mixture

SIGNAL = "heldout_loss"


def perturbed_mixture(*, domain: int, num_domains: int, one_hot_factor: float) -> np.ndarray:
    """w^(j): ε on ``domain``, the rest shared equally."""
    weights = np.full(num_domains, (1 - one_hot_factor) / (num_domains - 1))
    weights[domain] = one_hot_factor
    return weights


def perturbation_order(*, seed: int, round_index: int, num_domains: int, lp_rounds: int) -> list[int]:
    """The domains of a round's sub-rounds: lp_rounds random permutations, one after another."""
    rng = np.random.default_rng([seed, round_index])
    return [int(j) for _ in range(lp_rounds) for j in rng.permutation(num_domains)]


def interaction_matrix(decrease: np.ndarray, *, one_hot_factor: float, diagonal: bool) -> np.ndarray:
    """A^t from β (rows: the domain measured; columns: the domain perturbed)."""
    k = len(decrease)
    if diagonal:
        return np.diag(np.diag(decrease)) / one_hot_factor
    if one_hot_factor == 1:
        return decrease.copy()
    mixtures = np.stack([perturbed_mixture(domain=j, num_domains=k, one_hot_factor=one_hot_factor)
                         for j in range(k)])
    return np.linalg.solve(mixtures, decrease.T).T  # β_i· = W A_i· for every row i


def normalized(matrix: np.ndarray, *, round_index: int) -> np.ndarray:
    """Shift A to be non-negative, then scale it to sum to 1 (``normalize_a``)."""
    lowest = float(matrix.min())
    shifted = matrix - lowest if lowest < 0 else matrix.copy()
    total = float(shifted.sum())
    if not total > 0:
        warnings.warn(f"aioli round {round_index}: the interaction matrix is constant ({lowest}), so normalising "
                      f"it leaves 0 everywhere; this round moves no weight", stacklevel=2)
        return np.zeros_like(matrix)
    return shifted / total


def learn_params_steps(hparams: dict[str, Any], num_domains: int) -> int:
    """L = lp_rounds · m · lp_steps."""
    return hparams["lp_rounds"] * num_domains * hparams["lp_steps"]


class Aioli(Strategy):
    signals = frozenset({SIGNAL})
    defaults = {"update_steps": 250, "lp_rounds": 2, "lp_steps": 10, "eta": 1.0, "ema": 0.1,
                "one_hot_factor": 0.75, "normalize_a": True, "diagonal": False, "prior": "uniform",
                "prior_steps": 0, "heldout_windows": 8, "stratified": True, "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        # ema may be null (the paper's cumulative EG step), which the base check refuses for a float default.
        super().check_hparams({k: v for k, v in hparams.items() if not (k == "ema" and v is None)}, domains)
        h, k = {**cls.defaults, **hparams}, len(domains)
        if k < 2:
            raise ConfigError(f"aioli estimates how domains affect each other: it needs >= 2 domains, got {domains}")
        for key in ("update_steps", "lp_rounds", "lp_steps", "heldout_windows"):
            if h[key] < 1:
                raise ConfigError(f"aioli {key} must be >= 1, got {h[key]}")
        if h["prior_steps"] < 0:
            raise ConfigError(f"aioli prior_steps must be >= 0, got {h['prior_steps']}")
        if not 0 < h["eta"] < math.inf:
            raise ConfigError(f"aioli eta must be a finite step size > 0, got {h['eta']}")
        if h["ema"] is not None and not 0 <= h["ema"] < 1:
            raise ConfigError(f"aioli ema must be in [0, 1) (1 would keep the first A for ever), or null for the "
                              f"cumulative EG step; got {h['ema']}")
        if not 1 / k < h["one_hot_factor"] <= 1:
            raise ConfigError(f"aioli one_hot_factor must be in (1/{k}, 1] so that the perturbed mixtures favour "
                              f"their domain and W is invertible, got {h['one_hot_factor']}")
        check_named_mixture("prior", h["prior"])
        lp = learn_params_steps(h, k)
        if h["update_steps"] < lp + 2:
            raise ConfigError(f"aioli update_steps {h['update_steps']} leaves no step for the learned mixture: "
                              f"LearnParams takes lp_rounds·K·lp_steps = {lp} steps and one more while A is read; "
                              f"use update_steps >= {lp + 2} or lower lp_steps or lp_rounds")

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        """Stratified batches must hold every domain (the learned mixtures give each a share > 0)."""
        if {**cls.defaults, **hparams}["stratified"] and training["batch_size"] < len(domains):
            raise ConfigError(f"aioli's stratified batches hold each of its {len(domains)} domains, but "
                              f"training.batch_size is {training['batch_size']}; use batch_size >= {len(domains)} "
                              f"or stratified: false")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """A round runs only if its LearnParams and one step of the learned mixture fit in the run."""
        lp = learn_params_steps(hparams, len(domains))
        needed = hparams["prior_steps"] + lp + 2
        if needed <= steps:
            return None
        return (f"its first round needs prior_steps {hparams['prior_steps']} + LearnParams {lp} + 2 = {needed} steps "
                f"but the run has {steps}, so it keeps the {hparams['prior']} prior; lower prior_steps, lp_steps "
                f"or lp_rounds")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        h, k = self.hparams, len(context.domains)
        self.lp_total = learn_params_steps(h, k)
        self.prior_mixture = named_mixture("prior", h["prior"], context)
        # Rounds whose LearnParams and one learned step fit: prior + r·U + L + 2 <= T.
        span = context.total_steps - h["prior_steps"] - self.lp_total - 2
        self.rounds = span // h["update_steps"] + 1 if span >= 0 else 0
        self.mixture = self.prior_mixture.copy()  # what the steps outside LearnParams train on
        self.log_weights = np.zeros(k)  # log of the EG weights, from the authors' ones
        self.smoothed: np.ndarray | None = None  # Ā
        self.decrease = np.zeros((k, k))  # β, summed over the sweeps so far
        self.previous_loss: np.ndarray | None = None
        self.last_record: dict[str, Any] | None = None

    # -- the schedule ---------------------------------------------------------------------------
    def locate(self, step: int) -> tuple[int, int] | None:
        """(round, position in it from 0) of a 1-based step, or None outside the rounds that run."""
        offset = step - self.hparams["prior_steps"] - 1
        if offset < 0:
            return None
        round_index, position = divmod(offset, self.hparams["update_steps"])
        return (round_index, position) if round_index < self.rounds else None

    def order(self, round_index: int) -> list[int]:
        """The domains of the round's sub-rounds (drawn again on each call: a few permutations)."""
        return perturbation_order(seed=self.context.seed, round_index=round_index,
                                  num_domains=len(self.context.domains), lp_rounds=self.hparams["lp_rounds"])

    def reads_loss(self, step: int) -> bool:
        """The sub-round boundaries: positions 0, ℓ, …, L (the loss of the model after the step before)."""
        where = self.locate(step)
        return where is not None and where[1] % self.hparams["lp_steps"] == 0 and where[1] <= self.lp_total

    def starts_mixture(self, step: int) -> bool:
        """Steps whose mixture differs from the step before's: each sub-round, the lag step, p^t."""
        where = self.locate(step)
        return where is not None and (self.reads_loss(step) or where[1] == self.lp_total + 1)

    def mixture_for(self, step: int) -> np.ndarray:
        where = self.locate(step)
        if where is None or where[1] >= self.lp_total:
            return self.mixture.copy()
        domain = self.order(where[0])[where[1] // self.hparams["lp_steps"]]
        return perturbed_mixture(domain=domain, num_domains=len(self.mixture),
                                 one_hot_factor=self.hparams["one_hot_factor"])

    # -- the interface the loop calls -----------------------------------------------------------
    def initial_weights(self) -> np.ndarray:
        return self.mixture_for(1) if self.locate(1) is not None else self.prior_mixture.copy()

    def signal_due(self, signal: str, step: int) -> bool:
        return signal == SIGNAL and self.reads_loss(step)

    def signal_options(self) -> dict[str, dict[str, Any]]:
        return {SIGNAL: {"windows": self.hparams["heldout_windows"]}}

    def stratified_batches(self) -> bool:
        return bool(self.hparams["stratified"])

    def needs_step_stats(self, step: int) -> bool:
        return self.reads_loss(step) or self.starts_mixture(step + 1)

    def update(self, stats: StepStats) -> np.ndarray | None:
        if self.reads_loss(stats.step):
            self._read_loss(stats.step, stats.extra.get(SIGNAL))
        return self.mixture_for(stats.step + 1) if self.starts_mixture(stats.step + 1) else None

    def _read_loss(self, step: int, loss: Any) -> None:
        k = len(self.mixture)
        if loss is None:
            raise TrainingError(f"aioli reads {SIGNAL!r} at step {step} (a LearnParams boundary), but the step's "
                                f"stats hold none")
        loss = np.asarray(loss, dtype=np.float64)
        if loss.shape != (k,) or not np.all(np.isfinite(loss)):
            raise TrainingError(f"aioli at step {step}: {SIGNAL} must be {k} finite losses, got {loss.tolist()}")
        round_index, position = self.locate(step)
        trained_on = None
        if position == 0:
            self.decrease = np.zeros((k, k))
        else:
            trained_on = self.order(round_index)[position // self.hparams["lp_steps"] - 1]
            self.decrease[:, trained_on] += self.previous_loss - loss  # β_·j += L(before) − L(after)
        self.previous_loss = loss
        self.last_record = {"round": round_index, "heldout_loss": loss.tolist(),
                            "trained_on": None if trained_on is None else self.context.domains[trained_on]}
        if position == self.lp_total:
            self._learn(round_index)

    def _learn(self, round_index: int) -> None:
        """A^t from β, then the EG step (module docstring)."""
        h = self.hparams
        decrease = self.decrease / h["lp_rounds"]
        estimate = interaction_matrix(decrease, one_hot_factor=h["one_hot_factor"], diagonal=h["diagonal"])
        applied = normalized(estimate, round_index=round_index) if h["normalize_a"] else estimate
        if h["ema"] is None:
            self.log_weights = self.log_weights + h["eta"] * applied.sum(axis=0)  # p^t ∝ p^{t-1} exp(η 1ᵀA)
        else:
            ema = h["ema"]
            self.smoothed = applied if self.smoothed is None else (1 - ema) * applied + ema * self.smoothed
            applied = self.smoothed
            self.log_weights = h["eta"] * self.smoothed.sum(axis=0)  # p^t ∝ exp(η 1ᵀĀ)
        scaled = np.exp(self.log_weights - self.log_weights.max())
        self.mixture = scaled / scaled.sum()
        self.last_record.update(loss_decrease=decrease.tolist(), interaction_matrix=estimate.tolist(),
                                applied_matrix=applied.tolist(), mixture=self.mixture.tolist())

    def trace(self) -> dict[str, Any] | None:
        record, self.last_record = self.last_record, None
        return record

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mixture": self.mixture.copy(), "log_weights": self.log_weights.copy(),
                "smoothed": None if self.smoothed is None else self.smoothed.copy(),
                "decrease": self.decrease.copy(),
                "previous_loss": None if self.previous_loss is None else self.previous_loss.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.mixture = np.array(state["mixture"], dtype=np.float64)
        self.log_weights = np.array(state["log_weights"], dtype=np.float64)
        self.decrease = np.array(state["decrease"], dtype=np.float64)
        self.smoothed, self.previous_loss = (None if state[key] is None else np.array(state[key], dtype=np.float64)
                                             for key in ("smoothed", "previous_loss"))
