"""RegMix as a strategy (strategies/regmix.py): each swarm run's mixture, the fit on the swarm's
recorded weights and held-out losses, the final stage, and the checks before any job."""

import warnings

import numpy as np
import pytest

from mixbench.errors import ConfigError, TrainingError
from strategies import StrategyContext, get_strategy_class
from strategies.regmix import REGMIX_TAG, SWARM_STREAM
from strategies.regression_mixing import swarm_mixtures
from strategies import runs as strategy_runs
from strategies import grid_config

DOMAINS = ("code", "books", "docs", "qa")
TOKENS = np.array([400, 300, 200, 100])
NATURAL = TOKENS / TOKENS.sum()
SMALL = {"swarm_runs": 12, "folds": 4, "candidates": 2000, "top_k": 20}


def regmix(stage, seed=0, upstream=None, heldout=None, **hparams):
    replica = int(stage.split("-")[1]) if stage.startswith("swarm-") else None
    context = StrategyContext(name="regmix", domains=DOMAINS, train_tokens=TOKENS, stage=stage, total_steps=10,
                              seed=seed, vocab_size=512, upstream_weights=upstream or {},
                              upstream_heldout=heldout or {}, replica=replica)
    return get_strategy_class("regmix")(context, **{**SMALL, **hparams})


def swarm_of(seed=0, **hparams):
    """What the swarm runs of ``seed`` hand the fit: each run's mixture, from its own strategy."""
    runs = SMALL["swarm_runs"] if "swarm_runs" not in hparams else hparams["swarm_runs"]
    return {f"swarm-{r}": regmix(f"swarm-{r}", seed, **hparams).initial_weights() for r in range(runs)}


def test_swarm_run_r_trains_on_draw_r_of_its_seed_whatever_the_swarm_size():
    # Run r's own stream of the seed: Dir(c_r · natural), c_r log-uniform in [0.1, 5].
    expected, _ = swarm_mixtures(NATURAL, 12, seed=np.random.SeedSequence([3, REGMIX_TAG, SWARM_STREAM]))
    weights = swarm_of(seed=3)
    assert all(np.array_equal(weights[f"swarm-{r}"], expected[r]) for r in range(12))
    assert len({tuple(w) for w in weights.values()}) == 12  # twelve different mixtures
    assert not np.array_equal(swarm_of(seed=4)["swarm-0"], weights["swarm-0"])  # another seed, another swarm
    # A larger swarm keeps the runs it has: growing it retrains none of them.
    larger = swarm_of(seed=3, swarm_runs=20)
    assert all(np.array_equal(larger[f"swarm-{r}"], weights[f"swarm-{r}"]) for r in range(12))


def test_the_fit_recovers_the_cheapest_domain_of_a_linear_loss_and_reports_every_run():
    # Held-out loss of domain d falls linearly with the share of d: loss_d = 6 − a_d·w_d. The macro
    # target, mean_d(6 − a_d w_d), is lowest with all the weight on the largest a_d (docs).
    slopes = np.array([0.2, 0.4, 1.5, 0.3])
    upstream = swarm_of()
    heldout = {name: 6.0 - slopes * w for name, w in upstream.items()}
    fit = regmix("fit", upstream=upstream, heldout=heldout, regressor="linear")
    chosen = fit.initial_weights()
    assert chosen.argmax() == DOMAINS.index("docs") and chosen[2] > 0.9
    report = fit.fit_report()
    assert report["spearman"] > 0.95 and report["folds"] == 4 and report["swarm_runs"] == 12
    assert report["chosen"] == chosen.tolist() and report["natural"] == pytest.approx(NATURAL.tolist())
    first = report["runs"][0]
    assert first["stage"] == "swarm-0" and first["weights"] == upstream["swarm-0"].tolist()
    assert first["observed"] == pytest.approx(np.mean(heldout["swarm-0"]))
    # The final model trains on what the fit handed on.
    assert np.array_equal(regmix("final", upstream={"fit": chosen}).initial_weights(), chosen)


def test_a_named_target_domain_is_fitted_alone():
    # Only books' own loss: the best mixture is all books, whatever the other domains do.
    upstream = swarm_of()
    heldout = {name: np.array([5.0, 6.0 - 2.0 * w[1], 5.0, 5.0]) + 3.0 * w[0] for name, w in upstream.items()}
    fit = regmix("fit", upstream=upstream, heldout=heldout, regressor="linear", target="books")
    assert fit.initial_weights()[1] > 0.9
    assert fit.fit_report()["runs"][3]["observed"] == pytest.approx(heldout["swarm-3"][1])


