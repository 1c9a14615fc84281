"""The paper grid's structure: reference and proxy runs shared across final sizes, the whole
paper DAG offline, and its CPU rehearsal (config/rehearsal.yaml) end to end."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FIXTURE_CORPUS, REPO, job_counts, make_test_config, snakemake, write_config
from corpus import budget
from mixbench import config as cfg
from strategies import grid_config
from strategies import runs as strategy_runs
from mixbench.errors import ConfigError

PAPER, REHEARSAL, DEFAULT = REPO / "config" / "paper.yaml", REPO / "config" / "rehearsal.yaml", REPO / "config" / "config.yaml"


def planned_outputs(output: str) -> set[str]:
    return set(re.findall(r"^\s+output: (\S+/run\.json)", output, flags=re.M))


@pytest.mark.parametrize("stage_size, trains", [("test", 4 + 2 + 1), (None, 4 + 2 * 2 + 2 * 1)])
def test_a_fixed_size_stage_is_trained_once_for_every_final_size(tmp_path, stage_size, trains):
    # 2 final sizes × 2 strategies with stages, 1 seed: 4 final models, plus DoReMi's reference
    # and proxy and DoGE's proxy, once if their size is fixed, once per final size otherwise.
    stage = {"size": stage_size, "steps": 10}
    config = make_test_config(tmp_path, grid={"sizes": ["test", "tiny"], "strategies": ["doremi", "doge"], "seeds": [0]},
                              stages={"reference": stage, "proxy": stage}, training={"batch_size": 12, "micro_batch_size": 12})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config), "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = job_counts(out)
    assert jobs["train"] == trains and jobs["evaluate"] == 4, out[-2000:]
    proxies = {p for p in planned_outputs(out) if "/proxy/" in p}
    if stage_size:
        assert proxies == {f"{tmp_path}/runs/test/{s}/seed0/proxy/run.json" for s in ("doremi", "doge")}
    else:
        assert {Path(p).parts[-5] for p in proxies} == {"test", "tiny"}  # under each final size


def test_the_paper_grid_plans_every_strategy_offline(tmp_path):
    result = snakemake(tmp_path, PAPER, "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # The corpus build's time limit: (300 GB read + 49.6 GB kept) at a hub stream's 20 MB/s × 1.5, plus 10 minutes.
    build_job = re.search(r"^rule build_corpus:\n(?:    .*\n)+", out, flags=re.M).group(0)
    assert re.search(r"^    resources: .*\bruntime=447\b", build_job, flags=re.M), build_job
    jobs = job_counts(out)
    # 14 strategies × 3 sizes × 3 seeds final models; per seed one DoReMi reference and proxy
    # (GPT-2 small), one DoGE proxy and one Chameleon proxy (82M), RegMix's 512 swarm runs (1M
    # class) in 32 packs of 16 and Skill-It's 7 one-domain runs (GPT-2 small) in one pack, shared
    # by the three final sizes; one RegMix fit per final model (a second, trains nothing).
    assert jobs["train"] == 126 + 3 * 4 and jobs["train_pack"] == 3 * (32 + 1), out[-2000:]
    assert jobs["evaluate"] == 126 and jobs["fit"] == 9, out[-2000:]
    stages = {p for p in planned_outputs(out) if "/final/" not in p}
    assert {str(Path(p).relative_to("runs/paper").parent) for p in stages} == {  # relative to --directory
        *(f"small/doremi/seed{s}/{stage}" for s in range(3) for stage in ("reference", "proxy")),
        *(f"proxy-82m/{strategy}/seed{s}/proxy" for strategy in ("doge", "chameleon") for s in range(3)),
        *(f"{size}/regmix/seed{s}/fit" for size in ("small", "medium", "large") for s in range(3))}
    packs = set(re.findall(r"^\s+output: (\S+/packs/\S+)", out, flags=re.M))  # and each seed's whole swarm
    assert packs == {f"runs/paper/regmix-1m/regmix/seed{s}/packs/swarm{part}.json" for s in range(3)
                     for part in ("", *(f"-{r}-{r + 15}" for r in range(0, 512, 16)))} | {
        f"runs/paper/small/skillit/seed{s}/packs/swarm{part}.json" for s in range(3) for part in ("", "-0-6")}
    # Seed by seed: seed 0's final models start before seed 1's swarm; within a seed a strategy's
    # earlier stages start first.
    blocks = re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out)
    priority = {re.search(r"output: (\S+)", b).group(1): int(re.search(r"priority: (\d+)", b)[1] if "priority:" in b else 0)
                for b in blocks if re.search(r"rule (train|train_pack|fit):", b)}
    of = lambda seed, part: [p for path, p in priority.items() if f"/seed{seed}/{part}" in path]
    assert min(of(0, "final")) > max(of(1, "packs/")) and min(of(1, "final")) > max(of(2, "reference"))
    regmix = lambda seed, part: [p for path, p in priority.items() if f"/regmix/seed{seed}/{part}" in path]
    assert min(regmix(1, "packs/")) > max(regmix(1, "fit")) > max(regmix(1, "final"))
    assert min(of(2, "reference")) > max(of(2, "proxy")) > max(of(2, "final"))


def test_a_stage_larger_than_its_final_model_is_refused_unless_allowed(tmp_path):
    big = {"reference": {"size": "tiny", "steps": 10}, "proxy": {"size": "tiny", "steps": 10}}
    config = make_test_config(tmp_path, grid={"sizes": ["test"], "strategies": ["doremi"]}, stages=big)
    with pytest.raises(ConfigError, match=r"stage 'proxy' uses size 'tiny' \(396,544 non-embedding parameters\), larger "
                                          r"than the final size 'test' it feeds \(12,704\); if this is intended, set "
                                          r"`allow_larger_than_final: true` in stages.proxy"):
        grid_config.validate(config)
    allowed = {kind: {**spec, "allow_larger_than_final": True} for kind, spec in big.items()}
    grid_config.validate(make_test_config(tmp_path, grid={"sizes": ["test"], "strategies": ["doremi"]}, stages=allowed))
    # A strategy's own entry overrides the global one, both ways.
    revoked = make_test_config(tmp_path, grid={"sizes": ["test"], "strategies": ["doge"]}, stages=allowed,
                               strategies={"doge": {"stages": {"proxy": {"allow_larger_than_final": False}}}})
    with pytest.raises(ConfigError, match="stage 'proxy' uses size 'tiny'"):
        grid_config.validate(revoked)
    granted = make_test_config(tmp_path, grid={"sizes": ["test"], "strategies": ["doge"]},
                               strategies={"doge": {"stages": {"proxy": {"size": "tiny", "allow_larger_than_final": True}}}})
    grid_config.validate(granted)


def test_a_run_fingerprint_follows_its_upstream_runs_but_not_the_final_size_it_feeds(tmp_path):
    def fingerprints(**stages):
        config = grid_config.validate(make_test_config(tmp_path, grid={"sizes": ["test", "tiny"], "strategies": ["doremi"]},
                                               stages=stages))
        chains = {size: strategy_runs.cell_runs(config, size, "doremi") for size in ("test", "tiny")}
        proxy = {size: strategy_runs.run_fingerprint(config, "doremi", {s: c for s, c in chain.items() if s != "final"})
                 for size, chain in chains.items()}
        return proxy, {size: strategy_runs.run_fingerprint(config, "doremi", chain) for size, chain in chains.items()}

    proxy, final = fingerprints()
    assert proxy["test"] == proxy["tiny"]  # one shared run
    longer_reference, final_after = fingerprints(reference={"size": "test", "steps": 12})
    assert longer_reference["test"] != proxy["test"] and final_after["tiny"] != final["tiny"]


def test_a_run_of_a_fixed_size_stage_refuses_another_size(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, grid={"sizes": ["test", "tiny"], "strategies": ["doremi"]}))
    chain = strategy_runs.strategy_stages(config, "doremi")
    assert strategy_runs.cell_runs(config, "tiny", "doremi") == {
        "reference": {"size": "test", "steps": 10}, "proxy": {"size": "test", "steps": 10}, "final": {"size": "tiny", "steps": 30}}
    with pytest.raises(ConfigError, match="stage 'proxy' is configured at size 'test', not 'tiny'"):
        cfg.resolve_stages(config, "doremi", chain[:2], "tiny")
    with pytest.raises(ConfigError, match="stage 'proxy' is configured at size 'test', not 'tiny'"):
        strategy_runs.run_chain(config, "doremi", "proxy", "tiny")
    assert list(strategy_runs.run_chain(config, "doremi", "proxy", "test")) == ["reference", "proxy"]
    with pytest.raises(ConfigError, match=r"strategy 'uniform' has no stage 'proxy'; its runs: final$"):
        strategy_runs.run_chain(config, "uniform", "proxy", "test")


def test_the_rehearsal_is_refused_without_the_paper_grid_under_it():
    with pytest.raises(ConfigError, match="overlay of the 'paper' grid, which was not loaded"):
        grid_config.load(DEFAULT, REHEARSAL)
    config = grid_config.load(DEFAULT, PAPER, REHEARSAL)
    assert config["grid"]["strategies"] == yaml.safe_load(PAPER.read_text())["grid"]["strategies"]
    assert config["grid"]["sizes"] == ["rehearsal-small", "rehearsal-medium", "rehearsal-large"]


# SlimPajama-627B's published token shares, in paper.yaml's domain order (ArXiv, Book, C4,
# CommonCrawl, GitHub, StackExchange, Wikipedia): what `natural` samples.
SLIMPAJAMA_627B_SHARES = [0.046, 0.042, 0.267, 0.522, 0.052, 0.033, 0.038]
BYTES_PER_GPT2_TOKEN = 4.5  # the paper config's conservative assumption (see its corpus comment)
LEARNED_MARGIN = 1.2  # room for learned mixtures that move away from the published ones


def paper_epochs(config: dict) -> dict[tuple[str, str, str], np.ndarray]:
    """{(size, mixture, stage): epochs per domain} for every fixed mixture of the paper grid, with
    each domain's train tokens = its byte cap × the train fraction / 4.5 bytes per token."""
    corpus, training = config["corpus"], config["training"]
    domains = corpus["domains"]
    train_fraction = 1 - corpus["val_fraction"] - corpus["test_fraction"]
    available = np.array([cfg.domain_cap(corpus, d) for d in domains]) * train_fraction / BYTES_PER_GPT2_TOKEN
    published = {name: config["strategies"][name]["weights"] for name in ("doremi_published", "doge_published")}
    final = {"uniform": [1.0] * len(domains), "natural": SLIMPAJAMA_627B_SHARES, **published}
    out = {}
    for size in config["grid"]["sizes"]:
        stages = {**strategy_runs.cell_runs(config, size, "doremi"), **strategy_runs.cell_runs(config, size, "doge")}
        runs = [(name, "final", weights) for name, weights in final.items()]
        runs += [("natural", "reference", SLIMPAJAMA_627B_SHARES), ("uniform", "proxy", [1.0] * len(domains))]
        for name, stage, weights in runs:
            w = np.asarray(weights, dtype=float) / sum(weights)
            planned = budget.planned_tokens(stages[stage]["steps"], training["batch_size"], training["seq_len"])
            out[size, name, stage] = budget.epochs(w * planned, available)
    return out


