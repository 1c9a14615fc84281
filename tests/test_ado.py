"""ADO (strategies/ado.py): two updates worked out by hand; a run against a transcription of the authors'
AdoSelector (yidingjiang/ado, src/data_selectors/ado.py, its update and curr_dist line by line) on the
same synthetic loss curves, every step's mixture to 1e-6; the fit (the authors' objective and its
gradient, a power law recovered, deterministic, a failed fit discarded); the compact history against the
full one, bit for bit; resumption through a checkpoint and in the real loop; the schedule and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import savgol_filter
from scipy.special import logsumexp

from mixbench.errors import ConfigError
import strategies
from strategies import StepStats, StrategyContext, grid_config
from strategies.ado import ADO, clip_min_probability
from strategies.power_law_fit import fit_objective, fit_power_laws, start_grid

DOMAINS = ("code", "books", "qa")
SEQ = 1024  # tokens a sequence: with tokens_per_count 1024 a count is one sequence, the authors' unit


def ado(domains=DOMAINS, tokens=(500.0, 300.0, 200.0), **hparams):
    context = StrategyContext(name="ado", domains=tuple(domains), train_tokens=np.array(tokens), stage="final",
                              total_steps=1000, seed=0, vocab_size=8)
    return ADO(context, **hparams)


def stats(step, losses, tokens):
    return StepStats(step, 1e-3, np.array(losses, dtype=float), np.array(tokens, dtype=float))


# -- one update by hand ---------------------------------------------------------------------------------
def test_two_updates_by_hand_with_given_laws():
    strategy = ado(domains=("a", "b"), tokens=(3000.0, 1000.0), start_step=0, ignore_steps=10**6)  # never fits
    no_law = ado(domains=("a", "b"), tokens=(3.0, 1.0), start_step=0)
    assert no_law.update(stats(1, [3.0, 4.0], [2048, 2048])) is None  # nothing to go by before a fit
    # Laws (log β, log ε, α), as a fit would leave them: b's nearly flat, its exponent under the 0.05 floor.
    strategy.params = np.array([[1.0, 0.5, 0.5], [-3.0, 0.6, 0.02]])
    pi = strategy.update(stats(1, [3.0, 4.0], [2048, 2048]))  # t = 0
    # n = 4096 / 1024 = 4; h = 0.9 (0.75, 0.25) + 0.1 (0.5, 0.5) = (0.725, 0.275).
    n, h = 4.0, [0.725, 0.275]
    rate = [0.5 * (math.exp(0.5) + math.exp(1.0) / n ** 0.5 - math.exp(0.5)) / n,
            0.05 * (math.exp(0.6) + math.exp(-3.0) / n ** 0.02 - math.exp(0.6)) / n]
    weighted = [rate[0] * 0.75 * math.sqrt(h[0] * (1 - h[0])), rate[1] * 0.25 * math.sqrt(h[1] * (1 - h[1]))]
    rho = [w / sum(weighted) for w in weighted]
    assert rho[1] < 0.01  # b is clipped up to δ_min
    rho = [max(r, 0.01) / (max(rho[0], 0.01) + max(rho[1], 0.01)) for r in rho]
    expected = [0.9 * 0.75 + 0.1 * rho[0], 0.9 * 0.25 + 0.1 * rho[1]]
    np.testing.assert_allclose(pi, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pi, [0.7740087, 0.2259913], atol=1e-7)  # ρ = (0.990077, 0.009913)
    np.testing.assert_allclose(strategy.pi_bar, rho, rtol=0, atol=1e-15)  # t = 0: π̄ = ρ
    # t = 1, b absent (its loss nan): n = 8; h = 0.9 h + 0.1 (1, 0); π = 0.9 π̄ + 0.1 ρ₂; π̄ = (ρ₁ + ρ₂) / 2.
    pi2 = strategy.update(stats(2, [2.5, np.nan], [4096, 0]))
    n, h = 8.0, [0.9 * 0.725 + 0.1, 0.9 * 0.275]
    rate = [0.5 * (math.exp(0.5) + math.exp(1.0) / n ** 0.5 - math.exp(0.5)) / n,
            0.05 * (math.exp(0.6) + math.exp(-3.0) / n ** 0.02 - math.exp(0.6)) / n]
    weighted = [rate[0] * 0.75 * math.sqrt(h[0] * (1 - h[0])), rate[1] * 0.25 * math.sqrt(h[1] * (1 - h[1]))]
    rho2 = [w / sum(weighted) for w in weighted]
    rho2 = [max(r, 0.01) / (max(rho2[0], 0.01) + max(rho2[1], 0.01)) for r in rho2]
    np.testing.assert_allclose(pi2, [0.9 * rho[i] + 0.1 * rho2[i] for i in range(2)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(strategy.pi_bar, [(rho[i] + rho2[i]) / 2 for i in range(2)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(strategy.tail_losses[-1], [2.5, 4.0])  # b: its loss of the step before
    trace = strategy.trace()
    np.testing.assert_allclose(trace["rho"], rho2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(trace["credit_history"], h, rtol=0, atol=1e-15)
    assert trace["fit"] is None


def test_clip_min_probability_is_the_authors():
    np.testing.assert_allclose(clip_min_probability(np.array([0.995, 0.004, 0.001]), 0.01),
                               np.array([0.995, 0.01, 0.01]) / 1.015, rtol=0, atol=1e-16)
    np.testing.assert_array_equal(clip_min_probability(np.array([0.5, 0.3, 0.2]), 0.01), [0.5, 0.3, 0.2])


# -- the authors' update rule, transcribed ------------------------------------------------------------------
class AuthorsAdoSelector:
    """AdoSelector of yidingjiang/ado (src/data_selectors/ado.py) with its defaults (y_axis train_loss,
    use_same_step_size True), its update and curr_dist transcribed line by line in numpy. What it hardcodes
    (the filter's window 101 and the subsample 10) are arguments here, and the fit, jaxopt's L-BFGS on a TPU
    (jax is no dependency of this project), is the function ``fit(counts, losses)`` passed in; its saving to
    GCS, validation-loss path and metrics are left out."""

    def __init__(self, n_task, task_token_count, ignore_steps, start_step, update_interval, fit, window, subsample):
        self.k = n_task
        self.empirical_dist = task_token_count / task_token_count.sum()
        self.ignore_steps, self.start_step, self.update_interval = ignore_steps, start_step, update_interval
        self.fit, self.window, self.subsample = fit, window, subsample
        self.current_params = None
        self.task_cnt_TxK = np.empty((0, self.k), dtype=np.int32)
        self.task_loss_TxK = np.empty((0, self.k), dtype=np.float32)
        self.p = self.empirical_dist
        self.p_avg = self.empirical_dist
        self.p_history = self.empirical_dist

    def curr_dist(self, itr):
        if itr < self.start_step or self.current_params is None:
            return None
        irred_loss_K = np.exp(self.current_params[:, 1])
        expnt_K = np.maximum(self.current_params[:, 2], 0.05)
        curr_loss_K = scaling_law((self.current_params[:, 0], self.current_params[:, 1], self.current_params[:, 2]),
                                  self.task_cnt_TxK.sum(0))
        n_seen_K = np.float32(np.sum(self.task_cnt_TxK, 0))
        slope_K = expnt_K * (curr_loss_K - irred_loss_K) / n_seen_K
        weighted_slope_K = slope_K
        weighted_slope_K = weighted_slope_K * self.empirical_dist * (self.p_history * (1 - self.p_history)) ** 0.5
        dist_K_instant = weighted_slope_K
        dist_K = dist_K_instant / dist_K_instant.sum()
        dist_K = clip_min_probability_authors(dist_K, 1e-2)
        self.p = 0.9 * self.p_avg + 0.1 * dist_K
        self.p_avg = (1 - 1 / (itr + 1)) * self.p_avg + 1 / (itr + 1) * dist_K
        return self.p

    def update(self, task_ids, losses, itr):
        counts_K = np.zeros(self.k, dtype=np.int32)
        unique_values, counts = np.unique(task_ids, return_counts=True)
        counts_K[unique_values] = counts
        increment = np.ones_like(counts_K[None]) * counts_K.sum()
        self.task_cnt_TxK = np.append(self.task_cnt_TxK, increment, axis=0)
        gamma = 0.9
        count_dist = counts_K / counts_K.sum()
        self.p_history = gamma * self.p_history + (1 - gamma) * count_dist
        avg_loss = np.mean(losses).item()
        task_loss_K = np.zeros((self.k,))
        for i in range(self.k):
            if np.sum(task_ids == i) > 0:
                task_loss_K[i] = np.mean(losses[np.where(task_ids == i)])
            elif self.task_loss_TxK.shape[0] > 0:
                task_loss_K[i] = self.task_loss_TxK[-1, i]
            else:
                task_loss_K[i] = avg_loss
        self.task_loss_TxK = np.append(self.task_loss_TxK, task_loss_K[None], axis=0)
        if itr >= self.start_step and itr % self.update_interval == 0:
            current_params = self.compute_scaling_law_params()
            if not (np.isnan(np.sum(current_params)).item() or np.isinf(np.sum(current_params)).item()):
                self.current_params = current_params

    def compute_scaling_law_params(self):
        cum_cnt_TxK = np.cumsum(self.task_cnt_TxK, 0)
        cum_cnt_KxT = cum_cnt_TxK[self.ignore_steps::self.subsample].T
        task_loss_KxT = savgol_filter(self.task_loss_TxK.T, self.window, 3,
                                      axis=-1)[:, self.ignore_steps::self.subsample]
        self.fitted = (cum_cnt_KxT, task_loss_KxT)  # kept for the test to look at
        return np.stack([self.fit(cum_cnt_KxT[k], task_loss_KxT[k]) for k in range(self.k)])  # jax.vmap over domains


def clip_min_probability_authors(probs, min_prob):
    total_deficit = max(min_prob * len(probs) - probs.sum(), 0)
    scale_factor = (1 - total_deficit) / probs.sum()
    scaled_probs = probs * scale_factor
    clipped_probs = np.maximum(scaled_probs, min_prob)
    return clipped_probs / clipped_probs.sum()


def scaling_law(params, D):
    a, e, alpha = params
    return np.exp(e) + np.exp(a) / D ** alpha


def synthetic_run(steps, hparams, batch=12, seed=0):
    """Both selectors on the same batches: sequences drawn from ADO's mixture, each sequence's loss from its
    domain's power law in the data seen plus noise; the first step has no `qa`. Yields (step, our strategy,
    the transcription, our mixture, theirs) after each step."""
    strategy = ado(**hparams)
    starts = strategy.hparams["fit_starts"]
    fit = lambda counts, losses: fit_power_laws(counts, losses[None], starts)[0][0]  # one domain, as under vmap
    authors = AuthorsAdoSelector(3, np.array([500.0, 300.0, 200.0]), hparams["ignore_steps"], hparams["start_step"],
                                 hparams["fit_every"], fit, hparams["savgol_window"], hparams["subsample"])
    rng = np.random.default_rng(seed)
    beta, eps, alpha = np.array([6.0, 4.0, 9.0]), np.array([2.0, 2.6, 1.7]), np.array([0.35, 0.2, 0.5])
    mixture, seen = strategy.initial_weights(), 0
    for step in range(1, steps + 1):
        ids = np.array([0, 1] * (batch // 2)) if step == 1 else rng.choice(3, size=batch, p=mixture / mixture.sum())
        seen += batch
        losses = eps[ids] + beta[ids] * seen ** -alpha[ids] + rng.normal(0, 0.05, batch)
        counts = np.bincount(ids, minlength=3)
        domain_loss = [np.mean(losses[ids == k]) if counts[k] else np.nan for k in range(3)]  # as the authors average
        ours = strategy.update(stats(step, domain_loss, counts * SEQ))
        authors.update(ids, losses, step - 1)
        theirs = authors.curr_dist(step - 1)
        yield step, strategy, authors, ours, theirs
        if ours is not None:
            mixture = ours


TRANSCRIBED = {"ignore_steps": 40, "start_step": 20, "fit_every": 60, "subsample": 5, "savgol_window": 21}


def test_a_run_matches_the_authors_update_rule_on_the_same_loss_curves():
    compared, fits = 0, 0
    for step, strategy, authors, ours, theirs in synthetic_run(300, TRANSCRIBED):
        if strategy.fit_record is not None:  # the points fitted are the authors'
            fits += 1
            assert strategy.fit_record["step"] == step and strategy.fit_record["points"] == authors.fitted[0].shape[1]
            np.testing.assert_allclose(strategy.params, authors.current_params, rtol=0, atol=1e-6)
        assert (ours is None) == (theirs is None), step
        if ours is not None:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
            compared += 1
        np.testing.assert_allclose(strategy.history, authors.p_history, rtol=0, atol=1e-12)
        np.testing.assert_allclose(strategy.tail_losses[-1], authors.task_loss_TxK[-1], rtol=0, atol=1e-12)
    assert fits == 4 and compared == 300 - 60  # fits after steps 61, 121, 181, 241; updates from step 61 on
    assert ours.max() - ours.min() > 0.1  # the mixture moved away from the prior


# -- the fit -------------------------------------------------------------------------------------------
def authors_loss_fn(params_3, D, L):
    """The authors' loss_fn (jnp → np), with their huber_loss and logsumexp."""
    a, e, alpha = params_3
    arg1 = a - alpha * np.log(D)
    arg2 = e + np.zeros(arg1.shape)
    pred = logsumexp(np.stack((arg1, arg2), axis=0), axis=0)
    target = np.log(L)
    abs_diff = np.abs(target - pred)
    huber = np.where(abs_diff > 1e-3, 1e-3 * (abs_diff - .5 * 1e-3), 0.5 * abs_diff ** 2)
    alpha_term = np.maximum(alpha - 0.8, 0)
    alpha_term2 = - np.minimum(alpha, 0.001)
    a_term = np.maximum(a - 6.5, 0)
    e_term = -np.minimum(e - 0.5, 0)
    return np.sum(huber) + alpha_term + alpha_term2 + e_term + a_term


