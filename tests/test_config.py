"""The config schema and the semantic checks that run before any job."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, make_test_config, snakemake, write_config
from mixbench import config as cfg
from mixbench.errors import ConfigError
from strategies import StrategyContext, get_strategy_class, grid_config
from strategies import runs as strategy_runs
from strategies.base import Strategy


class NeedsProbes(Strategy):
    signals = frozenset({"example_gradient_features"})

    def initial_weights(self):
        return None


def test_defaults_are_filled_in_and_the_grid_must_be_given(tmp_path):
    config = grid_config.validate({"grid": {"sizes": ["tiny"], "strategies": ["uniform"]}})
    assert config["training"]["steps"] == 400  # the schema default, not config.yaml
    assert config["grid"]["seeds"] == [0, 1, 2]
    assert config["tokenizer"] == {"kind": "bpe", "vocab_size": 8192, "path": None, "workers": 8}
    assert config["stages"] == {}
    # No size is made up: the grid names its sizes and strategies.
    with pytest.raises(ConfigError, match=r"^invalid configuration: grid\.sizes: required, and it has no default \("):
        grid_config.validate({"grid": {"strategies": ["uniform"]}})
    with pytest.raises(ConfigError, match=r"^invalid configuration: grid: required"):
        grid_config.validate({})


def test_default_config_file_is_valid():
    config = grid_config.load(cfg.REPO_ROOT / "config" / "config.yaml")
    assert config["grid"]["sizes"] == ["tiny"]
    assert set(config["grid"]["strategies"]) >= {"uniform", "natural"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grid": {"strategies": ["unifrom"]}}, "unknown strategy 'unifrom'; registered strategies: ado, aioli, chameleon, doge, dograph, doremi, lattice, natural, odm, regmix, skillit, static, uniform, unimax"),
        ({"strategies": {"uniform": {"temperature": 2.0}}}, "unknown hyperparameter(s) ['temperature']; valid: none"),
        ({"training": {"stpes": 10}}, "training.stpes: unknown field; training takes steps, batch_size,"),
        ({"training": {"steps": 0}}, "training.steps: 0 is less than the minimum of 1"),
        ({"training": {"batch_size": 10, "micro_batch_size": 4}},
         "batch_size 10 is not a multiple of nodes × processes × micro_batch_size at size 'test' = 1 × 1 × 4"),
        ({"training": {"batch_size": 8, "micro_batch_size": 4, "processes": 3}}, "= 1 × 3 × 4"),
        ({"training": {"batch_size": 8, "micro_batch_size": {"test": 3}}}, "at size 'test' = 1 × 1 × 3"),
        ({"training": {"micro_batch_size": {"small": 4}}}, "names no micro-batch for size 'test' and has no `default`"),
        ({"training": {"micro_batch_size": {"huge": 4, "default": 2}}}, "micro_batch_size: unknown size(s) ['huge']"),
        ({"training": {"micro_batch_size": "4"}}, "micro_batch_size"),
        ({"training": {"warmup_steps": 30}},
         "training.warmup_steps: 30 is not below the 30 steps (training.steps) of the final models"),
        ({"stages": {"proxy": {"steps": 3}}, "grid": {"strategies": ["doremi", "doge"]}},
         "training.warmup_steps: 3 is not below the 3 steps (stages.proxy.steps) of doremi's proxy, "
         "doge's proxy"),
        ({"training": {"lr": float("nan")}}, "training.lr: nan is not a finite number"),
        ({"training": {"steps": 30.0}}, "training.steps: 30.0 is not of type 'integer'"),
        ({"strategies": {1: {}}}, "strategies.1: a key must be text, got int 1"),
        ({"stages": {"prxy": {"size": "test"}}}, "stages.prxy: 'prxy' is not one of ['reference', 'proxy', 'swarm']"),
        ({"grid": {"strategies": ["../up"]}}, "grid.strategies.0: '../up' does not match"),
        ({"strategies": {"doremi": {"rounds": 10 ** 9}}, "grid": {"strategies": ["doremi"]}}, "1 <= rounds <= 20"),
        ({"strategies": {"dograph": {"update_every": None}}, "grid": {"strategies": ["dograph"]}},
         "strategies.dograph: hyperparameter 'update_every' must be int, got null"),
        ({"grid": {"sizes": ["huge"]}}, "grid.sizes: unknown size(s) ['huge']"),
        ({"corpus": {"source": "web"}}, "corpus.source: 'web' is not one of"),
        ({"grid": {"sizes": ["tiny"], "strategies": ["doremi"]},
          "stages": {"reference": {"size": "tiny"}, "proxy": {"size": "test"}}},
         "stages.proxy.size: the proxy must be the size of its reference model (doremi: reference 'tiny' "
         "from stages.reference.size, proxy 'test')"),
        ({"corpus": {"source": "debian", "domains": ["code", "poetry"]}}, "['poetry'] are not Debian corpus domains"),
    ],
)
def test_bad_config_fails_with_a_clear_message(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        grid_config.validate(make_test_config(tmp_path, **overrides))
    assert message in str(err.value) and "\n" not in str(err.value)  # one problem, one line


def test_static_weights_are_numbers_for_exactly_the_domains_that_sum_to_one(tmp_path):
    domains = make_test_config(tmp_path)["corpus"]["domains"]  # six
    good = dict.fromkeys(domains, 1 / 6)

    def check(weights, **entry):
        return grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["pile"]}, strategies={
            "pile": {"strategy": "static", "weights": weights, **entry}}))

    assert cfg.strategy_hparams(check(good), "pile") == {"weights": good}
    assert cfg.strategy_hparams(check(list(good.values())), "pile")["weights"] == [1 / 6] * 6  # a list: domain order
    for weights, message in [
        (dict(good, wikipedia=1 / 6), r"strategies\.pile: weights must name every domain of corpus\.domains exactly "
                                      r"once; missing \[\], unknown \['wikipedia'\]"),
        (dict(good, code="0.1"), r"weights must be numbers; got \{'code': '0\.1'\}"),
        (dict(good, code=True), r"weights must be numbers; got \{'code': True\}"),
        (dict(good, code=-1.0), "non-negative"),
        (dict.fromkeys(domains, 1.0),
         r"weights sum to 6, not 1 \(within 1e-06\): \{'code': 1\.0, .*set `normalize: true`"),
        ([0.5, 0.1, 0.1, 0.1, 0.1, 0.1 + 2e-6], r"weights sum to 1\.000002, not 1"),
        ("0.1", "weights must be a mapping {domain: weight} or a list"),
        ([0.5, 0.5], "need one number per domain"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            check(weights)
        assert "\n" not in str(err.value)
    check([0.5, 0.1, 0.1, 0.1, 0.1, 0.1 + 5e-7])  # within 1e-6
    relative = check(dict.fromkeys(domains, 1.0), normalize=True)  # said explicitly: divided by their sum
    context = StrategyContext(name="pile", domains=tuple(domains), train_tokens=np.ones(6), stage="final",
                              total_steps=10, seed=0, vocab_size=512)
    weights = get_strategy_class("static")(context, **cfg.strategy_hparams(relative, "pile")).initial_weights()
    assert weights.tolist() == pytest.approx([1 / 6] * 6)
    with pytest.raises(ConfigError, match="must be bool"):
        check(good, normalize="yes")


def test_a_strategy_needing_a_signal_no_provider_computes_is_refused(tmp_path, monkeypatch):
    import strategies
    from strategies import signal_names

    monkeypatch.setitem(strategies.REGISTRY, "greedy", "test_config:NeedsProbes")
    # As on a build without the probe's provider: the config check must refuse the strategy.
    monkeypatch.delitem(signal_names.SIGNALS, "example_gradient_features")
    with pytest.raises(ConfigError, match=r"'greedy' needs signals no provider computes: \['example_gradient_features'\]"):
        grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["greedy"]}))


def test_the_signal_providers_are_the_signals_a_strategy_may_declare(tmp_path):
    """models/signals refuses to load while its providers and strategies/signal_names.py differ."""
    code = ("from strategies import signal_names; signal_names.SIGNALS['unprovided'] = 'x'; "
            "import models.signals")
    done = subprocess.run([sys.executable, "-c", code], cwd=cfg.REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "list each signal in both" in done.stderr


def test_only_the_grids_strategies_are_checked(tmp_path):
    # An entry the grid does not use is never instantiated: a stale one does not stop the grid.
    stale = {"doremy": {}, "doge": {"target": "wikipedia"}, "old_mix": {"strategy": "static", "weights": [1, 2]}}
    config = grid_config.validate(make_test_config(tmp_path, strategies=stale))
    assert config["grid"]["strategies"] == ["uniform", "natural"]
    for names, entries, message in [
        (["uniform", "doge"], stale, r"strategies\.doge: target must be 'mix', 'train' or a"),
        (["doremy"], {}, r"grid\.strategies: unknown strategy 'doremy'"),
        (["doremy"], {"doremy": {"strategy": "x"}}, r"strategies\.doremy\.strategy: unknown strategy 'x'"),
    ]:
        with pytest.raises(ConfigError, match="^invalid configuration: " + message):
            grid_config.validate(make_test_config(tmp_path, strategies=entries, grid={"strategies": names}))


def test_stage_training_resolves_per_strategy_overrides(tmp_path):
    config = grid_config.validate(make_test_config(
        tmp_path, stages={"proxy": {"size": "test", "steps": 7}},
        strategies={"uniform": {"stages": {"proxy": {"steps": 5}}}},
    ))
    assert cfg.stage_training(config, "uniform", "final", "test") == {"size": "test", "steps": 30}
    assert cfg.stage_training(config, "uniform", "proxy", "test") == {"size": "test", "steps": 5}
    assert cfg.stage_training(config, "natural", "proxy", "test") == {"size": "test", "steps": 7}


def test_config_hash_is_stable_and_sensitive(tmp_path):
    a = grid_config.validate(make_test_config(tmp_path))
    b = grid_config.validate(make_test_config(tmp_path))
    assert cfg.config_hash(a) == cfg.config_hash(b)
    b["training"]["steps"] += 1
    assert cfg.config_hash(a) != cfg.config_hash(b)


def test_paper_config_is_valid_on_its_own():
    config = grid_config.load(cfg.REPO_ROOT / "config" / "paper.yaml")
    assert config["grid"]["sizes"] == ["small", "medium", "large"]
    assert config["grid"]["strategies"] == ["uniform", "natural", "doremi", "doge", "dograph", "regmix",
                                            "doremi_published", "doge_published", "unimax", "odm", "ado", "aioli",
                                            "skillit", "chameleon"]
    for published in ("doremi_published", "doge_published"):  # rounded as printed: sums within 1e-4 of 1
        assert sum(cfg.strategy_hparams(config, published)["weights"]) == pytest.approx(1.0, abs=1e-4)
    assert cfg.strategy_hparams(config, "doremi_published")["normalize"] is True  # 1.00006: said explicitly
    assert strategy_runs.cell_runs(config, "large", "doge") == {"proxy": {"size": "proxy-82m", "steps": 10000},
                                                      "final": {"size": "large", "steps": 20000}}


def test_a_doge_batch_too_small_for_its_stratified_proxy_is_refused_before_any_job(tmp_path):
    """Six training domains: at least 6 sequences per step, whatever the number of processes (the
    stratified batch is drawn whole and split by position, so a rank may hold none of a domain)."""
    config = make_test_config(tmp_path, grid={"strategies": ["doge"]},
                              training={"batch_size": 4, "micro_batch_size": 1, "processes": 2})
    with pytest.raises(ConfigError, match=r"grid.strategies \(doge\): the proxy samples each of its 6 training domains.*"
                                          r"batch_size is 4; use batch_size >= 6"):
        grid_config.validate(config)
    config["strategies"] = {"doge": {"target": "qa"}}  # out-of-domain: five domains trained on
    config["training"].update(batch_size=6, micro_batch_size=1)
    grid_config.validate(config)
    config["strategies"] = {}
    config["training"].update(batch_size=6, micro_batch_size=1, processes=3)  # 2 rows per rank: allowed
    grid_config.validate(config)


def test_a_number_given_as_text_is_refused_with_where_it_usually_comes_from(tmp_path):
    with pytest.raises(ConfigError, match=r"grid\.seeds\.0: '0' is not of type 'integer' \(snakemake --config passes"):
        grid_config.validate(make_test_config(tmp_path, grid={"seeds": ["0"]}))


def test_variants_expand_into_named_strategies_checked_like_any_entry(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, grid={
        "strategies": ["uniform", "dograph", "natural"],
        "variants": {"dograph": {"lam": [1, 100.0], "rho": [30]}, "doremi": {"step_size": [0.5]}}}))
    # After their base where the grid lists it, else at the end; values printed as the shortest number.
    assert config["grid"]["strategies"] == ["uniform", "dograph", "dograph@lam=1,rho=30", "dograph@lam=100,rho=30",
                                            "natural", "doremi@step_size=0.5"]
    entry = config["strategies"]["dograph@lam=100,rho=30"]
    assert entry["strategy"] == "dograph" and entry["lam"] == 100.0 and entry["rho"] == 30
    assert entry["update_every"] == config["strategies"]["dograph"]["update_every"]  # the base entry's other values
    assert strategy_runs.strategy_stages(config, "doremi@step_size=0.5") == ("reference", "proxy", "final")
    assert grid_config.validate(config) == config  # a job re-reading the stored config sees the same names
    for variants, message in [
        ({"dograph": {"lamb": [1]}},
         r"grid.variants.dograph \(dograph@lamb=1 over strategies.dograph\): unknown hyperparameter\(s\) \['lamb'\]"),
        ({"dograph": {"lam": ["big"]}},
         r"grid.variants.dograph \(dograph@lam=big over strategies.dograph\): hyperparameter 'lam' must be float"),
        ({"nope": {"a": [1]}}, r"grid.variants.nope \(nope@a=1\): unknown strategy 'nope'"),
        ({"dograph": {"stages": [1]}}, r"\['stages'\] are not hyperparameters"),
        ({"dograph": {"lam": ["a b"]}}, r"'a b' cannot be part of a strategy name"),
        ({"dograph": {"lam": []}}, r"grid.variants.dograph.lam: \[\] should be non-empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            grid_config.validate(make_test_config(tmp_path, grid={"variants": variants}))
    clash = make_test_config(tmp_path, grid={"variants": {"dograph": {"lam": [1]}}},
                             strategies={"dograph@lam=1": {"strategy": "dograph", "lam": 2.0}})
    with pytest.raises(ConfigError, match="strategies.dograph@lam=1: an entry of this name differs"):
        grid_config.validate(clash)


def test_a_variants_stage_problem_names_the_sweep_and_close_values_get_distinct_names(tmp_path):
    config = make_test_config(tmp_path, grid={"variants": {"doremi": {"rounds": [2]}}},
                              stages={"proxy": {"size": "test", "steps": 2}}, training={"warmup_steps": 3})
    with pytest.raises(ConfigError, match=r"training.warmup_steps: 3 is not below the 2 steps \(stages.proxy.steps\) "
                                          r"of grid.variants.doremi \(doremi@rounds=2\)'s proxy, "
                                          r"grid.variants.doremi \(doremi@rounds=2\)'s proxy-r2"):
        grid_config.validate(config)
    close = grid_config.validate(make_test_config(tmp_path, grid={"variants": {"dograph": {"lam": [0.1234567, 0.1234568]}}}))
    assert close["grid"]["strategies"][-2:] == ["dograph@lam=0.1234567", "dograph@lam=0.1234568"]


def test_seq_len_must_fit_the_context_of_every_size_a_run_uses(tmp_path):
    # The test size's context is 64 tokens; tiny's 128.
    with pytest.raises(ConfigError, match=r"^invalid configuration: training\.seq_len: 65 exceeds size 'test''s "
                                          r"context of 64 tokens \(mixbench/model_sizes\.py\), used by grid\.sizes$"):
        grid_config.validate(make_test_config(tmp_path, training={"seq_len": 65}))
    fits = {"training": {"seq_len": 100}, "grid": {"sizes": ["tiny"], "strategies": ["uniform", "doremi", "doge"]}}
    grid_config.validate(make_test_config(tmp_path, stages={"reference": {"size": None}, "proxy": {"size": None}}, **fits))
    # A stage at a size of its own: DoGE's proxy at `test` under tiny final models.
    with pytest.raises(ConfigError, match=r"^invalid configuration: training\.seq_len: 100 exceeds size 'test''s "
                                          r"context of 64 tokens \(mixbench/model_sizes\.py\), used by "
                                          r"strategies\.doge\.stages\.proxy\.size \(strategies\.doge's proxy\)$"):
        grid_config.validate(make_test_config(tmp_path, stages={"reference": {"size": None}, "proxy": {"size": None}},
                                      strategies={"doge": {"stages": {"proxy": {"size": "test"}}}}, **fits))


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_base_file_is_layered_under_the_file_that_names_it(tmp_path):
    # Relative to the repository root, or absolute; a base may name a base of its own.
    child = write_yaml(tmp_path / "child.yaml", {"base": "config/config.yaml", "training": {"steps": 77},
                                                  "grid": {"strategies": ["uniform"]}})
    config = grid_config.load(child)
    assert config["training"]["steps"] == 77 and config["training"]["warmup_steps"] == 20  # the rest: config.yaml's
    assert config["grid"] == {**grid_config.load(REPO / "config" / "config.yaml")["grid"], "strategies": ["uniform"]}
    grandchild = write_yaml(tmp_path / "grandchild.yaml", {"base": child, "training": {"lr": 1e-3}})
    config = grid_config.load(grandchild)
    assert (config["training"]["steps"], config["training"]["lr"]) == (77, 1e-3) and "base" not in config
    # Files given together merge in order, each over its own base.
    assert grid_config.load(REPO / "config" / "paper.yaml", grandchild)["grid"]["sizes"] == ["tiny"]


def test_a_base_cycle_a_missing_base_and_a_stray_base_are_config_errors(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"base": str(tmp_path / "b.yaml")})
    write_yaml(tmp_path / "b.yaml", {"base": str(tmp_path / "a.yaml")})
    with pytest.raises(ConfigError, match=r"^base: config files name each other as base in a cycle: .*a\.yaml -> "
                                          r".*b\.yaml -> .*a\.yaml$"):
        grid_config.load(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"^base: config file not found: .*nowhere\.yaml \(the base of .*c\.yaml\)$"):
        grid_config.load(write_yaml(tmp_path / "c.yaml", {"base": "nowhere.yaml"}))
    with pytest.raises(ConfigError, match=r"^base: the path of a config file to layer this one on, got \['x'\]"):
        grid_config.load(write_yaml(tmp_path / "d.yaml", {"base": ["x"]}))
    with pytest.raises(ConfigError, match=r"^invalid configuration: base: names a config file to layer under"):
        grid_config.validate({**make_test_config(tmp_path), "base": "config/config.yaml"})  # e.g. --config base=...


def test_a_config_file_is_complete_on_its_own(tmp_path):
    # Nothing of config/config.yaml under it: its strategy entries and stage sizes stay out, so a
    # batch too small for DoGE (which this grid does not run) stops nothing.
    config = make_test_config(tmp_path, grid={"strategies": ["uniform"], "seeds": [0]},
                              training={"batch_size": 4, "micro_batch_size": 4})
    config["stages"] = {}
    loaded = grid_config.load(write_config(tmp_path / "alone.yaml", config))
    assert set(loaded["strategies"]) == {"dograph"} and loaded["stages"] == {}
    result = snakemake(tmp_path, tmp_path / "alone.yaml", "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"^train\s+1$", out, flags=re.M), out[-2000:]
    stored = yaml.safe_load(next((tmp_path / "runs" / "configs").glob("*.yaml")).read_text())
    assert set(stored["strategies"]) == {"dograph"} and stored["stages"] == {}
    # Left out, the grid's sizes are an error, not the default grid's tiny.
    del config["grid"]["sizes"]
    result = snakemake(tmp_path, write_config(tmp_path / "sizeless.yaml", config), "-n")
    assert result.returncode != 0 and "mixbench: invalid configuration: grid.sizes: required" in result.stderr


def test_without_a_config_file_the_workflow_runs_the_default_grid_with_config_on_top(tmp_path):
    result = subprocess.run([*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n",
                             "--cores", "1", "--config", "runs_dir=elsewhere"], capture_output=True, text=True,
                            timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # 6 strategies × 3 seeds of tiny; per seed DoReMi's reference and proxy, DoGE's proxy (27
    # training jobs), and RegMix's 7 swarm runs in one pack (and its fit).
    assert re.search(r"^train\s+27$", out, flags=re.M), out[-2000:]
    assert re.search(r"^train_pack\s+3$", out, flags=re.M), out[-2000:]
    assert re.search(r"^fit\s+3$", out, flags=re.M), out[-2000:]
    assert (tmp_path / "elsewhere" / "configs").is_dir() and not (tmp_path / "runs").exists()


def test_a_stage_name_parses_into_its_kind_round_and_replica_and_back():
    stages = {"final": cfg.Stage("final"), "fit": cfg.Stage("fit"), "proxy-r2": cfg.Stage("proxy", round=2),
              "reference": cfg.Stage("reference"), "swarm-12": cfg.Stage("swarm", replica=12)}
    for name, stage in stages.items():
        assert cfg.Stage.parse(name) == stage and str(stage) == name
    assert [cfg.Stage.parse(name).group for name in stages] == ["final", "fit", "proxy-r2", "reference", "swarm"]
    assert cfg.Stage.parse("swarm-2").same_fan_out("swarm-5") and not cfg.Stage.parse("proxy").same_fan_out("proxy")
    assert cfg.describe_stages(["swarm-0", "swarm-1", "fit", "final"]) == "swarm-0 … swarm-1 (2 runs), fit, final"
    for bad in ("proxy-r1", "Final", "swarm-", "", "proxy-r2-3", "warmup", "final-r2", "proxy-3"):
        with pytest.raises(ValueError, match="not a stage"):
            cfg.Stage.parse(bad)


def test_the_stage_wildcards_are_made_of_the_kinds_stage_names_are_parsed_from():
    trained, every = re.compile(cfg.TRAINED_STAGE_PATTERN), re.compile(cfg.STAGE_PATTERN)
    for name in ("reference", "proxy-r2", "reference-r3", "swarm-0", "swarm-12", "final"):
        assert trained.fullmatch(name) and every.fullmatch(name) and cfg.Stage.parse(name)
    assert every.fullmatch("fit") and not trained.fullmatch("fit")
    for name in ("swarm", "final-r2", "fit-3", "warmup", "proxy-3"):
        assert not every.fullmatch(name)
    assert set(cfg.STAGE_KINDS) == {cfg.Stage.parse(n).kind for n in ("reference", "proxy", "swarm-0", "fit", "final")}


def test_a_run_carries_its_parsed_stage_and_its_own_size():
    run = cfg.Run(strategy="doremi", stage="proxy-r2", size="tiny", seed=1)
    assert run.stage == cfg.Stage(kind="proxy", round=2) and run == cfg.Run(strategy="doremi", stage=run.stage,
                                                                            size="tiny", seed=1)
    assert run.label() == "doremi proxy-r2 (size tiny, seed 1)"
    with pytest.raises(ValueError, match="not a stage name: 'proxy-1'"):
        cfg.Run(strategy="doremi", stage="proxy-1", size="tiny", seed=1)
