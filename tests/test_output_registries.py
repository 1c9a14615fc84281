"""The registries of tables and figures (eval/analysis/table_registry.py, figure_registry.py):
every entry can be made and has a caption, and a grid has exactly the outputs its strategies
and settings call for."""

import inspect

import pytest

from conftest import make_test_config
from eval.analysis import figure_registry, result_tables, table_registry
from eval.analysis.figures import draw
from eval.analysis.outputs import CONDITIONS, load
from eval.analysis.plotting import FigureData
from eval.metrics import HELDOUT_METRICS
from mixbench import config as cfg
from registry_expectations import expected_outputs, in_registry_order
from run_fixture import write_grid
from strategies import REGISTRY as STRATEGIES, get_strategy_class


@pytest.mark.parametrize("kind,registry", [("table", table_registry.REGISTRY), ("figure", figure_registry.REGISTRY)])
def test_every_registered_output_has_a_function_and_a_caption(kind, registry):
    for name, entry in registry.items():
        function = load(registry, name, kind)
        assert callable(function) and len(inspect.signature(function).parameters) == 1, name
        assert len(entry.caption.split()) >= 10, name
        assert entry.needs is None or entry.needs in CONDITIONS
        assert entry.strategy is None or entry.strategy in STRATEGIES
    with pytest.raises(KeyError, match=f"unknown {kind} 'nope'; registered {kind}s: "):
        load(registry, "nope", kind)


def test_every_figure_reads_tables_its_grids_have(tmp_path):
    for grid in ({"strategies": ["uniform", "regmix"], "sizes": ["test", "tiny"]},
                 {"strategies": ["uniform", "doremi", "dograph"], "variants": {"doge": {"mu": [0.01, 0.05]}}}):
        config = cfg.validate(make_test_config(tmp_path, grid=grid))
        tables = table_registry.table_names(config)
        for name in figure_registry.figure_names(config):
            assert set(figure_registry.REGISTRY[name].tables) <= set(tables), name


LISTINGS = [(table_registry.REGISTRY, table_registry.table_names),
            (figure_registry.REGISTRY, figure_registry.figure_names)]


def test_fit_tables_and_figures_exist_only_where_a_strategy_has_a_fit_stage(tmp_path):
    fitted = cfg.validate(make_test_config(tmp_path, grid={"strategies": ["uniform", "regmix"]}))
    assert {"fits", "swarm"} <= set(table_registry.table_names(fitted))
    assert "regmix_fit" in figure_registry.figure_names(fitted)
    plain = cfg.validate(make_test_config(tmp_path, grid={"strategies": ["uniform", "doremi"]},
                                          downstream={"tasks": []}))
    assert "doremi_excess" in figure_registry.figure_names(plain)
    for registry, names in LISTINGS:
        fit_outputs = {name for name, entry in registry.items() if entry.needs == "fit stage"}
        assert fit_outputs <= set(names(fitted)) and not fit_outputs & set(names(plain))
        assert names(fitted) == expected_outputs(registry, strategies=["uniform", "regmix"],
                                                 holds={"downstream", "fit stage"})
        assert names(plain) == expected_outputs(registry, strategies=["uniform", "doremi"])
        assert in_registry_order(names(fitted), registry) and in_registry_order(names(plain), registry)


def test_a_strategy_bound_output_appears_exactly_in_the_grids_that_run_its_strategy(tmp_path):
    candidates = ["uniform", "natural", "doremi", "doge", "dograph", "regmix"]
    bound = [(registry, names, name, entry) for registry, names in LISTINGS
             for name, entry in registry.items() if entry.strategy is not None]
    assert bound  # DoReMi's excess loss and DoGraph's gradient figures at least
    for registry, names, name, entry in bound:
        owner = get_strategy_class(entry.strategy)
        others = [s for s in candidates if not issubclass(get_strategy_class(s), owner)]
        grid = list(dict.fromkeys(["uniform", entry.strategy]))
        with_it = cfg.validate(make_test_config(tmp_path, grid={"strategies": grid}))
        without = cfg.validate(make_test_config(tmp_path, grid={"strategies": others}))
        assert name not in names(without), (name, others)
        if entry.needs is None or CONDITIONS[entry.needs](with_it):
            assert name in names(with_it), name


def test_the_sweep_legend_names_each_line_once(tmp_path):
    config = cfg.validate(make_test_config(tmp_path, grid={"strategies": ["uniform", "dograph"],
                                                           "variants": {"dograph": {"lam": [1, 100]}}},
                                           downstream={"tasks": []}))
    write_grid(config)
    result_tables.perplexity(result_tables.Results(config))  # the one table the figure reads
    fig = draw(FigureData(config), "sweeps")
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    # Before, the base strategy was named twice: by its swept line and by its own.
    assert sorted(labels) == ["dograph (as configured)", "swept lam", "uniform"]
    fig.clf()


def test_one_metric_is_the_primary_one_and_each_shown_metric_has_a_format():
    assert [m.name for m in HELDOUT_METRICS if m.primary] == ["bits_per_byte"]
    assert len({m.column for m in HELDOUT_METRICS}) == len(HELDOUT_METRICS)
    for metric in HELDOUT_METRICS:
        assert format(1.5, metric.number_format) and (metric.label is None or metric.label.islower())


def test_the_two_halves_of_eval_never_import_each_other():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "eval"
    for half, other in (("harness", "analysis"), ("analysis", "harness")):
        for path in (root / half).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == f"eval.{other}" or n.startswith(f"eval.{other}.") for n in names), (path, names)