def test_the_objective_is_the_authors_and_its_gradient_is_right():
    rng = np.random.default_rng(1)
    counts = np.cumsum(rng.integers(1, 20, 40)).astype(float)
    losses = 2.0 + 5.0 * counts ** -0.3 * np.exp(rng.normal(0, 2e-3, 40))
    params = np.column_stack([rng.uniform(-3, 8, 50), rng.uniform(-2.5, 2, 50), rng.uniform(-0.2, 1.0, 50)])
    value, grad = fit_objective(params, np.log(counts), np.broadcast_to(np.log(losses), (50, 40)))
    np.testing.assert_allclose(value, [authors_loss_fn(p, counts, losses) for p in params], rtol=1e-12, atol=1e-14)
    step = 1e-6
    for j in range(3):
        shift = np.zeros(3)
        shift[j] = step
        numeric = [(authors_loss_fn(p + shift, counts, losses) - authors_loss_fn(p - shift, counts, losses))
                   / (2 * step) for p in params]
        np.testing.assert_allclose(grad[:, j], numeric, rtol=0, atol=1e-6)
    assert start_grid().shape == (512, 3) and start_grid()[1].tolist() == pytest.approx([-2.0, -2.0, 0.1])


def test_the_fit_recovers_a_power_law_and_is_deterministic():
    counts = np.arange(1, 61) * 48.0
    truth = np.array([[2.0, 0.9, 0.4], [1.2, 0.6, 0.25], [3.0, 1.4, 0.6]])  # (log β, log ε, α), inside the bounds
    losses = np.exp(truth[:, 1:2]) + np.exp(truth[:, 0:1]) * counts ** -truth[:, 2:3]
    params, objective = fit_power_laws(counts, losses)
    predicted = np.exp(params[:, 1:2]) + np.exp(params[:, 0:1]) * counts ** -params[:, 2:3]
    np.testing.assert_allclose(predicted, losses, rtol=2e-4)
    np.testing.assert_allclose(params, truth, atol=0.05)
    assert np.all(objective < -0.001 + 1e-6)  # the Huber terms near zero, the −min(α, 0.001) term −0.001
    again, _ = fit_power_laws(counts, losses)
    np.testing.assert_array_equal(again, params)
    # the starts kept are the grid's best: fewer starts never beat all 512
    few, few_objective = fit_power_laws(counts[:20], losses[:, :20], starts=4)
    _, all_objective = fit_power_laws(counts[:20], losses[:, :20], starts=512)
    assert np.all(all_objective <= few_objective + 1e-12)