def test_the_paper_caps_keep_every_fixed_mixture_within_one_epoch_with_margin():
    config = grid_config.load(DEFAULT, PAPER)
    assert config["corpus"]["dataset"] == "cerebras/SlimPajama-627B"  # the shares above are its own
    assert config["grid"]["sizes"] == ["small", "medium", "large"]
    epochs = paper_epochs(config)
    assert config["training"]["steps"] * config["training"]["batch_size"] * config["training"]["seq_len"] == 5_242_880_000
    worst = max(e.max() for e in epochs.values())
    assert worst <= 1 and worst * LEARNED_MARGIN <= 1, {k: e.round(3).tolist() for k, e in epochs.items()}
    assert worst == pytest.approx(0.833, abs=0.001)  # the number the paper.yaml comment gives
    # Every size trains the same tokens, so the same epochs; the stages are half as long.
    assert all((epochs["large", n, "final"] == epochs["small", n, "final"]).all() for n in ("uniform", "natural"))
    assert max(e.max() for (_, _, stage), e in epochs.items() if stage != "final") <= 0.42
    # The check bites: a lower cap on one domain repeats it.
    lowered = copy.deepcopy(config)
    lowered["corpus"]["max_bytes_per_domain"]["RedPajamaArXiv"] //= 2
    assert max(e.max() for e in paper_epochs(lowered).values()) > 1


