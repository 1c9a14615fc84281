"""DoGraph (Xu et al., ACL 2026 short, arXiv 2604.07963): gradient-defined domains and a
graph-constrained mixture schedule.

A RECONSTRUCTION: the paper's exact equations are not available to us. This implements one reading
of its stated formulation. The paper's thesis: human domain labels match the model's view of the
data only early in training; domains as the model perceives them are defined by gradients, because
the squared distance between two distributions' mean gradients is their squared MMD under the
gradient-induced kernel k(x, x') = ⟨∇ℓ(x), ∇ℓ(x')⟩; the domains are related in a graph, and the
mixture is updated online, at little cost, by a graph-constrained optimisation. Every
``update_every`` steps of the run (first after warmup, never at step 0 or the last step):

1. probe: sketched per-example gradient features φ(x) = sketch(∇_S ℓ(x)) of ``probe_per_domain``
   (m) train sequences per domain and of a fixed target batch from the val split, never test data
   (models/probe.py). S (``probe_params``, a regex; null: the last transformer block) must not take
   in the token embedding, which GPT-2 ties to ``lm_head`` (about 5× the memory of a block).
   Per-example features, not a batch gradient, because step 2 needs unbiased estimates;
2. graph: unbiased MMD² between domains, W_ij = exp(−MMD²_ij/σ²) with σ² the median off-diagonal
   MMD², L = D − W normalised to L̃ = L/λ_max(L), Louvain communities on the symmetrised kNN graph
   (on the dense graph Louvain almost always finds one community) (strategies/graph_mixing.py);
3. utility u_i = ⟨μ_i, μ_target⟩_U / mean_j ‖μ_j‖²_U (unbiased inner product; unlike a cosine it
   keeps the benefit a domain gets from its own share of the target, which a cosine takes away from
   outlier domains; ``utility: cosine``, bias-corrected, is the option), an EMA from the first
   reading, standardised u_z = (u − ū) / max(std u, z_floor);
4. α = argmax u_zᵀα − λ αᵀL̃α − (ρ/2)‖α − α_prev‖² on the simplex with α ≥ α_min (and optional
   community-mass bounds: each community C holds (1 ± δ)·|C|/K of the weight). Repeated solves are
   projected gradient ascent toward argmax u_zᵀα − λ αᵀL̃α: λ alone sets how far the mixture settles
   from uniform (λ = 0 ends at a vertex, hence the warning), ρ only the speed (about 1/ρ of the
   weight moves per update). A failed solve keeps the previous weights;
5. sample with α until the next update (log.csv's ``weight/<d>``). Every update is traced:
   ``alpha`` (the weights after it, the node areas of the dograph_graph figure), ``utility``,
   ``utility_ema``, ``utility_z``, ``affinity`` (W), ``mmd2``, ``communities``, ``solve_seconds``
   and ``solved``.

``mode: online`` (default) runs this in the single final run; ``mode: proxy`` runs it on a proxy
and hands on ᾱ, the mean of the weights over updates with the initial ones included.
A schedule with no update (no multiple of ``update_every`` after warmup and before the run's last
step) would train on uniform weights: the config check refuses it unless ``allow_static: true``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from strategies.base import Strategy, check_name_pattern, first_update_after
from strategies.graph_mixing import (MixtureQP, as_graph, gaussian_affinity, graph_laplacian, knn_communities,
                                     mmd2_matrix, standardise, utilities)


class DoGraph(Strategy):
    stages = ("final",)
    signals = frozenset({"example_gradient_features"})
    defaults = {"mode": "online", "update_every": 50, "probe_per_domain": 8, "target_per_domain": 4,
                "sketch_dim": 1024, "probe_params": None, "lam": 10.0, "rho": 30.0, "alpha_min_factor": 0.5,
                "ema": 0.8, "utility": "inner", "z_floor": 0.05, "knn": 3, "community_delta": None,
                "allow_static": False}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["mode"] not in ("online", "proxy") or h["utility"] not in ("inner", "cosine"):
            raise ConfigError("mode must be 'online' or 'proxy' and utility 'inner' or 'cosine'")
        if h["update_every"] < 1 or h["probe_per_domain"] < 2 or h["target_per_domain"] < 1 or h["sketch_dim"] < 1 \
                or h["knn"] < 1:  # knn 0: every domain its own community, pinned at 1/K by community_delta 0
            raise ConfigError("need update_every >= 1, probe_per_domain >= 2, target_per_domain >= 1, sketch_dim >= 1, "
                              "knn >= 1")
        if h["knn"] > len(domains) - 1:  # a domain has K - 1 others to be a neighbour of
            raise ConfigError(f"knn {h['knn']} asks for {h['knn']} neighbours of each domain, but {len(domains)} domains "
                              f"give each at most {len(domains) - 1}: set knn <= {len(domains) - 1}")
        if h["rho"] < 0 or h["lam"] < 0 or not 0 <= h["alpha_min_factor"] < 1 or not 0 <= h["ema"] < 1:
            raise ConfigError("need lam >= 0, rho >= 0, 0 <= alpha_min_factor < 1 and 0 <= ema < 1")
        delta = h["community_delta"]
        if delta is not None and (isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta < float("inf")):
            raise ConfigError(f"community_delta must be null (no community constraint) or a finite number >= 0, "
                              f"got {delta!r}")
        check_name_pattern("probe_params", h["probe_params"], "the last transformer block")
        if h["lam"] == 0:
            warnings.warn("dograph: lam = 0 has no graph term, so the schedule ends at a vertex of the simplex")

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """The run that adapts (the final one online, the proxy in proxy mode) updates at the multiples
        of update_every in (warmup, steps): with none there it trains on uniform weights throughout."""
        if stage != ("proxy" if hparams["mode"] == "proxy" else "final"):
            return None
        every, first, last = hparams["update_every"], warmup_steps + 1, steps - 1
        if first_update_after(warmup_steps, every) <= last:
            return None
        where = (f"no multiple of update_every {every} falls in steps {first}-{last} (after the "
                 f"{warmup_steps} warmup steps, before the last step), so it never updates and trains on "
                 f"uniform weights")
        if first > last:
            return f"{where}; no update_every can: lengthen the run or shorten training.warmup_steps"
        suggestion = max(1, (last - warmup_steps) // 4)  # a few updates in the window
        return f"{where}; use an update_every with a multiple in {first}-{last}, e.g. {suggestion}"

    @classmethod
    def stages_for(cls, hparams: dict[str, Any]) -> tuple[str, ...]:
        return ("proxy", "final") if hparams.get("mode", "online") == "proxy" else ("final",)

    def __init__(self, context, **hparams):
        super().__init__(context, **hparams)
        k = len(context.domains)
        self.active = context.stage == ("proxy" if self.hparams["mode"] == "proxy" else "final")
        self.alpha = np.full(k, 1.0 / k)
        self.utility_ema: np.ndarray | None = None
        self.update_sum, self.update_count = self.alpha.copy(), 1  # ᾱ counts the initial weights
        self.last_record: dict[str, Any] | None = None
        self._qp = None
        if self.active and self.hparams["lam"] == 0:
            print("warning: dograph lam = 0: the schedule will end at a vertex", file=sys.stderr)

    def initial_weights(self) -> np.ndarray:
        if not self.active:  # the static final run of proxy mode
            return self.context.upstream_weights["proxy"]
        return self.alpha

    def required_signals(self) -> frozenset[str]:
        return self.signals if self.active else frozenset()

    def signal_due(self, signal: str, step: int) -> bool:
        """Update after step s when s is a multiple of update_every, after warmup, before the end."""
        every = self.hparams["update_every"]
        return self.active and step % every == 0 and step > self.context.warmup_steps \
            and step < self.context.total_steps

    def needs_step_stats(self, step: int) -> bool:
        return self.signal_due("example_gradient_features", step)  # update reads only the probe

    def signal_options(self) -> dict[str, dict[str, Any]]:
        h = self.hparams
        return {"example_gradient_features": {"params": h["probe_params"], "sketch_dim": h["sketch_dim"],
                                              "per_domain": h["probe_per_domain"],
                                              "target_per_domain": h["target_per_domain"]}}

    def _solver(self) -> MixtureQP:
        if self._qp is None:
            k = len(self.context.domains)
            h = self.hparams
            self._qp = MixtureQP(k, h["lam"], h["rho"], h["alpha_min_factor"] / k, h["community_delta"])
        return self._qp

    def update(self, stats) -> np.ndarray | None:
        probe = stats.extra.get("example_gradient_features")
        if not self.active or probe is None:
            return None
        features, target = probe["domains"], probe["target"]
        mmd2 = mmd2_matrix(features)
        affinity = gaussian_affinity(mmd2)
        self.graph = as_graph(affinity, list(self.context.domains))  # the model-perceived domain graph
        laplacian = graph_laplacian(self.graph)
        communities = knn_communities(mmd2, self.hparams["knn"], self.context.seed)
        u = utilities(features, target, self.hparams["utility"])
        ema = self.hparams["ema"]
        self.utility_ema = u if self.utility_ema is None else ema * self.utility_ema + (1 - ema) * u
        u_z = standardise(self.utility_ema, self.hparams["z_floor"])
        alpha, seconds = self._solver().solve(u_z, laplacian, self.alpha, communities)
        solved = alpha is not None
        if solved:
            self.alpha = alpha
        self.update_sum += self.alpha
        self.update_count += 1
        self.last_record = {"alpha": self.alpha, "utility": u, "utility_ema": self.utility_ema, "utility_z": u_z,
                            "affinity": affinity, "mmd2": mmd2, "communities": communities,
                            "solve_seconds": seconds, "solved": solved}
        return self.alpha

    def trace(self) -> dict[str, Any] | None:
        record, self.last_record = self.last_record, None
        return record

    def final_weights(self) -> np.ndarray:
        if self.active and self.hparams["mode"] == "proxy":
            return self.update_sum / self.update_count
        return super().final_weights()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": self.alpha.copy(), "utility_ema": self.utility_ema,
                "update_sum": self.update_sum.copy(), "update_count": self.update_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.alpha, self.utility_ema = np.array(state["alpha"]), state["utility_ema"]
        self.update_sum, self.update_count = np.array(state["update_sum"]), int(state["update_count"])