def test_a_fit_without_a_finite_objective_is_discarded_and_the_previous_law_stays(monkeypatch):
    counts = np.arange(1, 11) * 10.0
    losses = np.vstack([3 + counts ** -0.5, np.full(10, -1.0)])  # a loss that is not positive: no finite objective
    params, objective = fit_power_laws(counts, losses, starts=4)
    assert np.all(np.isfinite(params[0])) and np.all(np.isnan(params[1])) and objective[1] == np.inf
    strategy = ado(start_step=0, ignore_steps=0, fit_every=5)
    law = np.array([[1.0, 0.6, 0.3]] * 3)
    strategy.params = law.copy()
    monkeypatch.setattr("strategies.ado.fit_power_laws", lambda *args: (np.full((3, 3), np.nan), np.full(3, np.inf)))
    for step in range(1, 7):
        assert strategy.update(stats(step, [3.0, 3.0, 3.0], [SEQ, SEQ, SEQ])) is not None
    assert strategy.fit_record == {"step": 6, "points": 1, "accepted": False, "laws": None}  # t = 0 (subsample 10)
    np.testing.assert_array_equal(strategy.params, law)


# -- the compact history ---------------------------------------------------------------------------------
def test_the_compact_history_fits_the_points_the_full_history_would():
    hparams = {"ignore_steps": 37, "start_step": 0, "fit_every": 50, "subsample": 4, "savgol_window": 15}
    strategy = ado(**hparams)
    rng = np.random.default_rng(3)
    rows, seen = [], []
    for step in range(1, 420):
        tokens = rng.multinomial(6, [0.5, 0.3, 0.2]) * 256
        losses = np.where(tokens > 0, 3 + rng.normal(0, 0.3, 3) + 10 / step ** 0.5, np.nan)
        strategy.update(stats(step, losses, tokens))
        rows.append(strategy.tail_losses[-1].copy())
        seen.append(strategy.seen)
        assert len(strategy.tail_losses) <= 50 + 15 + 4  # about fit_every + window steps of raw losses
        if step in (16, 17, 40, 60, 137, 300, 419):
            state = strategy.state_dict()
            points, smooth = strategy.fit_points()
            window = min(15, step if step % 2 else step - 1)
            full = savgol_filter(np.array(rows), window, 3, axis=0)[37::4]
            np.testing.assert_array_equal(points, np.array(seen)[37::4])
            np.testing.assert_array_equal(smooth, full.T)  # bit for bit: the filter reads only the window
            strategy.load_state_dict(state)  # a look, not a fit: the next fit finds the history as it was


