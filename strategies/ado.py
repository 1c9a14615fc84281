"""ADO, Adaptive Data Optimization (Jiang et al., 2024, arXiv 2410.11820): online and proxy-free. Each
domain's training loss is fitted, as training goes, with a power law in the data seen, and the
mixture favours the domains whose law predicts the fastest fall of their loss.

As the authors' code computes it (yidingjiang/ado, ``src/data_selectors/ado.py``, class
``AdoSelector``, which ``src/dataloader/adaptive_loader.py`` calls after every step; the mixtera
port, eth-easl/mixtera ``mixtera/core/algo/ado/ado.py``, was read alongside). With t = step − 1
(the authors count steps from 0) and K domains:

Per domain k, a law in n, the data seen, with parameters (a_k, e_k, α_k):

    L̂_k(n) = ε_k + β_k n^(−α_k),   β_k = exp(a_k), ε_k = exp(e_k)

fitted in log space at every t ≥ ``start_step`` that is a multiple of ``fit_every``:

    min  Σ_j huber_δ(log ℓ̃_k,j − logsumexp(a − α log n_j, e))           δ = 1e-3
         + max(α − 0.8, 0) − min(α, 0.001) + max(a − 6.5, 0) − min(e − 0.5, 0)

where ℓ̃_k is domain k's per-step training loss smoothed by a Savitzky–Golay filter (window
``savgol_window`` 101, order 3, over the whole history) and j runs over the steps from
``ignore_steps`` on, every ``subsample``-th (10); n_j is the data seen up to step j. The authors run
L-BFGS (jaxopt; tol 1e-5 on the gradient's norm, at most 200 iterations) from each of a grid of
8 × 8 × 8 = 512 starts (a ∈ {−2, …, 5}, e ∈ {−2, −1.5, …, 1.5}, α ∈ {0, 0.1, …, 0.7}) and keep the
lowest objective; a fit with a non-finite parameter is discarded (the previous one stays). The
data seen counts as their ``use_same_step_size`` does: every domain's n grows by the whole step's
data at every step, so n is the same for all domains, here in units of ``tokens_per_count`` tokens
(1024: the authors count sequences of 1024 tokens, the unit their bounds on a and e were set in).
A domain absent from a step is given its loss of the step before (at the first step, the step's
mean loss).

After every step from the first fit on, with n the data seen so far, μ the prior (the natural
mixture: the authors' ``mode: empirical``, ``prior: uniform`` their other mode) and h the credit
history:

    h ← (1 − γ₁) h + γ₁ c                      c: the step's share of tokens per domain; h₀ = μ
    r_k = max(α_k, 0.05) (L̂_k(n) − ε_k) / n    the predicted rate of loss reduction, −dL̂_k/dn
    ρ_k ∝ r_k μ_k λ_k,  λ_k = (h_k (1 − h_k))^s  rate × prior × credit
    ρ ← max(ρ, δ_min) / Σ max(ρ, δ_min)         the authors' clip_min_probability
    π = (1 − γ₂) π̄ + γ₂ ρ                      the next step's mixture
    π̄ ← (1 − 1/(t + 1)) π̄ + ρ / (t + 1)         the running mean of ρ, from the prior: π̄₀ = μ

with γ₁ = γ₂ = 0.1 (the code's 0.9 moving averages), s = 0.5, δ_min = 0.01: the paper's Algorithm 1
takes the same γ₁, γ₂, s, δ_min, a prior, an update interval (``fit_every``) and a warmup (the code's
``start_step`` and ``ignore_steps``). h is updated at every step, before the first fit as well.
The defaults are the authors' runs (``configs/loader/pile_ado.yaml`` and
``configs/experiment/*_ado.yaml``: ignore_steps 1000, start_step 500; AdoSelector's
update_interval 1000): the first fit is at t = 1000 (after step 1001), on the one point j = 1000.
A run that ends before its first fit has ADO never act; the config check refuses it unless
``allow_static: true``.

Where this differs from the authors' code, and why:

- The fit minimises the authors' objective from the authors' grid within their limits, by an
  L-BFGS of its own (numpy, float64, all starts at once; history 10, a backtracking Armijo line
  search) instead of jaxopt's (float32, zoom line search): where the objective is flat the
  optimum found may differ. And L-BFGS runs from the ``fit_starts`` (16) grid points of lowest
  objective, not from all 512: on the 2-core development CPU, 7 domains, the full grid took 0.6 s
  a fit at 10 points and 4.5-19 s at 100-500 (the authors vmap it on TPUs), 16 starts 0.07-0.4 s
  there and 1-1.3 s at 1,900 points (a 20,000-step run's last fit); on noisy synthetic curves
  their best objective came within 4e-5 of the full grid's (2e-6 from 100 points on).
  ``fit_starts: 512`` runs the full grid.
- A fit is made only once there is a point to fit (t ≥ ignore_steps); the authors' code would fit
  the penalties alone. While the history is shorter than ``savgol_window`` the filter's window
  shrinks to the longest odd one it holds (the mixtera port's rule; the authors' code raises).
- The history is compact: the points fitted, each kept once the filter can no longer change it
  (half a window before the newest step), and the raw losses of the last ~fit_every + window steps,
  where the authors keep every step's losses and filter them all again at each fit. The points are
  the same, bit for bit (the filter's value at a point reads only the window around it).
- A degenerate preference (Σ ρ not positive and finite, e.g. one domain left with h = 1) leaves the
  mixture as it is for that step.
- The mixtera port differs from both: its credit is h_k^s with h the moving average of π, it clips
  π rather than ρ, and it fits with scipy's L-BFGS-B and a mean (not sum) of Huber terms.

ADO needs every step's losses before the next step (``needs_step_stats``), as DoReMi's proxy does.
Its own cost, measured on the 2-core development CPU: 25-100 µs a step, and a fit every fit_every
steps. At the defaults, 7 domains and 256 × 1024 tokens a step (the paper grid's), the fits of a
20,000-step run took 0.16-1.6 s each, 0.84 ms a step on average: under 1% of any step longer than
84 ms (a GPT-2 small step of 262k tokens is 0.65 s at the 400k tokens/s docs/performance.md aims at
on an H100). On a 0.5M-parameter model at 8 × 128 tokens (77 ms a step in the real loop, 6 domains)
a fit costs about two steps: 160 steps with fits every 40 spent 2.9% of the run in ADO, with one fit
1.1%.

Trace, per step: ``credit_history`` (h); from the first fit on ``rho`` (ρ after the clip) and
``credit`` (λ); at a fit step ``fit``: its ``step``, ``points``, whether ``accepted`` and ``laws``,
per domain ``log_beta``, ``log_epsilon``, ``alpha`` and ``objective`` (null when not accepted).
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections import deque
from typing import Any

import numpy as np

from mixbench.errors import ConfigError, TrainingError
from strategies.base import StepStats, Strategy, check_named_mixture, named_mixture
from strategies.power_law_fit import GRID_SIZE, fit_power_laws

MIN_EXPONENT = 0.05         # "arbitrarily bound exponent to be >= 0.05" in the rate of loss reduction
SAVGOL_ORDER = 3            # savgol_filter(..., 101, 3): the polynomial order


def clip_min_probability(probs: np.ndarray, min_prob: float) -> np.ndarray:
    """The authors' clip_min_probability: every entry at least ``min_prob``, then renormalised."""
    total_deficit = max(min_prob * len(probs) - probs.sum(), 0)
    scaled = probs * ((1 - total_deficit) / probs.sum())
    clipped = np.maximum(scaled, min_prob)
    return clipped / clipped.sum()


