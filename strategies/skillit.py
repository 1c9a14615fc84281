"""Skill-It (Chen et al., 2023, arXiv 2307.14430): a skills graph learned from one-domain runs,
then online multiplicative weights on the held-out loss, propagated through the graph.

Notation of the paper: k training skills (here the K domains), m evaluation skills (here the
same K domains, as in the Aioli authors' SlimPajama runs), the skills graph A ∈ R^{k×m}, step
size η, rounds of T steps, window w, L_j(f) the held-out loss of evaluation skill j of model f.

Stages ``swarm → final``:

- swarm (a fan-out stage, one run per domain: ``swarm-0 … swarm-{K-1}``): run i trains the
  initial model f on domain i alone (weights e_i) for the stage's steps, giving f_{H,i}. The
  graph (the brute-force LearnGraph, Algorithm 2 of the paper), with the normalisation of the
  Aioli authors' SlimPajama reimplementation (HazyResearch/aioli, ``mixing_law_fitting.py``,
  function ``skills_graph``, which builds the graph their ``scripts/*/skillit/run.sh`` read):

      A_ij = (L_j(f) − L_j(f_{H,i})) / L_j(f)          row i: the run on domain i; column j: scored

  the relative drop of domain j's loss when training on domain i: no threshold, the diagonal
  kept, negative entries (training on i made j worse) kept as they are. (aioli reads the losses
  at checkpoints 0 and ``end``, 2857 by default: 40000 / 14, each of its 7 runs a fourteenth of
  the final run's steps; the swarm's length is the stage's ``steps`` here.)
- final (online, Algorithm 1 of the paper; HazyResearch/aioli ``trainer/skillit_trainer.py``,
  class ``SkillitTrainer``, method ``train``, and the original HazyResearch/skill-it
  ``trainer/mw_trainer.py``, class ``MWTrainer``, method ``train``, which compute the same):

      p_1^i     ∝ exp(η Σ_j A_ij)                                        before any loss is seen
      p_{t+1}^i ∝ exp(η Σ_{τ=max(1,t−w+1)}^{t} Σ_j A_ij L_j(f_τ))        after round t

  with f_τ the model at the start of round τ (f_1 the initial model). Each mixture is a fresh
  exponential of the window's losses: neither the previous mixture nor older losses count (both
  codes multiply by ``weights_init`` = 1, not by the previous weights). Round t is steps
  (t−1)T+1 … tT: the held-out loss L(f_t) is the ``heldout_loss`` signal of step (t−1)T+1 (the
  parameters before that step's update), and at step tT (before the run's last step) the mixture
  becomes p_{t+1}. A round's update reads the loss of its start, not its end, as both codes do
  (their evaluation at step 0 enters the first update). The stored copy of the paper gave its
  abstract only: these equations are read from the two codes (the ``--mw``/``--skillit`` path).

Defaults: η = 0.2 and w = 3 (aioli ``scripts/{arxiv_stackexchange, arxiv_books_stackexchange,
full}/skillit/run.sh``: ``--eta 0.2 --skillit_window 3``; skill-it's ``main.py`` defaults
``--mw_window`` to 3); T = ``update_every`` = 500 steps (aioli's two- and three-domain runs: 500 of
5000 steps, 10 rounds; its seven-domain run: 400 of 40000); ``heldout_windows`` 8 (the signal's
own default).

Choices the paper and the codes leave open, and what is done here:
- The codes evaluate on a schedule of their own (``num_ckpts``) and sum the last w evaluations;
  here one measurement per round, at its first step: their code with checkpoints every T steps.
  Their first evaluation is after the first optimizer step; here it is before it (f_1 untrained).
- The trainers set an off-diagonal entry equal to 1 to 0.5 (for 0/1 graphs of synthetic tasks);
  A_ij = 1 would need a zero loss after training, which is refused, so the rule never applies.
- A last round shorter than T when T does not divide the run (the codes assert it divides).
- The exponent's maximum is subtracted before exp: the normalised mixture is the same, and no
  overflow. A weight that still underflows to 0 is warned about with the exponents.
- The graph's "before" loss is the swarm run's own model before its first step
  (``context.upstream_heldout_initial``; aioli's checkpoint 0 is after one step), its "after"
  loss the run's after its last step (``context.upstream_heldout``), both on the run's val.csv
  windows (aioli's ``skills_graph`` reads its test-split files; the test split stays unseen here).

Trace (the final run): ``skills_graph`` (A, rows trained, columns scored; on its first step),
``round`` and ``heldout_loss`` (L(f_t)) where a round starts, and at an update ``loss_window``
(Σ over the window of L), ``exponent`` (η A · that sum) and ``mixture`` (p_{t+1}).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from mixbench.config import Stage
from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy, StepStats


def skills_graph_from_losses(loss_before: np.ndarray, loss_after: np.ndarray,
                             domains: tuple[str, ...]) -> np.ndarray:
    """A_ij = (L_j(f) − L_j(f_{H,i})) / L_j(f), from row i of each (K, K) array: the held-out losses
    of the run on domain i before its first step and after its last."""
    before, after = np.asarray(loss_before, dtype=np.float64), np.asarray(loss_after, dtype=np.float64)
    shape = (len(domains), len(domains))
    if before.shape != shape or after.shape != shape:
        raise TrainingError(f"skillit's graph needs (K, K) = {shape} losses, got {before.shape} and {after.shape}")
    for when, losses in (("before its first step", before), ("after its last step", after)):
        bad = [f"run on {domains[i]}, loss of {domains[j]}: {float(losses[i, j])!r}"
               for i, j in zip(*np.nonzero(~(np.isfinite(losses) & (losses > 0))))]
        if bad:
            raise TrainingError(f"skillit's graph divides by held-out losses, which must be finite and > 0; "
                                f"{when}: {'; '.join(bad)}")
    return (before - after) / before


def mixture_from_exponent(exponent: np.ndarray, *, domains: tuple[str, ...], step: int) -> np.ndarray:
    """p^i ∝ exp(exponent_i), the maximum subtracted first (it cancels in the ratio)."""
    scaled = np.exp(exponent - exponent.max())
    if np.any(scaled == 0):
        underflow = [d for d, s in zip(domains, scaled) if s == 0]
        warnings.warn(f"skillit at step {step}: the weights of {underflow} underflow to 0 (exponents "
                      f"{np.round(exponent, 3).tolist()}): those domains are not sampled; lower eta", stacklevel=2)
    return scaled / scaled.sum()


class SkillIt(Strategy):
    stages = ("swarm", "final")
    fan_out = {"swarm": None}  # one run per domain: replicas_for
    signals = frozenset({"heldout_loss"})
    reads_upstream_heldout = True
    defaults = {"eta": 0.2, "update_every": 500, "window": 3, "heldout_windows": 8, "allow_static": False}

    @classmethod
    def replicas_for(cls, hparams: dict[str, Any], domains: list[str]) -> dict[str, int]:
        return {"swarm": len(domains)}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if not 0 < h["eta"] < math.inf:
            raise ConfigError(f"eta must be finite and > 0 (the paper's runs: 0.2), got {h['eta']}; eta 0 would "
                              f"sample uniformly the whole run")
        for key in ("update_every", "window", "heldout_windows"):
            if h[key] < 1:
                raise ConfigError(f"{key} must be >= 1, got {h[key]} (defaults: update_every 500, window 3, "
                                  f"heldout_windows 8)")
        if len(domains) < 2:
            raise ConfigError(f"skillit mixes domains through a graph between them: it needs >= 2, got {domains}")

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        if training["heldout_windows"] == 0:
            raise ConfigError("skillit builds its skills graph from the one-domain runs' held-out losses: "
                              "training.heldout_windows must be > 0")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """The final run updates at the end of each round of update_every steps before its last step."""
        every = hparams["update_every"]
        if Stage.parse(stage).kind != "final" or every <= steps - 1:
            return None
        return (f"update_every {every} leaves no round's end before the last step {steps}, so the mixture stays "
                f"p_1 = softmax(eta · A · 1) the whole run; use update_every <= {steps - 1}")

    @classmethod
    def stage_hparams(cls, stage: str, hparams: dict[str, Any]) -> dict[str, Any]:
        if Stage.parse(stage).replica is not None:  # swarm-i trains on e_i whatever the hyperparameters
            return {}
        return hparams

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        self.graph: np.ndarray | None = None  # A, built from the swarm's runs when first needed
        self.window_losses = np.zeros((0, len(context.domains)))  # L(f_τ) of the last w rounds' starts, oldest first
        self.rounds_started = 0
        self.graph_traced = False
        self.pending_trace: dict[str, Any] = {}  # this step's trace, from update() to trace()

    # -- stages ---------------------------------------------------------------------------
    def in_final(self) -> bool:
        return self.context.replica is None

    def heldout_before_training(self) -> bool:
        return not self.in_final()  # the graph's "before" loss, L_j(f)

    def required_signals(self) -> frozenset[str]:
        return self.signals if self.in_final() else frozenset()

    def signal_options(self) -> dict[str, dict[str, Any]]:
        return {"heldout_loss": {"windows": self.hparams["heldout_windows"]}} if self.in_final() else {}

    def skills_graph(self) -> np.ndarray:
        if self.graph is None:
            self.graph = skills_graph_from_losses(*self.upstream_losses(), self.context.domains)
        return self.graph

    def upstream_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, K) losses of the swarm's runs before their first step and after their last, row i the run on domain i."""
        initial = self.context.upstream_heldout_initial
        names = [str(Stage(kind="swarm", replica=i)) for i in range(len(self.context.domains))]
        missing = [n for n in names if n not in self.context.upstream_heldout]
        unmeasured = [n for n in names if n not in initial and n not in missing]
        if unmeasured:
            raise TrainingError(f"skillit's graph needs each one-domain run's held-out loss before its first step (a "
                                f"step-0 row in its val.csv), which {unmeasured} lack: retrain them (remove those "
                                f"run folders and run the workflow again)")
        if missing:
            raise TrainingError(f"skillit's final run builds its graph from every one-domain run; missing the held-out "
                                f"losses of {missing}: pass --upstream swarm-I=DIR for every run")
        return (np.stack([initial[n] for n in names]), np.stack([self.context.upstream_heldout[n] for n in names]))

    def initial_weights(self) -> np.ndarray:
        k = len(self.context.domains)
        if not self.in_final():  # swarm-i: domain i alone
            replica = self.context.replica
            if not 0 <= replica < k:
                raise TrainingError(f"skillit's swarm has one run per domain (0 … {k - 1}), not run {replica}")
            return np.eye(k)[replica]
        exponent = self.hparams["eta"] * self.skills_graph().sum(axis=1)  # p_1 ∝ exp(η Σ_j A_ij)
        return mixture_from_exponent(exponent, domains=self.context.domains, step=0)

    # -- schedule ---------------------------------------------------------------------------
    def round_starts(self, step: int) -> bool:
        """Step (t−1)T+1 starts round t; its loss is measured only if an update at tT < last step reads it."""
        every = self.hparams["update_every"]
        return self.in_final() and (step - 1) % every == 0 and step - 1 + every < self.context.total_steps

    def round_ends(self, step: int) -> bool:
        return self.in_final() and step % self.hparams["update_every"] == 0 and step < self.context.total_steps

    def needs_step_stats(self, step: int) -> bool:
        return self.round_starts(step) or self.round_ends(step)

    def signal_due(self, signal: str, step: int) -> bool:
        return signal == "heldout_loss" and self.round_starts(step)

    # -- update ---------------------------------------------------------------------------
    def update(self, stats: StepStats) -> np.ndarray | None:
        if self.round_starts(stats.step):
            self.observe(stats)
        if not self.round_ends(stats.step):
            return None
        if not len(self.window_losses):
            raise TrainingError(f"skillit at step {stats.step}: a round ends with no held-out loss measured")
        loss_window = self.window_losses.sum(axis=0)  # Σ_{τ=t−w+1}^{t} L(f_τ)
        exponent = self.hparams["eta"] * self.skills_graph() @ loss_window  # η Σ_j A_ij (…)_j
        mixture = mixture_from_exponent(exponent, domains=self.context.domains, step=stats.step)
        self.pending_trace.update(loss_window=loss_window.tolist(), exponent=exponent.tolist(),
                                  mixture=mixture.tolist())
        return mixture

    def observe(self, stats: StepStats) -> None:
        """L(f_t) at the first step of round t: the parameters before that step's update."""
        if "heldout_loss" not in stats.extra:
            raise TrainingError(f"skillit at step {stats.step}: stats.extra has no 'heldout_loss' (round start)")
        loss = np.asarray(stats.extra["heldout_loss"], dtype=np.float64)
        if loss.shape != (len(self.context.domains),) or not np.all(np.isfinite(loss)):
            raise TrainingError(f"skillit at step {stats.step}: heldout_loss must be finite, shape "
                                f"({len(self.context.domains)},); got {loss.tolist()}")
        self.window_losses = np.vstack([self.window_losses, loss])[-self.hparams["window"]:]
        self.rounds_started += 1
        self.pending_trace.update(round=self.rounds_started, heldout_loss=loss.tolist())

    def trace(self) -> dict[str, Any] | None:
        if not self.in_final():
            return None
        out, self.pending_trace = self.pending_trace, {}
        if not self.graph_traced:
            out["skills_graph"] = self.skills_graph().tolist()
            self.graph_traced = True
        return out or None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "window_losses": self.window_losses.copy(),
                "rounds_started": self.rounds_started, "graph_traced": self.graph_traced}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.window_losses = np.array(state["window_losses"], dtype=np.float64).reshape(-1, len(self.context.domains))
        self.rounds_started = int(state["rounds_started"])
        self.graph_traced = bool(state["graph_traced"])
