"""The power-law fit behind ADO (strategies/ado.py): L̂(n) = ε + β n^(−α) to a domain's training
losses, as the authors' code fits it (yidingjiang/ado, ``src/data_selectors/ado.py``, function
``loss_fn`` and the jaxopt L-BFGS from a grid of starts), in numpy.

In log space, with θ = (a, e, α), β = exp(a), ε = exp(e), n_j the data seen at point j:

    min_θ  Σ_j huber_δ(log ℓ_j − logsumexp(a − α log n_j, e))                 δ = 1e-3
           + max(α − 0.8, 0) − min(α, 0.001) + max(a − 6.5, 0) − min(e − 0.5, 0)

from the authors' grid of 8 × 8 × 8 = 512 starts (a ∈ {−2, …, 5}, e ∈ {−2, −1.5, …, 1.5},
α ∈ {0, 0.1, …, 0.7}), keeping the lowest objective. L-BFGS here is a batched one (every start at
once; history 10, a backtracking Armijo line search, float64) where the authors use jaxopt's
(float32, zoom line search): the optimum found may differ where the objective is flat.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3          # the authors' huber_loss delta, on log losses
LBFGS_MAXITER = 200         # jaxopt.LBFGS(loss_fn, tol=1e-5, maxiter=200)
LBFGS_TOL = 1e-5
LBFGS_HISTORY = 10          # jaxopt's default history_size
ARMIJO = 1e-4               # sufficient decrease of the backtracking line search
MAX_HALVINGS = 30           # a start whose line search finds no decrease in this many halvings stops
HALVINGS_AT_ONCE = 6        # halvings tried in one batch after a first try fails, at least,
BATCH_ELEMENTS = 10_000     # or as many as keep the batch's (rows × halvings × points) under this


def start_grid() -> np.ndarray:
    """The authors' 512 starts (a, e, α), in their order: meshgrid(a, e, α, indexing='ij') flattened."""
    a, e, alpha = np.meshgrid(np.arange(-2, 6, 1.0), np.arange(-2, 2, 0.5), np.arange(0, 0.8, 0.1), indexing="ij")
    return np.stack([a.ravel(), e.ravel(), alpha.ravel()], axis=1)


GRID_SIZE = 512