@pytest.mark.parametrize("regressor", ["mixing_law", "log_linear", "bimix"])
def test_every_law_fits_a_mixbench_swarm_and_finds_the_domain_it_should(regressor):
    # books' loss falls as a power of its own weight (BiMix's law, which the exponential laws
    # approximate): every regressor chooses mostly books for the books target.
    upstream = swarm_of(swarm_draws="released")  # released draws: sparse mixtures, some without books
    heldout = {name: np.array([5.0, 3.0 * max(w[1], 1e-3) ** -0.1, 5.0, 5.0]) for name, w in upstream.items()}
    fit = regmix("fit", upstream=upstream, heldout=heldout, regressor=regressor, target="books",
                 swarm_draws="released", candidate_draws="released", top_k=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = fit.initial_weights()
    # Bimix's law has no value without books: it says how many runs it left out.
    assert any("give domain 1 no weight" in str(w.message) for w in caught) == (regressor == "bimix")
    assert chosen.argmax() == 1 and np.isclose(chosen.sum(), 1.0)
    assert fit.fit_report()["regressor"] == regressor and fit.fit_report()["spearman"] > 0.5


def test_a_swarm_run_trained_on_another_draw_or_missing_stops_the_fit():
    upstream = swarm_of()
    heldout = {name: 6.0 - w for name, w in upstream.items()}
    moved = {**upstream, "swarm-5": swarm_of(seed=9)["swarm-5"]}
    with pytest.raises(TrainingError, match="swarm-5 trained on .* not this seed's draw"):
        regmix("fit", upstream=moved, heldout=heldout).initial_weights()
    del heldout["swarm-7"]
    with pytest.raises(TrainingError, match=r"missing \['swarm-7'\]"):
        regmix("fit", upstream=upstream, heldout=heldout).initial_weights()


def test_a_swarm_whose_targets_are_all_equal_is_an_error_not_a_mixture():
    upstream = swarm_of()
    with pytest.raises(TrainingError, match="12 swarm runs"):
        regmix("fit", upstream=upstream, heldout={n: np.full(4, 5.0) for n in upstream}).initial_weights()


@pytest.mark.parametrize("hparams, message", [
    ({"swarm_runs": 4}, r"swarm_runs must be in \[5, 4096\], got 4"),
    ({"swarm_runs": 6, "folds": 2}, "folds must be >= 2 and leave >= 4 runs .* got folds 2 with swarm_runs 6"),
    ({"target": "latex"}, "target must be 'macro' .* got 'latex'"),
    ({"regressor": "xgboost"}, "regressor must be one of lightgbm, linear, mixing_law, log_linear, bimix, got 'xgboost'"),
    ({"top_k": 200, "candidates": 100}, "need 1 <= top_k <= candidates <= 10,000,000, got top_k 200, candidates 100"),
    ({"candidates": 10**9}, "candidates <= 10,000,000, got top_k 100, candidates 1000000000"),
    ({"min_concentration": 0.0}, "need 0.001 <= min_concentration <= max_concentration <= 1000, got 0.0, 5.0"),
    ({"max_concentration": float("inf")}, "<= 1000, got 0.1, inf"),
    ({"swarm_runs": "8"}, "hyperparameter 'swarm_runs' must be int, got '8'"),
])
def test_bad_settings_are_refused_before_any_job(hparams, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy_class("regmix").check_hparams(hparams, list(DOMAINS))


def test_the_fit_needs_held_out_losses():
    with pytest.raises(ConfigError, match="heldout_windows must be > 0"):
        get_strategy_class("regmix").check_training({}, {"heldout_windows": 0}, list(DOMAINS))


def test_a_fan_out_stage_expands_into_independent_runs_that_the_fit_and_final_read_all_of(tmp_path):
    from conftest import make_test_config
    from mixbench import config as cfg

    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]}, strategies={
        "regmix": {"swarm_runs": 5, "folds": 5, "stages": {"swarm": {"size": "test", "steps": 7}}}}))
    swarm = [f"swarm-{r}" for r in range(5)]
    assert strategy_runs.strategy_stages(config, "regmix") == (*swarm, "fit", "final")
    assert cfg.describe_stages(strategy_runs.strategy_stages(config, "regmix")) == "swarm-0 … swarm-4 (5 runs), fit, final"
    # A swarm run reads none of its siblings: the five can run at once.
    assert strategy_runs.run_chain(config, "regmix", "swarm-3", "test") == {"swarm-3": {"size": "test", "steps": 7}}
    # The fit reads every swarm run and trains nothing; the final model reads them all too (its
    # fingerprint changes with any of them), at the grid's steps.
    assert list(strategy_runs.run_chain(config, "regmix", "fit", "test")) == [*swarm, "fit"]
    assert strategy_runs.run_chain(config, "regmix", "fit", "test")["fit"] == {"size": "test", "steps": 0}
    assert strategy_runs.cell_runs(config, "test", "regmix")["final"] == {"size": "test", "steps": 30}
    assert cfg.Stage.parse("swarm-12") == cfg.Stage(kind="swarm", replica=12) and cfg.Stage.parse("swarm-12").group == "swarm"
    assert cfg.Stage.parse("proxy-r2") == cfg.Stage(kind="proxy", round=2) and str(cfg.Stage.parse("proxy-r2")) == "proxy-r2"
    with pytest.raises(ConfigError, match=r"has no stage 'swarm-5'; its runs: swarm-0 … swarm-4 \(5 runs\), fit, final"):
        strategy_runs.run_chain(config, "regmix", "swarm-5", "test")


