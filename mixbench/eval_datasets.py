"""Which Hugging Face datasets the grid's lm-eval registry tasks read, and whether the local
datasets cache holds them (evaluation runs offline: eval/harness/lm.py).

The dataset of a task (``dataset_path``, ``dataset_name``, ``dataset_kwargs``) is read from
lm-eval's task index, which parses the task YAMLs without loading any data; groups and tags are
expanded into their tasks. Indexing the registry takes ~15 s, so the answers are kept per lm-eval
version in a JSON file next to the workflow's list of task names.

Offline, ``datasets`` (5.x) loads a hub dataset only from its own Arrow cache
(``HF_DATASETS_CACHE``, by default ``~/.cache/huggingface/datasets``): ``{namespace}___{name}/
{config}/{version}/{hash}/`` with a ``dataset_info.json``. Files in the hub cache
(``~/.cache/huggingface/hub``) alone do not load offline. The check asks ``datasets``' own
lookup of that cache (``packaged_modules.cache.cache._find_hash_in_cache``, what
``load_dataset`` runs offline), so it agrees with the evaluation by construction.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from mixbench.errors import DataError
from mixbench.io import write_text

# Offline groups written from the corpus's own test split by eval.harness.downstream_tasks: nothing to download.
GENERATED_TASKS = ("mixbench_cloze", "mixbench_choice")


@dataclass(frozen=True)
class DatasetSpec:
    """The arguments lm-eval gives ``datasets.load_dataset`` for one task."""
    path: str | None  # None: the task builds its data in Python (no dataset_path in its YAML)
    name: str | None = None
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        return self.path + (f" ({self.name})" if self.name else "") if self.path else "(no dataset_path)"

    def load_call(self) -> str:
        """The Python call that downloads it into the cache, on a machine with network."""
        args = [repr(self.path)] + ([repr(self.name)] if self.name else [])
        args += [f"{key}={value!r}" for key, value in sorted(self.kwargs.items())]
        return f"datasets.load_dataset({', '.join(args)})"


def registry_tasks(names: Iterable[str]) -> list[str]:
    """The configured downstream tasks that come from lm-eval's registry (not generated here)."""
    return [name for name in names if name not in GENERATED_TASKS]


def _spec(task: dict) -> DatasetSpec:
    kwargs = dict(task.get("dataset_kwargs") or {})
    kwargs.pop("trust_remote_code", None)  # lm-eval drops it under datasets 4+ (scripts no longer load)
    return DatasetSpec(task.get("dataset_path"), task.get("dataset_name"), kwargs)


def _expand(name_or_item, index: dict, seen: set) -> list[DatasetSpec]:
    """The datasets of one task, group, tag or inline group item of lm-eval's index."""
    if isinstance(name_or_item, dict):
        if "task" in name_or_item and not isinstance(name_or_item["task"], list):
            base = _expand(name_or_item["task"], index, seen)
            overrides = {k: v for k, v in name_or_item.items() if k.startswith("dataset_")}
            return [_spec({"dataset_path": s.path, "dataset_name": s.name, "dataset_kwargs": s.kwargs, **overrides})
                    for s in base]
        return [spec for item in name_or_item.get("task", []) for spec in _expand(item, index, seen)]
    if name_or_item in seen:
        return []
    seen.add(name_or_item)
    entry = index.get(name_or_item)
    if entry is None:
        raise DataError(f"downstream task {name_or_item!r} is not in lm-eval's task index")
    kind = entry.kind.name
    if kind == "TAG":
        return [spec for task in sorted(entry.tags) for spec in _expand(task, index, seen)]
    if kind == "GROUP":
        return [spec for item in entry.cfg.get("task", []) for spec in _expand(item, index, seen)]
    return [_spec(entry.cfg or {})]


def task_datasets(names: list[str], cache_file: Path | None = None, include_path: str | None = None,
                  include_defaults: bool = True) -> dict[str, list[DatasetSpec]]:
    """{task: the datasets it reads} for registry task names, from ``cache_file`` where it has them."""
    known: dict = {}
    if cache_file is not None and cache_file.is_file():
        known = json.loads(cache_file.read_text(encoding="utf-8"))
    missing = [name for name in names if name not in known]
    if missing:
        from lm_eval.tasks import TaskManager

        index = TaskManager(include_path=include_path, include_defaults=include_defaults).task_index
        for name in missing:
            known[name] = [asdict(spec) for spec in dict.fromkeys(_expand(name, index, set()))]
        if cache_file is not None:
            write_text(cache_file, json.dumps(known, indent=1, sort_keys=True) + "\n")
    return {name: [DatasetSpec(**spec) for spec in known[name]] for name in names}


def cache_problem(spec: DatasetSpec, cache_dir: str | Path) -> str | None:
    """Why ``load_dataset`` would not find ``spec`` in the datasets cache offline; None if it would."""
    if spec.path is None:
        return "the task has no dataset_path: its data cannot be checked offline"
    from datasets.packaged_modules.cache.cache import _find_hash_in_cache

    try:
        _find_hash_in_cache(dataset_name=spec.path, config_name=spec.name, cache_dir=str(cache_dir),
                            config_kwargs=spec.kwargs, custom_features=None)
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def default_cache_dir() -> Path:
    """Where ``datasets`` keeps its Arrow cache here (HF_DATASETS_CACHE, else under HF_HOME); the
    variable read now, not when ``datasets`` was imported."""
    import datasets

    return Path(os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE)


def download(specs: Iterable[DatasetSpec]) -> None:
    """Fill the datasets cache (needs network): what the evaluation later reads offline."""
    import datasets

    for spec in dict.fromkeys(specs):
        if spec.path is not None:
            print(f"downloading {spec.describe()}", flush=True)
            datasets.load_dataset(spec.path, spec.name, **spec.kwargs)