SIZES = ["rehearsal-small", "rehearsal-large"]
STRATEGIES = ["uniform", "doremi", "doge", "dograph"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The rehearsal on the fixture corpus with one seed and shorter runs: paper grid, then
    rehearsal overlay, then this one (paths, corpus, length)."""
    root = tmp_path_factory.mktemp("rehearsal")
    test = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())
    domains = test["corpus"]["domains"]  # six, where the paper has seven: fold the last two together
    published = {name: entry["weights"][:5] + [round(sum(entry["weights"][5:]), 6)]
                 for name, entry in yaml.safe_load(PAPER.read_text())["strategies"].items() if "weights" in entry}
    overlay = {
        "data_dir": str(root / "data"), "runs_dir": str(root / "runs"), "results_dir": str(root / "results"),
        "corpus": {"source": "jsonl", "path": str(FIXTURE_CORPUS), "domains": domains, "max_bytes_per_domain": 100000,
                   "val_fraction": 0.1, "test_fraction": 0.1, "min_split_documents": 3},
        "tokenizer": {"vocab_size": 512},
        # Two of the three sizes: enough for shared stages and the size figure, a third of the jobs less.
        # Every strategy with stages or moving weights; the static mixtures (natural, the published
        # ones) are trained in tests/test_training.py and test_workflow.py, and a list-form
        # mixture is read in corpus order in tests/test_strategies.py. The published entries are
        # still folded onto the six domains below, so that the merged config stays consistent
        # (only the grid's entries are validated).
        "grid": {"seeds": [0], "sizes": ["rehearsal-small", "rehearsal-large"], "strategies": STRATEGIES},
        # DoGE's stratified proxy batch needs a sequence per domain in its target half.
        "training": {"steps": 20, "batch_size": 12, "micro_batch_size": 12, "seq_len": 32, "warmup_steps": 2},
        "stages": {"reference": {"steps": 10}, "proxy": {"steps": 10}},
        "evaluation": test["evaluation"],
        # Downstream tasks are scored end to end in tests/test_workflow.py.
        "downstream": {**test["downstream"], "tasks": []},
        "strategies": {"doge": {"stages": {"proxy": {"steps": 10}}},
                       "dograph": {**test["strategies"]["dograph"], "update_every": 5},
                       **{name: {"weights": w} for name, w in published.items()}},
    }
    result = snakemake(root, [PAPER, REHEARSAL, write_config(root / "overlay.yaml", overlay)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return root, published




def test_the_rehearsal_trains_each_shared_stage_once_and_every_final_model(rehearsal):
    root, _ = rehearsal
    runs = sorted(str(p.parent.relative_to(root / "runs")) for p in (root / "runs").rglob("run.json"))
    finals = [f"{size}/{s}/seed0/final" for size in SIZES for s in STRATEGIES]
    stages = ["rehearsal-small/doremi/seed0/reference", "rehearsal-small/doremi/seed0/proxy",
              "rehearsal-proxy/doge/seed0/proxy"]
    assert runs == sorted(finals + stages)
    compute = pd.read_csv(root / "results" / "tables" / "compute.csv")
    proxies = compute[compute.stage == "proxy"].set_index(["strategy", "size"])["run"]
    assert all(proxies["doremi", size] == "rehearsal-small/doremi/seed0/proxy" for size in SIZES)
    assert all(proxies["doge", size] == "rehearsal-proxy/doge/seed0/proxy" for size in SIZES)


def test_the_rehearsal_reaches_every_table_and_figure(rehearsal):
    root, _ = rehearsal
    long = pd.read_csv(root / "results" / "tables" / "perplexity.csv")
    assert list(dict.fromkeys(long["size"])) == SIZES and list(dict.fromkeys(long["strategy"])) == STRATEGIES
    assert len(long) == len(SIZES) * len(STRATEGIES) * 6 and long["bits_per_byte"].between(0.5, 12).all()
    figures = root / "results" / "figures"
    for name in ("bpb_vs_size", "compute_vs_quality", "dograph_graph", "gradient_pca"):
        assert (figures / f"{name}.png").stat().st_size > 0 and (figures / f"{name}.pdf").stat().st_size > 0
    trajectories = pd.read_csv(root / "results" / "tables" / "trajectories.csv")
    online = trajectories[(trajectories.strategy == "dograph") & (trajectories.stage == "final")]
    for _, run in online.groupby(["size", "seed"]):  # from log.csv: the weights each step sampled with
        weights = run.pivot(index="step", columns="domain", values="weight")
        changed = weights.index[1:][(weights.diff().abs().iloc[1:] > 0).any(axis=1)].tolist()
        assert changed == [6, 11, 16]  # DoGraph's online schedule: updates after steps 5, 10, 15, not the last


def test_the_cost_plan_counts_a_shared_stage_once_per_seed_and_matches_a_hand_estimate(tmp_path):
    from eval.analysis.plan import measured_ratios, plan
    from eval.analysis.plan_costs import MfuTable

    config = grid_config.validate(make_test_config(tmp_path, grid={"sizes": ["test", "tiny"], "strategies": ["uniform", "doremi"]}))
    one_mfu = MfuTable(((float("inf"), 0.5, 0.5),))
    summary = plan(config, peak_tflops=100.0, mfu=one_mfu).set_index(["size", "strategy", "stage"])
    proxy = summary.loc["test", "doremi", "proxy"]
    assert proxy["runs"] == 2 and proxy["feeds"] == "test, tiny"  # two seeds, shared by both final sizes
    assert summary.loc["tiny", "doremi", "final"]["runs"] == 2 and ("tiny", "doremi", "proxy") not in summary.index
    # tiny (2 layers, 128 wide, 128 positions) with the test config's 512-token BPE, 30 steps of 8 × 32 tokens.
    n = 512 * 128 + 128 * 128 + 2 * (12 * 128 * 128 + 13 * 128) + 2 * 128
    per_run = (6 * n + 12 * 2 * 128 * 32) * (30 * 8 * 32) / (0.5 * 100e12) / 3600
    assert summary.loc["tiny", "uniform", "final"]["optimistic_hours"] == pytest.approx(2 * per_run, rel=1e-12)
    # A measured compute table scales each stage by its FLOPs over its training FLOPs.
    table = tmp_path / "compute.csv"
    pd.DataFrame({"strategy": ["uniform", "doremi", "doremi", "doremi"], "stage": ["final", "reference", "proxy", "final"],
                  "flops": [6.0, 6.0, 8.0, 6.0], "train_flops": [6.0, 6.0, 6.0, 6.0]}).to_csv(table, index=False)
    ratios = measured_ratios(table)
    assert ratios["doremi", "proxy"] == pytest.approx(8 / 6)
    scaled = plan(config, ratios, peak_tflops=100.0, mfu=one_mfu).set_index(["size", "strategy", "stage"])
    assert scaled.loc["test", "doremi", "proxy"]["optimistic_hours"] == pytest.approx(
        proxy["optimistic_hours"] * (8 / 6) / proxy["ratio"])
    assert scaled.loc["test", "doremi", "proxy"]["ratio_origin"] == "given"


def test_a_flop_ratio_given_by_hand_overrides_and_is_checked(tmp_path, capsys):
    from eval.analysis.plan import main as plan_main, parse_ratio

    assert parse_ratio("dograph:final=1.25") == (("dograph", "final"), 1.25)
    for bad in ("dograph=1.2", "dograph:final=0.5", "dograph:final=x"):
        with pytest.raises(ConfigError, match="expected STRATEGY:STAGE=X with X >= 1"):
            parse_ratio(bad)
    config_file = write_config(tmp_path / "c.yaml", make_test_config(tmp_path, grid={"strategies": ["uniform", "doremi"]}))
    table = tmp_path / "compute.csv"
    pd.DataFrame({"strategy": ["uniform"], "stage": ["final"], "flops": [6.0], "train_flops": [6.0]}).to_csv(table)
    # A measured table without DoReMi's runs leaves theirs derived; a ratio by hand is over both.
    plan_main(["--config", str(config_file), "--flop-ratios", str(table), "--ratio", "doremi:proxy=1.5"])
    out = capsys.readouterr().out
    assert re.search(r"\| test doremi proxy .*\| 1\.5 \(given\) ", out) and re.search(r"\| test doremi reference .*\| 1 \(derived\) ", out)
    assert re.search(r"\| test uniform final .*\| 1 \(given\) ", out)
