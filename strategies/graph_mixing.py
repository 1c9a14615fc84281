"""The graph machinery of DoGraph (Xu et al., ACL 2026, arXiv 2604.07963), as strategies/dograph.py reads it.

The paper's exact equations are not available; this is a reconstruction from its stated
formulation: model-perceived domains are defined by gradients, since the squared distance of two
distributions' mean gradients is their squared MMD under the kernel k(x, x') = ⟨∇ℓ(x), ∇ℓ(x')⟩,
and the mixture is the solution of a graph-constrained optimisation. Everything here works on
sketched per-example gradient features φ (one array of shape (m, d) per domain).

cvxpy and networkx are imported inside the functions that need them: strategy modules must load
fast, because the workflow reads strategies' stage declarations while it is parsed.
"""

from __future__ import annotations

import time
import warnings

import numpy as np


def unbiased_sq_norms(features: list[np.ndarray]) -> np.ndarray:
    """‖μ_i‖²_U = (m² ‖μ̂_i‖² − Σ_a ‖φ_a‖²) / (m (m − 1)): the U-statistic mean of ⟨φ_a, φ_b⟩, a ≠ b.
    The plain ‖μ̂_i‖² = ‖μ_i‖² + tr Σ_i / m in expectation (Σ_i the covariance of one domain's
    features, m its probe sequences): the naive ‖μ̂_i − μ̂_j‖² adds tr Σ_i/m + tr Σ_j/m of noise to
    MMD²_ij, measured at 20–54% of the estimate at m = 16 on the prototype's 7 domains."""
    out = []
    for phi in features:
        m = len(phi)
        mean = phi.mean(axis=0)
        out.append((m * m * mean @ mean - np.einsum("ad,ad->", phi, phi)) / (m * (m - 1)))
    return np.array(out)


def mmd2_matrix(features: list[np.ndarray]) -> np.ndarray:
    """Unbiased MMD²_ij = ‖μ_i‖²_U + ‖μ_j‖²_U − 2 μ̂_i·μ̂_j (independent samples: the cross term is
    already unbiased), clamped at 0; zero diagonal."""
    sq = unbiased_sq_norms(features)
    means = np.stack([phi.mean(axis=0) for phi in features])
    mmd2 = np.maximum(sq[:, None] + sq[None, :] - 2 * means @ means.T, 0.0)
    np.fill_diagonal(mmd2, 0.0)
    return mmd2


def gaussian_affinity(mmd2: np.ndarray) -> np.ndarray:
    """W_ij = exp(−MMD²_ij / σ²), σ² the median off-diagonal MMD² (median heuristic)."""
    off = mmd2[~np.eye(len(mmd2), dtype=bool)]
    sigma2 = float(np.median(off))
    if sigma2 <= 0:
        sigma2 = 1.0  # every pair indistinguishable: all edges weigh 1
    affinity = np.exp(-mmd2 / sigma2)
    np.fill_diagonal(affinity, 0.0)
    return affinity


def normalised_laplacian(affinity: np.ndarray) -> np.ndarray:
    """L̃ = (D − W) / λ_max(D − W); zero when the graph has no edges."""
    return _scaled(np.diag(affinity.sum(axis=1)) - affinity)


def graph_laplacian(graph) -> np.ndarray:
    """L̃ of a weighted networkx graph, nodes in insertion order."""
    import networkx as nx

    return _scaled(nx.laplacian_matrix(graph, nodelist=list(graph.nodes), weight="weight").toarray().astype(float))


def _scaled(laplacian: np.ndarray) -> np.ndarray:
    top = float(np.linalg.eigvalsh(laplacian)[-1])
    return laplacian / top if top > 1e-12 else laplacian


def as_graph(affinity: np.ndarray, names: list[str]):
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(names)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            graph.add_edge(names[i], names[j], weight=float(affinity[i, j]))
    return graph


def knn_communities(mmd2: np.ndarray, k: int, seed: int) -> list[list[int]]:
    """Louvain on the symmetrised k-nearest-neighbour graph (on the dense graph Louvain almost
    always finds a single community). Returns sorted lists of domain indices."""
    import networkx as nx

    n = len(mmd2)
    if not 1 <= k <= n - 1:
        raise ValueError(f"knn {k}: each of {n} domains has 1 to {n - 1} neighbours to keep")
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for i in range(n):
        order = [j for j in np.argsort(mmd2[i], kind="stable") if j != i][:k]
        graph.add_edges_from((i, int(j)) for j in order)  # i→j or j→i: an undirected edge
    found = nx.community.louvain_communities(graph, seed=seed)
    return sorted(sorted(c) for c in found)