def test_a_swarm_run_is_retrained_only_for_what_it_depends_on(tmp_path):
    from conftest import make_test_config

    def fingerprints(**regmix):
        config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]},
                                               strategies={"regmix": {"swarm_runs": 6, "folds": 3, **regmix}}))
        return {stage: strategy_runs.run_fingerprint(config, "regmix", strategy_runs.run_chain(config, "regmix", stage, "test"))
                for stage in ("swarm-0", "fit", "final")}

    base = fingerprints()
    # The fit's settings and the swarm's size: the fit and the final model rerun, no swarm run.
    for change in ({"top_k": 7}, {"target": "qa"}, {"regressor": "linear"}, {"swarm_runs": 9}):
        changed = fingerprints(**change)
        assert changed["swarm-0"] == base["swarm-0"], change
        assert changed["fit"] != base["fit"] and changed["final"] != base["final"], change
    assert fingerprints(max_concentration=2.0)["swarm-0"] != base["swarm-0"]  # what the draws depend on


def test_a_fan_out_is_declared_on_the_swarm_stage_alone():
    from strategies.base import Strategy

    with pytest.raises(TypeError, match="a `swarm` stage needs fan_out"):
        type("NoFanOut", (Strategy,), {"stages": ("swarm", "final"), "initial_weights": lambda self: None})
    with pytest.raises(TypeError, match="only `swarm` fans out"):
        type("ProxyFanOut", (Strategy,), {"stages": ("proxy", "final"), "fan_out": {"proxy": "runs"},
                                          "defaults": {"runs": 3}, "initial_weights": lambda self: None})
    # A count that follows from the domains (None) goes with an override of replicas_for, and only then.
    with pytest.raises(TypeError, match="replicas_for overridden"):
        type("CountedByDomains", (Strategy,), {"stages": ("swarm", "final"), "fan_out": {"swarm": None},
                                               "initial_weights": lambda self: None})
    one_per_domain = type("OnePerDomain", (Strategy,), {
        "stages": ("swarm", "final"), "fan_out": {"swarm": None}, "initial_weights": lambda self: None,
        "replicas_for": classmethod(lambda cls, hparams, domains: {"swarm": len(domains)})})
    assert one_per_domain.replicas_for({}, ["a", "b", "c"]) == {"swarm": 3}


def test_the_fit_reads_a_run_s_loss_after_its_last_step_or_says_what_is_wrong(tmp_path):
    from mixbench.errors import DataError
    from models.run_record import RunRecord
    from models.upstream import final_heldout_loss

    def finished(steps: int) -> None:
        RunRecord(strategy="regmix", stage="swarm-0", size="test", steps=steps, parameters=0, tokens=0, train_flops=0,
                  token_passes={}, flops=0, train_seconds=0.0, wall_seconds=0.0, config_hash="", git_commit="",
                  seed=0, versions={}).write(run / "run.json")

    run = tmp_path / "swarm-0"
    run.mkdir()
    finished(steps=10)
    with pytest.raises(DataError, match="val.csv is missing"):
        final_heldout_loss(run, ["code", "qa"])
    (run / "val.csv").write_text("step,val_loss,val_loss/code,val_loss/qa\n5,6.0,6.5,5.5\n10,5.0,5.25,4.75\n")
    assert final_heldout_loss(run, ["qa", "code"]).tolist() == [4.75, 5.25]
    with pytest.raises(DataError, match=r"no held-out loss for \['books'\]"):
        final_heldout_loss(run, ["code", "books"])
    finished(steps=12)
    with pytest.raises(DataError, match="last measurement is at step 10, not the run's last step 12"):
        final_heldout_loss(run, ["code", "qa"])


def test_the_fit_job_refuses_upstream_runs_other_than_the_swarm(tmp_path):
    from conftest import make_test_config
    from models.fit import fit

    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]},
                                           strategies={"regmix": {"swarm_runs": 5, "folds": 5}}))
    upstream = {f"swarm-{r}": tmp_path / f"swarm-{r}" for r in (0, 1, 2, 4)} | {"proxy": tmp_path / "proxy"}
    with pytest.raises(ConfigError, match=r"missing \['swarm-3'\], unexpected \['proxy'\]"):
        fit(config, "test", "regmix", 0, tmp_path / "fit", upstream)


def test_the_cost_plan_lists_a_swarm_as_one_row_and_no_fit(tmp_path):
    from conftest import make_test_config
    from eval.analysis.plan import plan

    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]}, strategies={
        "regmix": {"swarm_runs": 5, "folds": 5, "stages": {"swarm": {"size": "test", "steps": 7}}}}))
    rows = plan(config, peak_tflops=100.0).set_index("stage")
    assert rows.index.tolist() == ["swarm", "final", "start-up", "evaluation"]
    assert rows.loc["swarm", "runs"] == 5 * 2  # five runs for each of the two seeds
    assert rows.loc["swarm", "optimistic_hours"] == pytest.approx(5 * 2 * rows.loc["swarm", "optimistic_hours_per_run"])
    assert rows.loc["swarm", "tokens"] == 7 * 8 * 32  # steps × batch × sequence length
