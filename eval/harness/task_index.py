"""Which downstream task names exist: the generated offline groups and lm-eval's registry.

Indexing lm-eval's registry takes ~20 s, so the set of names is cached per lm-eval version;
the workflow checks configured names against it before any job runs. This module imports
no Hugging Face library at import time (the workflow process must not switch them offline).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Iterable

from mixbench.errors import ConfigError
from mixbench.eval_datasets import GENERATED_TASKS
from mixbench.io import write_text

GENERATED = GENERATED_TASKS  # written by eval.harness.downstream_tasks; the preflight knows them too


def registry_names(cache_dir: str | Path | None = None) -> set[str]:
    """Every task, group and tag name in lm-eval's built-in registry."""
    import lm_eval

    cache = Path(cache_dir) / f"lm_eval-{lm_eval.__version__}-tasks.json" if cache_dir else None
    if cache is not None and cache.is_file():
        return set(json.loads(cache.read_text(encoding="utf-8")))
    from lm_eval.tasks import TaskManager

    names = set(TaskManager().all_tasks)
    if cache is not None:
        write_text(cache, json.dumps(sorted(names)) + "\n")
    return names


def check_task_names(names: Iterable[str], cache_dir: str | Path | None = None) -> None:
    """Raise ConfigError for a name that is neither generated nor in lm-eval's registry."""
    outside = [n for n in names if n not in GENERATED]
    unknown_generated = [n for n in outside if n.startswith("mixbench_")]
    if unknown_generated:
        raise ConfigError(f"downstream.tasks: {unknown_generated} are not generated tasks; "
                          f"the generated ones are {list(GENERATED)}")
    if not outside:
        return
    known = registry_names(cache_dir)
    for name in outside:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"downstream.tasks: {name!r} is not a task in lm-eval's registry{hint}")