# -- resumption, schedule, refusals -------------------------------------------------------------------------
def test_a_run_resumed_from_a_checkpoint_continues_bit_identically(tmp_path):
    from models.checkpoint import read_checkpoint, save_checkpoint

    hparams = {**TRANSCRIBED, "fit_every": 50}
    first = list(synthetic_run(150, hparams, seed=5))
    strategy = first[0][1]
    save_checkpoint(tmp_path, 150, {"strategy": strategy.state_dict()})  # after step 150
    resumed = ado(**hparams)
    resumed.load_state_dict(read_checkpoint(tmp_path / "step000150")["strategy"])
    rng = np.random.default_rng(9)
    mixture = strategy.pi.copy()
    for step in range(151, 230):
        tokens = rng.multinomial(12, mixture / mixture.sum()) * SEQ
        losses = np.where(tokens > 0, 2.5 + rng.normal(0, 0.1, 3), np.nan)
        a, b = strategy.update(stats(step, losses, tokens)), resumed.update(stats(step, losses, tokens))
        np.testing.assert_array_equal(a, b)
        assert strategy.trace() == resumed.trace()
        mixture = a
    assert strategy.fit_record is None and resumed.params is not None
    np.testing.assert_array_equal(strategy.params, resumed.params)  # refitted after step 201, the same


