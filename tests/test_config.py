"""The config schema and the semantic checks that run before any job."""

from __future__ import annotations

import pytest

from conftest import make_test_config
from mixbench import config as cfg
from mixbench.errors import ConfigError
from strategies.base import Strategy


class NeedsProbes(Strategy):
    signals = frozenset({"example_gradient_features"})

    def initial_weights(self):
        return None


def test_defaults_are_filled_in(tmp_path):
    config = cfg.validate({"grid": {"strategies": ["uniform"]}})
    assert config["training"]["steps"] == 400  # the schema default, not config.yaml
    assert config["grid"]["seeds"] == [0, 1, 2]
    assert config["tokenizer"] == {"kind": "bpe", "vocab_size": 8192, "path": None, "workers": 8}
    assert config["stages"] == {}


def test_default_config_file_is_valid():
    config = cfg.load(cfg.REPO_ROOT / "config" / "config.yaml")
    assert config["grid"]["sizes"] == ["tiny"]
    assert set(config["grid"]["strategies"]) >= {"uniform", "natural"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grid": {"strategies": ["unifrom"]}}, "unknown strategy 'unifrom'; registered strategies: doge, dograph, doremi, natural, static, uniform"),
        ({"strategies": {"uniform": {"temperature": 2.0}}}, "unknown hyperparameter(s) ['temperature']; valid: none"),
        ({"training": {"stpes": 10}}, "Additional properties are not allowed ('stpes' was unexpected)"),
        ({"training": {"steps": 0}}, "training.steps: 0 is less than the minimum of 1"),
        ({"training": {"batch_size": 10, "micro_batch_size": 4}},
         "batch_size 10 is not a multiple of nodes × processes × micro_batch_size at size 'test' = 1 × 1 × 4"),
        ({"training": {"batch_size": 8, "micro_batch_size": 4, "processes": 3}}, "= 1 × 3 × 4"),
        ({"training": {"batch_size": 8, "micro_batch_size": {"test": 3}}}, "at size 'test' = 1 × 1 × 3"),
        ({"training": {"micro_batch_size": {"small": 4}}}, "names no micro-batch for size 'test' and has no `default`"),
        ({"training": {"micro_batch_size": {"huge": 4, "default": 2}}}, "micro_batch_size: unknown size(s) ['huge']"),
        ({"training": {"micro_batch_size": "4"}}, "micro_batch_size"),
        ({"training": {"warmup_steps": 30}}, "stage 'final' has 30 steps, not more than training.warmup_steps (30)"),
        ({"grid": {"sizes": ["huge"]}}, "grid.sizes: unknown size(s) ['huge']"),
        ({"corpus": {"source": "web"}}, "corpus.source: 'web' is not one of"),
        ({"grid": {"strategies": ["doremi"]}, "stages": {"reference": {"size": "tiny"}, "proxy": {"size": "test"}}},
         "the proxy must be the size of its reference model"),
        ({"corpus": {"source": "debian", "domains": ["code", "poetry"]}}, "['poetry'] are not Debian corpus domains"),
    ],
)
def test_bad_config_fails_with_a_clear_message(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg.validate(make_test_config(tmp_path, **overrides))
    assert message in str(err.value)


def test_static_weights_are_checked_against_the_domains(tmp_path):
    domains = make_test_config(tmp_path)["corpus"]["domains"]
    good = {d: 1.0 for d in domains}
    config = make_test_config(tmp_path, grid={"strategies": ["pile"]},
                              strategies={"pile": {"strategy": "static", "weights": good}})
    assert cfg.strategy_hparams(cfg.validate(config), "pile") == {"weights": good}
    bad = dict(good, wikipedia=1.0)
    config["strategies"]["pile"]["weights"] = bad
    with pytest.raises(ConfigError, match=r"unknown \['wikipedia'\]"):
        cfg.validate(config)
    config["strategies"]["pile"]["weights"] = dict(good, code=-1.0)
    with pytest.raises(ConfigError, match="non-negative"):
        cfg.validate(config)


def test_a_strategy_needing_a_signal_no_provider_computes_is_refused(tmp_path, monkeypatch):
    import strategies

    import models.signals

    monkeypatch.setitem(strategies.REGISTRY, "greedy", "test_config:NeedsProbes")
    # As on a build without the probe's provider: the config check must refuse the strategy.
    monkeypatch.delitem(models.signals.REGISTRY, "example_gradient_features")
    with pytest.raises(ConfigError, match=r"'greedy' needs signals no provider computes: \['example_gradient_features'\]"):
        cfg.validate(make_test_config(tmp_path, grid={"strategies": ["greedy"]}))


def test_entries_outside_the_grid_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="strategy 'doremy'"):
        cfg.validate(make_test_config(tmp_path, strategies={"doremy": {}}))


def test_stage_training_resolves_per_strategy_overrides(tmp_path):
    config = cfg.validate(make_test_config(
        tmp_path, stages={"proxy": {"size": "test", "steps": 7}},
        strategies={"uniform": {"stages": {"proxy": {"steps": 5}}}},
    ))
    assert cfg.stage_training(config, "uniform", "final", "test") == {"size": "test", "steps": 30}
    assert cfg.stage_training(config, "uniform", "proxy", "test") == {"size": "test", "steps": 5}
    assert cfg.stage_training(config, "natural", "proxy", "test") == {"size": "test", "steps": 7}


