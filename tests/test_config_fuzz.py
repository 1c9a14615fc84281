"""Fuzzing ``mixbench.config.validate``: a valid config with one field broken is either accepted
or refused with a ConfigError that names the field, never with another exception.

Each example starts from a valid config (the test config, the same with every strategy, a static
mixture, a sweep and per-size/per-domain mappings, and config/config.yaml) and makes one
mutation: a value replaced by one of the wrong type, out of range, non-finite or an unknown name
(strategy, size, domain, signal); a key deleted; an unknown key added to a mapping; an item
appended to a list.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, make_test_config
from mixbench import config as cfg
from strategies import grid_config
from mixbench.errors import ConfigError

UNKNOWN_NAMES = ["unifrom", "huge", "poetry", "example_gradient_featurez", "doremi@lam=1"]
VALUES = [
    # wrong types
    "0.1", "", "a b", None, True, False, [], ["x"], [1], {}, {"x": 1}, [[]],
    # out of range
    -1, 0, 1, 2.5, 0.5, 10 ** 12, 10 ** 400, 1e300, -1e-300, float("nan"), float("inf"), float("-inf"),
    # names, known and unknown
    "tiny", "small", "test", "doremi", "static", "code", *UNKNOWN_NAMES,
]
KEYS = ["bogus", *UNKNOWN_NAMES, "default"]
MIN_EXAMPLES = 500


def full_config(root) -> dict:
    """The test config with every strategy, a static mixture, a sweep and per-name mappings."""
    domains = make_test_config(root)["corpus"]["domains"]
    return make_test_config(
        root,
        grid={"sizes": ["test"], "strategies": ["uniform", "natural", "doremi", "doge", "dograph", "pile"],
              "variants": {"dograph": {"lam": [1, 100]}, "doremi": {"step_size": [0.5]}}},
        corpus={"max_bytes_per_domain": {"code": 200000, "default": 100000}},
        training={"micro_batch_size": {"test": 4, "default": 4}, "batch_size": 12},
        strategies={"pile": {"strategy": "static", "weights": dict.fromkeys(domains, 0.125) | {"code": 0.375}},
                    "doge": {"target": "mix", "stages": {"proxy": {"steps": 12}}}, "doremi": {"rounds": 2}})


def paths(value, prefix=()) -> list[tuple]:
    """Every path into a nested config, containers included."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def absent_fields(config: dict) -> list[tuple]:
    """Fields of the schema's sections that the config leaves to their defaults."""
    schema = cfg.load_schema()["properties"]
    return [(section, field) for section, spec in schema.items() if isinstance(config.get(section), dict)
            for field in spec.get("properties", {}) if field not in config[section]]


@dataclass(frozen=True)
class Start:
    name: str
    config: dict = field(repr=False)
    present: list = field(repr=False)  # paths into it
    absent: list = field(repr=False)  # fields it leaves to their defaults

    def _repr_pretty_(self, printer, cycle):  # how Hypothesis shows a failing example: by name only
        printer.text(f"Start({self.name!r})")


@pytest.fixture(scope="module")
def starts(tmp_path_factory) -> list[Start]:
    root = tmp_path_factory.mktemp("fuzz")
    configs = {"test": make_test_config(root), "full": full_config(root),
               "default": yaml.safe_load((REPO / "config" / "config.yaml").read_text())}
    for config in configs.values():
        grid_config.validate(config)  # every start is valid: a refusal below is the mutation's
    return [Start(name, config, paths(config), absent_fields(config)) for name, config in configs.items()]


def _get(config, path):
    for key in path:
        config = config[key]
    return config


def parent(config, path):
    return _get(config, path[:-1])


def mutate(config: dict, start: Start, data) -> tuple:
    """One mutation of ``config`` (a copy of ``start.config``) in place; returns the path it touched."""
    kind = data.draw(st.sampled_from(["replace", "delete", "add_key", "append"]), label="kind")
    if kind in ("add_key", "append"):
        containers = [p for p in start.present if isinstance(_get(config, p), dict if kind == "add_key" else list)]
        path = data.draw(st.sampled_from([(), *containers] if kind == "add_key" else containers), label="container")
        target = _get(config, path)
        value = data.draw(st.sampled_from(VALUES), label="value")
        if kind == "add_key":
            key = data.draw(st.sampled_from(KEYS), label="key")
            target[key] = value
            return (*path, key)
        target.append(value)
        return (*path, len(target) - 1)
    path = data.draw(st.sampled_from(start.present if kind == "delete" else start.present + start.absent), label="path")
    container = parent(config, path)
    if kind == "delete":
        del container[path[-1]]
    else:
        container[path[-1]] = data.draw(st.sampled_from(VALUES), label="value")
    return path


def names(problem: str, path: tuple) -> bool:
    """The problem names the mutated field, a field inside it, or a containing field of at least
    two components (e.g. strategies.pile for strategies.pile.weights.code: the strategy's own
    check says which hyperparameter)."""
    dotted = [".".join(map(str, path[:k])) for k in range(min(2, len(path)), len(path) + 1)]
    return any(re.search(rf"(?<![\w.@=]){re.escape(d)}(?![\w@=])", problem) for d in dotted)


def check_refusal(message: str, path: tuple) -> None:
    """A refusal's message: one line per problem (a single problem is a single line), each
    starting with the field it is about; one of them names the mutated field. (One mutation may
    cause several problems, e.g. deleting `training` leaves both seq_len and warmup_steps to
    defaults that do not fit the test config.)"""
    first, *others = message.split("\n")
    head = re.match(r"invalid configuration(?: \((\d+) problems\))?: ", first)
    assert head, message
    # One problem: one line. Several: the first on the first line, one per line below.
    assert int(head[1] or 1) == 1 + len(others) and all(line.startswith("  - ") for line in others), message
    problems = [first[head.end():], *(line[4:] for line in others)]
    leading_field = re.compile(r"^[\w@=,.+-]+(?: \([^)]*\))?:")  # a dotted path (a variant's, named)
    assert all(leading_field.match(p) for p in problems), message
    assert any(names(p, path) for p in problems), (path, message)


examples = []


@settings(max_examples=MIN_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_broken_config_is_accepted_or_refused_with_its_field_named(starts, data):
    start = data.draw(st.sampled_from(starts), label="start")
    config = copy.deepcopy(start.config)
    path = mutate(config, start, data)
    examples.append(path)
    try:
        grid_config.validate(config)
    except ConfigError as exc:
        check_refusal(str(exc), path)


def test_the_fuzzer_ran_its_examples_and_reached_every_section():
    """Runs after the fuzz test (file order): it made its examples, over every top-level section."""
    if not examples:
        pytest.skip("the fuzz test did not run (deselected)")
    assert len(examples) >= MIN_EXAMPLES
    assert {p[0] for p in examples if p} >= {"corpus", "tokenizer", "grid", "training", "stages", "evaluation",
                                            "downstream", "strategies"}