def test_schedule_static_reason_and_refusals():
    assert ADO.first_fit(ADO.defaults) == 1001  # t = 1000: start_step 500 and ignore_steps 1000 both past
    assert ADO.first_fit({**ADO.defaults, "start_step": 1500}) == 2001
    assert ADO.first_fit({**ADO.defaults, "ignore_steps": 20, "start_step": 0, "fit_every": 40}) == 41
    args = {"stage": "final", "warmup_steps": 0, "domains": list(DOMAINS)}
    reason = ADO.static_reason(ADO.defaults, steps=160, **args)
    assert "first fit comes after step 1001" in reason and "never updates" in reason
    assert ADO.static_reason(ADO.defaults, steps=1002, **args) is None
    assert ADO.static_reason(ADO.defaults, steps=1001, **args) is not None  # its weights would train no step
    assert all(ado().needs_step_stats(s) for s in (1, 2, 999, 1001))
    assert np.allclose(ado().initial_weights(), [0.5, 0.3, 0.2])
    assert np.allclose(ado(prior="uniform").initial_weights(), 1 / 3)
    for bad, message in [({"fit_every": 0}, "fit_every >= 1"), ({"savgol_window": 100}, "savgol_window must be odd"),
                         ({"savgol_window": 3}, "savgol_window must be odd"),
                         ({"delta_min": 0.5}, "delta_min must be in"),
                         ({"gamma2": 0.0}, "0 < gamma2 <= 1"), ({"prior": "pile"}, "prior must be"),
                         ({"fit_starts": 513}, "fit_starts must be in"), ({"tokens_per_count": 0}, "tokens_per_count"),
                         ({"fit_every": 1.5}, "must be int"), ({"interval": 5}, "unknown hyperparameter")]:
        with pytest.raises(ConfigError, match=message):
            ADO.check_hparams(bad, list(DOMAINS))
    with pytest.raises(ConfigError, match="needs >= 2"):
        ADO.check_hparams({}, ["code"])
    ADO.check_hparams({}, list(DOMAINS))