def test_config_hash_is_stable_and_sensitive(tmp_path):
    a = cfg.validate(make_test_config(tmp_path))
    b = cfg.validate(make_test_config(tmp_path))
    assert cfg.config_hash(a) == cfg.config_hash(b)
    b["training"]["steps"] += 1
    assert cfg.config_hash(a) != cfg.config_hash(b)


def test_paper_config_is_valid_on_top_of_the_default():
    config = cfg.load(cfg.REPO_ROOT / "config" / "config.yaml", cfg.REPO_ROOT / "config" / "paper.yaml")
    assert config["grid"]["sizes"] == ["small", "medium", "large"]
    assert config["grid"]["strategies"] == ["uniform", "natural", "doremi", "doge", "dograph", "doremi_published",
                                            "doge_published"]
    for published in ("doremi_published", "doge_published"):  # rounded as printed: sums within 1e-4 of 1
        assert sum(cfg.strategy_hparams(config, published)["weights"]) == pytest.approx(1.0, abs=1e-4)
    assert cfg.cell_runs(config, "large", "doge") == {"proxy": {"size": "proxy-82m", "steps": 10000},
                                                      "final": {"size": "large", "steps": 20000}}


def test_a_doge_batch_too_small_for_its_stratified_proxy_is_refused_before_any_job(tmp_path):
    """Six training domains: at least 6 sequences per step, whatever the number of processes (the
    stratified batch is drawn whole and split by position, so a rank may hold none of a domain)."""
    config = make_test_config(tmp_path, grid={"strategies": ["doge"]},
                              training={"batch_size": 4, "micro_batch_size": 1, "processes": 2})
    with pytest.raises(ConfigError, match=r"strategies.doge: the proxy samples each of its 6 training domains.*"
                                          r"batch_size is 4; use batch_size >= 6"):
        cfg.validate(config)
    config["strategies"] = {"doge": {"target": "qa"}}  # out-of-domain: five domains trained on
    config["training"].update(batch_size=6, micro_batch_size=1)
    cfg.validate(config)
    config["strategies"] = {}
    config["training"].update(batch_size=6, micro_batch_size=1, processes=3)  # 2 rows per rank: allowed
    cfg.validate(config)


def test_a_number_given_as_text_is_refused_with_where_it_usually_comes_from(tmp_path):
    with pytest.raises(ConfigError, match=r"grid\.seeds\.0: '0' is not of type 'integer' \(snakemake --config passes"):
        cfg.validate(make_test_config(tmp_path, grid={"seeds": ["0"]}))


def test_variants_expand_into_named_strategies_checked_like_any_entry(tmp_path):
    config = cfg.validate(make_test_config(tmp_path, grid={
        "strategies": ["uniform", "dograph", "natural"],
        "variants": {"dograph": {"lam": [1, 100.0], "rho": [30]}, "doremi": {"step_size": [0.5]}}}))
    # After their base where the grid lists it, else at the end; values printed as the shortest number.
    assert config["grid"]["strategies"] == ["uniform", "dograph", "dograph@lam=1,rho=30", "dograph@lam=100,rho=30",
                                            "natural", "doremi@step_size=0.5"]
    entry = config["strategies"]["dograph@lam=100,rho=30"]
    assert entry["strategy"] == "dograph" and entry["lam"] == 100.0 and entry["rho"] == 30
    assert entry["update_every"] == config["strategies"]["dograph"]["update_every"]  # the base entry's other values
    assert cfg.strategy_stages(config, "doremi@step_size=0.5") == ("reference", "proxy", "final")
    assert cfg.validate(config) == config  # a job re-reading the stored config sees the same names
    for variants, message in [
        ({"dograph": {"lamb": [1]}}, r"grid.variants.dograph \(dograph@lamb=1\): unknown hyperparameter\(s\) \['lamb'\]"),
        ({"dograph": {"lam": ["big"]}}, r"grid.variants.dograph \(dograph@lam=big\): hyperparameter 'lam' must be float"),
        ({"nope": {"a": [1]}}, r"grid.variants.nope \(nope@a=1\): unknown strategy 'nope'"),
        ({"dograph": {"stages": [1]}}, r"\['stages'\] are not hyperparameters"),
        ({"dograph": {"lam": ["a b"]}}, r"'a b' cannot be part of a strategy name"),
        ({"dograph": {"lam": []}}, r"grid.variants.dograph.lam: \[\] should be non-empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            cfg.validate(make_test_config(tmp_path, grid={"variants": variants}))
    clash = make_test_config(tmp_path, grid={"variants": {"dograph": {"lam": [1]}}},
                             strategies={"dograph@lam=1": {"strategy": "dograph", "lam": 2.0}})
    with pytest.raises(ConfigError, match="strategies.dograph@lam=1: an entry of this name differs"):
        cfg.validate(clash)


def test_a_variants_stage_problem_names_the_sweep_and_close_values_get_distinct_names(tmp_path):
    config = make_test_config(tmp_path, grid={"variants": {"doremi": {"rounds": [2]}}},
                              stages={"proxy": {"size": "test", "steps": 2}}, training={"warmup_steps": 3})
    with pytest.raises(ConfigError, match=r"grid.variants.doremi \(doremi@rounds=2\): stage 'proxy"):
        cfg.validate(config)
    close = cfg.validate(make_test_config(tmp_path, grid={"variants": {"dograph": {"lam": [0.1234567, 0.1234568]}}}))
    assert close["grid"]["strategies"][-2:] == ["dograph@lam=0.1234567", "dograph@lam=0.1234568"]