def fit_objective(params: np.ndarray, log_counts: np.ndarray, log_losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' ``loss_fn`` and its gradient for P parameter rows (a, e, α), shape (P, 3), against
    log losses of shape (P, M) at log counts of shape (M,): returns (P,) values and (P, 3) gradients.
    At a kink of a penalty the gradient is JAX's (half of each side's)."""
    a, e, alpha = params[:, 0], params[:, 1], params[:, 2]
    d = (a - e)[:, None] - alpha[:, None] * log_counts[None, :]  # (a − α log n) − e
    tail = np.exp(-np.abs(d))
    pred = e[:, None] + np.maximum(d, 0.0) + np.log1p(tail)   # logsumexp(a − α log n, e)
    residual = pred - log_losses
    clipped = np.clip(residual, -HUBER_DELTA, HUBER_DELTA)     # the Huber loss's derivative
    huber = (clipped * (residual - 0.5 * clipped)).sum(axis=1)
    # The penalties max(α − 0.8, 0), −min(α, 0.001) = max(0.001 − α, 0) − 0.001, max(a − 6.5, 0) and
    # −min(e − 0.5, 0) = max(0.5 − e, 0).
    excess = np.stack([alpha - 0.8, 0.001 - alpha, a - 6.5, 0.5 - e], axis=1)
    value = huber + np.maximum(excess, 0.0).sum(axis=1) - 0.001
    kink = 0.5 * (np.sign(excess) + 1)  # the penalties' slopes: 1 past the bound, 0 inside, 0.5 on it (JAX's)
    inverse = 1.0 / (1.0 + tail)
    share = np.where(d >= 0, inverse, tail * inverse)         # ∂pred/∂a = sigmoid(d); ∂pred/∂e = 1 − that
    weighted = clipped * share
    on_a = weighted.sum(axis=1)
    grad = np.stack([on_a + kink[:, 2], clipped.sum(axis=1) - on_a - kink[:, 3],
                     kink[:, 0] - kink[:, 1] - (weighted * log_counts[None, :]).sum(axis=1)], axis=1)
    return value, grad


def lbfgs(start: np.ndarray, log_counts: np.ndarray, log_losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``fit_objective`` from each row of ``start`` (P, 3) against its row of ``log_losses``
    (P, M), all rows at once, each its own L-BFGS (history 10, backtracking Armijo line search from
    a unit step, the first step 1/‖g‖ at most); a row stops when ‖g‖ <= 1e-5, after 200 iterations,
    or when its line search finds no decrease. Returns the (P, 3) parameters and (P,) values."""
    x = np.array(start, dtype=np.float64)
    count, points = len(x), max(log_losses.shape[1], 1)
    value, grad = fit_objective(x, log_counts, log_losses)
    steps = np.zeros((count, LBFGS_HISTORY, 3))   # newest pair first
    changes = np.zeros((count, LBFGS_HISTORY, 3))
    inverse_curvature = np.zeros((count, LBFGS_HISTORY))
    pairs = np.zeros(count, dtype=np.int64)
    active = np.isfinite(value) & (np.linalg.norm(grad, axis=1) > LBFGS_TOL)
    for _ in range(LBFGS_MAXITER):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        g, held = grad[rows], pairs[rows]
        s, y, r = steps[rows], changes[rows], inverse_curvature[rows]
        q = g.copy()
        coefficients, top = np.zeros((rows.size, LBFGS_HISTORY)), int(held.max())
        for j in range(top):  # a pair not yet held is zeros: it changes nothing
            c = r[:, j] * np.einsum("ij,ij->i", s[:, j], q)
            coefficients[:, j] = c
            q -= c[:, None] * y[:, j]
        yy = np.einsum("ij,ij->i", y[:, 0], y[:, 0])
        q *= np.where(held > 0, np.einsum("ij,ij->i", s[:, 0], y[:, 0]) / np.where(yy > 0, yy, 1.0), 1.0)[:, None]
        for j in reversed(range(top)):
            q += (coefficients[:, j] - r[:, j] * np.einsum("ij,ij->i", y[:, j], q))[:, None] * s[:, j]
        direction = -q
        slope = (g * direction).sum(axis=1)
        uphill = ~(slope < 0)
        direction[uphill], slope[uphill] = -g[uphill], -(g[uphill] ** 2).sum(axis=1)
        size = np.where(held > 0, 1.0, np.minimum(1.0, 1.0 / np.linalg.norm(g, axis=1)))
        base, base_value = x[rows], value[rows]
        new_x, new_value, new_grad = base.copy(), base_value.copy(), g.copy()
        pending = np.ones(rows.size, dtype=bool)
        # Backtracking: the largest of t, t/2, t/4, … with sufficient decrease. After a first try the
        # next halvings of the rows still searching are tried together, a batch at a time (the same
        # choice as trying them one by one, in fewer calls: a start left alone runs all its halvings
        # in one).
        halvings = 0
        while halvings < MAX_HALVINGS:
            todo = np.flatnonzero(pending)
            if todo.size == 0:
                break
            tries = 1 if halvings == 0 else min(max(HALVINGS_AT_ONCE, BATCH_ELEMENTS // (todo.size * points)),
                                                MAX_HALVINGS - halvings)
            sizes = size[todo, None] * 0.5 ** np.arange(tries)[None, :]                     # (n, tries)
            trial = base[todo, None, :] + sizes[..., None] * direction[todo, None, :]        # (n, tries, 3)
            trial_value, trial_grad = fit_objective(trial.reshape(-1, 3), log_counts,
                                                    np.repeat(log_losses[rows[todo]], tries, axis=0))
            trial_value, trial_grad = trial_value.reshape(-1, tries), trial_grad.reshape(-1, tries, 3)
            ok = np.isfinite(trial_value) & (trial_value <= base_value[todo, None]
                                             + ARMIJO * sizes * slope[todo, None])
            found = ok.any(axis=1)
            first = np.argmax(ok, axis=1)
            done, pick = todo[found], first[found]
            new_x[done] = trial[found, pick]
            new_value[done], new_grad[done] = trial_value[found, pick], trial_grad[found, pick]
            pending[done] = False
            size[todo[~found]] *= 0.5 ** tries
            halvings += tries
        moved = ~pending
        s_new, y_new = new_x - base, new_grad - g
        sy = (s_new * y_new).sum(axis=1)
        keep = moved & (sy > 1e-8 * np.linalg.norm(s_new, axis=1) * np.linalg.norm(y_new, axis=1)) & (sy > 0)
        kept = rows[keep]
        steps[kept] = np.concatenate([s_new[keep, None], steps[kept, :-1]], axis=1)
        changes[kept] = np.concatenate([y_new[keep, None], changes[kept, :-1]], axis=1)
        inverse_curvature[kept] = np.concatenate([1.0 / sy[keep, None], inverse_curvature[kept, :-1]], axis=1)
        pairs[kept] = np.minimum(pairs[kept] + 1, LBFGS_HISTORY)
        x[rows], value[rows], grad[rows] = new_x, new_value, new_grad
        active[rows] = moved & (np.linalg.norm(new_grad, axis=1) > LBFGS_TOL)
    return x, value


def fit_power_laws(counts: np.ndarray, losses: np.ndarray, starts: int = GRID_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Fit L̂(n) = exp(e) + exp(a) n^(−α) to each row of ``losses`` (K, M) at the data seen ``counts``
    (M,): L-BFGS on the authors' objective from the ``starts`` points of their grid with the lowest
    objective for that domain (all 512 by default). Returns (K, 3) parameters (a, e, α), i.e.
    (log β, log ε, α), and (K,) objective values, the lowest each domain's runs reached; a domain no
    start gives a finite objective (a loss that is not positive) gets NaN parameters."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a loss that is not positive: NaN parameters below
        log_counts = np.log(np.asarray(counts, dtype=np.float64))
        log_losses = np.log(np.asarray(losses, dtype=np.float64))
    k = len(log_losses)
    grid = start_grid()
    starts = int(min(max(starts, 1), len(grid)))
    if starts < len(grid):
        initial = np.stack([fit_objective(grid, log_counts, np.broadcast_to(row, (len(grid), len(row))))[0]
                            for row in log_losses])
        initial = np.where(np.isfinite(initial), initial, np.inf)
        chosen = np.argsort(initial, axis=1, kind="stable")[:, :starts]
    else:
        chosen = np.broadcast_to(np.arange(len(grid)), (k, len(grid)))
    params, values = lbfgs(grid[chosen].reshape(-1, 3), log_counts, np.repeat(log_losses, starts, axis=0))
    params, values = params.reshape(k, starts, 3), values.reshape(k, starts)
    values = np.where(np.isfinite(values), values, np.inf)
    best = np.argmin(values, axis=1)  # the first of equal values, as jnp.nanargmin
    params, values = params[np.arange(k), best], values[np.arange(k), best]
    params[~np.isfinite(values)] = np.nan  # no start gave a finite objective (a loss that is not positive)
    return params, values