def test_a_run_of_the_real_loop_adapts_and_resumes_bit_identically(built_data, tmp_path, monkeypatch):
    """The test model for 30 steps with fits after steps 9, 17 and 25, stopped after step 13 and resumed."""
    import json

    from models.train import train
    from safetensors.torch import load_file

    monkeypatch.setitem(strategies.REGISTRY, "ado", "strategies.ado:ADO")
    config = grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["ado"]), strategies={
        "ado": {"ignore_steps": 4, "start_step": 0, "fit_every": 8, "subsample": 1, "savgol_window": 5}}))
    run = lambda out, stop_after=None: train(config, "test", "ado", 0, "final", out, {}, stop_after)
    assert run(tmp_path / "whole")
    assert not run(tmp_path / "split", stop_after=13)
    assert run(tmp_path / "split")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "split"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    logs = [(tmp_path / d / "log.csv").read_text().splitlines() for d in ("whole", "split")]
    header = logs[0][0].split(",")
    columns = [i for i, c in enumerate(header) if c.startswith("weight/")]
    weights = [[float(row.split(",")[i]) for i in columns] for row in logs[0][1:]]
    assert weights == [[float(row.split(",")[i]) for i in columns] for row in logs[1][1:]]
    assert weights[8] == weights[0] and weights[9] != weights[8]  # the prior until the first fit, after step 9
    traces = [[json.loads(line) for line in (tmp_path / d / "trace.jsonl").read_text().splitlines()]
              for d in ("whole", "split")]
    fits = [t["fit"]["step"] for t in traces[0] if t.get("fit")]
    assert fits == [9, 17, 25] and [t.get("rho") for t in traces[0]] == [t.get("rho") for t in traces[1]]