def utilities(features: list[np.ndarray], target: np.ndarray, kind: str = "inner") -> np.ndarray:
    """u_i = ⟨μ_i, μ_target⟩ / mean_j ‖μ_j‖²_U (``inner``, unbiased: independent samples), or the
    bias-corrected cosine ⟨μ_i, μ_t⟩ / √(‖μ_i‖²_U ‖μ_t‖²_U) (``cosine``)."""
    means = np.stack([phi.mean(axis=0) for phi in features])
    inner = means @ target.mean(axis=0)
    sq = unbiased_sq_norms(features)
    if kind == "cosine":
        target_sq = unbiased_sq_norms([target])[0]
        return inner / np.sqrt(np.maximum(sq, 1e-12) * max(target_sq, 1e-12))
    return inner / max(float(np.mean(sq)), 1e-12)


def standardise(u: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """u_z = (u − ū) / max(std u, floor): the floor stops noise from being blown up."""
    return (u - u.mean()) / max(float(u.std()), floor)


class MixtureQP:
    """maximise u_zᵀα − λ αᵀL̃α − (ρ/2)‖α − α_prev‖²  s.t.  Σα = 1, α ≥ α_min
    (and, with ``community_delta`` δ, each community's mass within (1 ± δ)|C|/K).

    Built once with cvxpy Parameters, so every re-solve stays DPP (~ms). αᵀL̃α is written as
    ‖B α‖² with B = Λ^½ Vᵀ from L̃'s eigendecomposition, keeping the problem DPP. Repeated solves
    are projected gradient ascent towards argmax u_zᵀα − λ αᵀL̃α: λ alone sets how far the
    mixture settles from uniform, ρ only the speed.

    Every solve starts from the same point (OSQP, no warm start from the previous solve): the
    answer is a function of (u_z, L̃, α_prev, communities) alone, all of which the strategy
    checkpoints, so a resumed run's α is bit-identical to an uninterrupted one's. A warm start
    carried inside the solver would differ after a resume (by ~1e−16) and save well under a
    millisecond at this size.
    """

    def __init__(self, k: int, lam: float, rho: float, alpha_min: float, community_delta: float | None):
        import cvxpy as cp

        self.num_domains = k
        self.alpha = cp.Variable(k)
        self.utility = cp.Parameter(k)
        self.laplacian_root = cp.Parameter((k, k))
        self.previous = cp.Parameter(k)
        objective = self.utility @ self.alpha - lam * cp.sum_squares(self.laplacian_root @ self.alpha) \
            - (rho / 2) * cp.sum_squares(self.alpha - self.previous)
        constraints = [cp.sum(self.alpha) == 1, self.alpha >= alpha_min]
        self.membership = self.lower = self.upper = None
        if community_delta is not None:
            # One row per possible community; unused rows get bounds that cannot bind.
            self.membership = cp.Parameter((k, k), nonneg=True)
            self.lower, self.upper = cp.Parameter(k), cp.Parameter(k)
            constraints += [self.membership @ self.alpha >= self.lower, self.membership @ self.alpha <= self.upper]
        self.delta = community_delta
        self.problem = cp.Problem(cp.Maximize(objective), constraints)
        assert self.problem.is_dpp()

    def solve(self, u_z: np.ndarray, laplacian: np.ndarray, previous: np.ndarray,
              communities: list[list[int]] | None = None) -> tuple[np.ndarray | None, float]:
        """The new mixture (None if the solver failed) and the solve time in seconds."""
        eigenvalues, vectors = np.linalg.eigh((laplacian + laplacian.T) / 2)
        self.utility.value = u_z
        # L̃ = BᵀB with B = √Λ Vᵀ, so λ αᵀL̃α is the DPP-compliant λ‖Bα‖². L̃ is positive
        # semidefinite (non-negative affinities): an eigenvalue below zero is round-off, set to 0.
        if eigenvalues[0] < -1e-9 * max(1.0, float(np.abs(eigenvalues).max())):
            raise ValueError(f"the Laplacian is not positive semidefinite: smallest eigenvalue {eigenvalues[0]:.3g}")
        self.laplacian_root.value = np.sqrt(np.clip(eigenvalues, 0, None))[:, None] * vectors.T
        self.previous.value = previous
        if self.membership is not None:
            membership, lower, upper = np.zeros((self.num_domains, self.num_domains)), np.full(self.num_domains, -1.0), np.full(self.num_domains, 2.0)
            for row, community in enumerate(communities or []):
                membership[row, community] = 1.0
                share = len(community) / self.num_domains
                lower[row], upper[row] = (1 - self.delta) * share, (1 + self.delta) * share
            self.membership.value, self.lower.value, self.upper.value = membership, lower, upper
        started = time.perf_counter()
        try:
            self.problem.solve(solver="OSQP", warm_start=False)
        except Exception as exc:  # cvxpy raises SolverError and others; the caller keeps the old weights
            warnings.warn(f"mixture QP failed ({exc.__class__.__name__}: {exc}); keeping the previous weights")
            return None, time.perf_counter() - started
        seconds = time.perf_counter() - started
        if self.problem.status not in ("optimal", "optimal_inaccurate") or self.alpha.value is None:
            warnings.warn(f"mixture QP ended {self.problem.status!r}; keeping the previous weights")
            return None, seconds
        alpha = np.clip(np.asarray(self.alpha.value, dtype=np.float64), 0, None)
        return alpha / alpha.sum(), seconds