def predicted_rates(params: np.ndarray, seen: float) -> np.ndarray:
    """max(α, 0.05) (L̂(n) − ε) / n for each domain's law at n = ``seen``: the predicted rate at which
    its loss falls with more data, −dL̂/dn (with the exponent's floor the authors apply there)."""
    a, e, alpha = params[:, 0], params[:, 1], params[:, 2]
    current = np.exp(e) + np.exp(a) / seen ** alpha  # the authors' scaling_law
    return np.maximum(alpha, MIN_EXPONENT) * (current - np.exp(e)) / seen


class ADO(Strategy):
    defaults = {"ignore_steps": 1000, "start_step": 500, "fit_every": 1000, "subsample": 10, "savgol_window": 101,
                "tokens_per_count": 1024.0, "gamma1": 0.1, "gamma2": 0.1, "s": 0.5, "delta_min": 0.01,
                "prior": "natural", "fit_starts": 16, "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["ignore_steps"] < 0 or h["start_step"] < 0 or h["fit_every"] < 1 or h["subsample"] < 1:
            raise ConfigError(f"need ignore_steps >= 0, start_step >= 0, fit_every >= 1 and subsample >= 1; got "
                              f"{h['ignore_steps']}, {h['start_step']}, {h['fit_every']}, {h['subsample']}")
        if h["savgol_window"] <= SAVGOL_ORDER + 1 or h["savgol_window"] % 2 == 0:
            raise ConfigError(f"savgol_window must be odd and > {SAVGOL_ORDER + 1} (the filter's order is "
                              f"{SAVGOL_ORDER}), got {h['savgol_window']}")
        if not 0 < h["tokens_per_count"] < float("inf"):
            raise ConfigError(f"tokens_per_count must be a finite number > 0, got {h['tokens_per_count']}")
        if not (0 < h["gamma1"] <= 1 and 0 < h["gamma2"] <= 1 and 0 <= h["s"] < float("inf")):
            raise ConfigError(f"need 0 < gamma1 <= 1, 0 < gamma2 <= 1 and a finite s >= 0; got {h['gamma1']}, "
                              f"{h['gamma2']}, {h['s']}")
        if len(domains) < 2:
            raise ConfigError(f"ado mixes domains: it needs >= 2, got {domains}")
        if not 0 <= h["delta_min"] <= 1 / len(domains):
            raise ConfigError(f"delta_min must be in [0, 1/K] = [0, {1 / len(domains):.4g}] for {len(domains)} "
                              f"domains, got {h['delta_min']}")
        check_named_mixture("prior", h["prior"])
        if not 1 <= h["fit_starts"] <= GRID_SIZE:
            raise ConfigError(f"fit_starts must be in [1, {GRID_SIZE}] (the authors' grid), got {h['fit_starts']}")

    @staticmethod
    def first_fit(hparams: dict[str, Any]) -> int:
        """The (1-based) step after which ADO first fits and updates: the first t = step − 1 that is a
        multiple of fit_every, at least start_step and at least ignore_steps (a point to fit)."""
        every = hparams["fit_every"]
        return math.ceil(max(hparams["start_step"], hparams["ignore_steps"]) / every) * every + 1

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """ADO acts from its first fit on; a first fit at or after the run's last step never acts."""
        first = cls.first_fit(hparams)
        if first <= steps - 1:
            return None
        return (f"its first fit comes after step {first} (the first step t + 1 with t a multiple of fit_every "
                f"{hparams['fit_every']}, t >= start_step {hparams['start_step']} and t >= ignore_steps "
                f"{hparams['ignore_steps']}), not before the run's last step {steps}, so it never updates; lower "
                f"start_step, ignore_steps or fit_every")

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        importlib.import_module("scipy.signal")  # the fit's filter (~0.4 s): loaded with the run, not in a step

        self.prior = named_mixture("prior", self.hparams["prior"], context)
        self.pi = self.prior.copy()
        self.pi_bar = self.prior.copy()
        self.history = self.prior.copy()  # h, the credit history
        self.params: np.ndarray | None = None
        self.steps_seen = 0
        self.seen = 0.0                   # n: the data seen, in tokens_per_count units
        # The compact loss history: raw rows from ``tail_start`` on, the finished fit points before ``next_point``.
        self.tail_losses: deque[np.ndarray] = deque()
        self.tail_seen: deque[float] = deque()
        self.tail_start = 0
        self.next_point = self.hparams["ignore_steps"]
        self.point_seen: list[float] = []
        self.point_losses: list[np.ndarray] = []
        self.rho: np.ndarray | None = None
        self.credit: np.ndarray | None = None
        self.fit_record: dict[str, Any] | None = None

    def initial_weights(self) -> np.ndarray:
        return self.prior.copy()

    def needs_step_stats(self, step: int) -> bool:
        return True

    # -- the history ----------------------------------------------------------------------------
    def _record(self, stats: StepStats) -> None:
        tokens = np.asarray(stats.domain_tokens, dtype=np.float64)
        loss = np.asarray(stats.domain_loss, dtype=np.float64)
        present = (tokens > 0) & np.isfinite(loss)
        total = tokens.sum()
        if total <= 0 or not present.any():
            raise TrainingError(f"ado: step {stats.step} has no tokens with a finite loss")
        self.seen += total / self.hparams["tokens_per_count"]
        self.history = (1 - self.hparams["gamma1"]) * self.history + self.hparams["gamma1"] * (tokens / total)
        if self.tail_losses:
            fill = self.tail_losses[-1]
        else:  # the first step: the step's mean loss
            fill = np.full(len(loss), (tokens[present] * loss[present]).sum() / tokens[present].sum())
        self.tail_losses.append(np.where(present, loss, fill))
        self.tail_seen.append(self.seen)
        self.steps_seen += 1
        self._trim()

    def _trim(self) -> None:
        """Drop raw rows no later fit can need: one stays while a point at or after ``next_point`` may
        read it through the filter's window, or the filter's last window may hold it."""
        half = self.hparams["savgol_window"] // 2
        keep_from = max(0, min(self.next_point - half, self.steps_seen - self.hparams["savgol_window"]))
        while self.tail_start < keep_from:
            self.tail_losses.popleft()
            self.tail_seen.popleft()
            self.tail_start += 1

    def fit_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The points the authors' code would fit now: the data seen and the smoothed losses (K, M) at
        steps ignore_steps, ignore_steps + subsample, …; the ones the filter can no longer change are
        kept, and the raw rows before them dropped."""
        from scipy.signal import savgol_filter

        window, every = self.hparams["savgol_window"], self.hparams["subsample"]
        half, last = window // 2, self.steps_seen - 1
        raw, tail_seen = np.array(self.tail_losses), np.array(self.tail_seen)
        # The authors' window, or while the history is shorter the longest odd one it holds.
        width = min(window, self.steps_seen - (1 - self.steps_seen % 2))
        smooth = savgol_filter(raw, width, SAVGOL_ORDER, axis=0) if width > SAVGOL_ORDER else raw
        fresh_seen, fresh_losses = [], []
        for point in range(self.next_point, last + 1, every):
            if width == window and point <= last - half:  # final: its whole window is in the history
                self.point_seen.append(float(tail_seen[point - self.tail_start]))
                self.point_losses.append(smooth[point - self.tail_start])
                self.next_point = point + every
            else:
                fresh_seen.append(float(tail_seen[point - self.tail_start]))
                fresh_losses.append(smooth[point - self.tail_start])
        self._trim()
        seen = np.array(self.point_seen + fresh_seen, dtype=np.float64)
        losses = np.array(self.point_losses + fresh_losses, dtype=np.float64).reshape(len(seen), len(self.prior))
        return seen, losses.T

    # -- the update -----------------------------------------------------------------------------
    def update(self, stats: StepStats) -> np.ndarray | None:
        self._record(stats)
        t, h = stats.step - 1, self.hparams
        self.fit_record = None
        if t >= h["start_step"] and t % h["fit_every"] == 0 and t >= h["ignore_steps"]:
            self._fit(stats.step)
        if t < h["start_step"] or self.params is None:
            return None
        rates = predicted_rates(self.params, self.seen)
        credit = (self.history * (1 - self.history)) ** h["s"]
        weighted = rates * self.prior * credit
        total = weighted.sum()
        if not (np.isfinite(total) and total > 0):
            warnings.warn(f"ado at step {stats.step}: the preference ρ ∝ rate × prior × credit sums to {total!r} "
                          f"(rates {np.round(rates, 6).tolist()}, credit {np.round(credit, 6).tolist()}): the "
                          f"mixture stays {np.round(self.pi, 6).tolist()} this step", stacklevel=2)
            self.credit = self.rho = None  # the trace shows no update for this step
            return None
        self.credit = credit
        self.rho = clip_min_probability(weighted / total, h["delta_min"])
        self.pi = (1 - h["gamma2"]) * self.pi_bar + h["gamma2"] * self.rho
        self.pi_bar = (1 - 1 / (t + 1)) * self.pi_bar + 1 / (t + 1) * self.rho
        return self.pi.copy()

    def _fit(self, step: int) -> None:
        seen, losses = self.fit_points()
        params, objective = fit_power_laws(seen, losses, self.hparams["fit_starts"])
        valid = bool(np.all(np.isfinite(params)))
        if valid:
            self.params = params
        self.fit_record = {"step": step, "points": len(seen), "accepted": valid, "laws": {
            d: {"log_beta": float(p[0]), "log_epsilon": float(p[1]), "alpha": float(p[2]), "objective": float(o)}
            for d, p, o in zip(self.context.domains, params, objective)} if valid else None}

    def trace(self) -> dict[str, Any] | None:
        return {"credit_history": self.history.tolist(),
                "rho": None if self.rho is None else self.rho.tolist(),
                "credit": None if self.credit is None else self.credit.tolist(),
                "fit": self.fit_record}

    def state_dict(self) -> dict[str, Any]:
        k = len(self.prior)
        return {**super().state_dict(), "pi": self.pi.copy(), "pi_bar": self.pi_bar.copy(),
                "history": self.history.copy(), "params": None if self.params is None else self.params.copy(),
                "steps_seen": self.steps_seen, "seen": self.seen,
                "tail_losses": np.array(self.tail_losses, dtype=np.float64).reshape(-1, k),
                "tail_seen": np.array(self.tail_seen, dtype=np.float64), "tail_start": self.tail_start,
                "next_point": self.next_point, "point_seen": np.array(self.point_seen, dtype=np.float64),
                "point_losses": np.array(self.point_losses, dtype=np.float64).reshape(-1, k),
                "rho": None if self.rho is None else self.rho.copy(),
                "credit": None if self.credit is None else self.credit.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)

        def array(key):
            return None if state[key] is None else np.asarray(state[key], dtype=np.float64).copy()

        self.pi, self.pi_bar, self.history = array("pi"), array("pi_bar"), array("history")
        self.params, self.rho, self.credit = array("params"), array("rho"), array("credit")
        self.steps_seen, self.seen = int(state["steps_seen"]), float(state["seen"])
        self.tail_losses = deque(row.copy() for row in np.asarray(state["tail_losses"], dtype=np.float64))
        self.tail_seen = deque(float(v) for v in np.asarray(state["tail_seen"], dtype=np.float64))
        self.tail_start, self.next_point = int(state["tail_start"]), int(state["next_point"])
        self.point_seen = [float(v) for v in np.asarray(state["point_seen"], dtype=np.float64)]
        self.point_losses = [row.copy() for row in np.asarray(state["point_losses"], dtype=np.float64)]
        self.fit_record = None
