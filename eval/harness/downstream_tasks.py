"""Generate the offline downstream tasks from each domain's held-out test split.

    python -m eval.harness.downstream_tasks --corpus-dir DIR --out DIR [--domains a b ...]
        [--examples-per-domain 100] [--seed 1234] [--context-chars 600] [--continuation-chars 120]
        [--choices 4]

Two task families, one lm-eval task per domain, in two groups:

``mixbench_cloze`` (``loglikelihood``; metric ``acc``): last-word prediction in the manner of
LAMBADA. A passage is cut before its last word; the example is correct when that word is the
model's greedy continuation.

``mixbench_choice`` (``multiple_choice``; metrics ``acc`` and ``acc_norm``): which continuation
is the real one. The start of a passage is followed by ``choices`` candidate continuations: its
own and ones cut the same way from other passages of the same domain. ``acc`` picks the most
likely candidate, ``acc_norm`` the most likely per character (candidates differ in length).

Construction, deterministic for a given test split and seed:

1. Each test document is cut at whitespace into passages of at most
   ``context_chars + continuation_chars`` characters (``eval.harness.tasks.pieces``).
2. Cloze: in a passage's first ``context_chars`` characters, the last word of three or more
   ASCII letters that follows whitespace and has at least ``context_chars // 4`` characters
   before it is the target; the context is everything before it, and the whitespace in between
   belongs to the target. Passages without such a word are skipped.
3. Choice: a passage is cut at whitespace into a context of at most ``context_chars``
   characters and a continuation of at most ``continuation_chars`` characters and as many
   UTF-8 bytes (so a byte-level BPE needs at most that many tokens for it); a short passage
   gives up context, not continuation. The context must have at least ``context_chars // 4``
   characters and the continuation at least ``continuation_chars // 2``. The distractors are
   the continuations of ``choices - 1`` other passages of the domain with a different text,
   drawn at random; the position of the real one is drawn too.
4. The eligible passages are shuffled and the first ``examples_per_domain`` kept. Every random
   draw comes from ``random.Random("{seed}:{family}:{domain}")``, so adding a domain or changing
   one family never changes the examples of another.

Writes ``{out}/downstream/``: ``{family}_{domain}.jsonl``, one YAML per task and per group, and
``tasks.json`` (the manifest ``eval.harness.run`` reads). Unchanged files keep their mtime.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from eval.harness.tasks import (MANIFEST, check_domains, dump_yaml, generator_parser, literal_data_files, pieces,
                                remove_stale, truncate, write_if_changed)
from mixbench.cli import main_guard
from mixbench.errors import ConfigError, DataError

SUBDIR = "downstream"
TASK_VERSION = 1
CLOZE, CHOICE = "mixbench_cloze", "mixbench_choice"
GROUPS = (CLOZE, CHOICE)
_WORD = re.compile(r"(\s+)([A-Za-z]{3,})\b")
_MEAN = {"aggregation": "mean", "higher_is_better": True}


def test_passages(path: Path, passage_chars: int) -> list[str]:
    """Every test document of a domain cut at whitespace into passages, in file order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{lineno}: expected a JSON object with a 'text' field ({e})")
            out += pieces(text, passage_chars) if text.strip() else []
    return out


def cloze_example(passage: str, context_chars: int) -> dict[str, str] | None:
    head = truncate(passage, context_chars)
    words = [m for m in _WORD.finditer(head) if m.start() >= context_chars // 4]
    if not words:
        return None
    last = words[-1]
    return {"context": head[: last.start()], "target": last.group(1) + last.group(2)}


def split_passage(passage: str, context_chars: int, continuation_chars: int) -> tuple[str, str] | None:
    # A short passage (a dictionary entry, a fortune) keeps a full-length continuation and gives
    # up context instead, so domains of short documents yield examples too.
    if len(passage) <= continuation_chars:
        return None
    context = truncate(passage, min(context_chars, len(passage) - continuation_chars))
    continuation = truncate(passage[len(context):].lstrip(), continuation_chars)
    # Also at most continuation_chars UTF-8 bytes: a byte-level BPE then needs at most that many
    # tokens, so the continuation always fits the model's context (lm-eval never truncates it).
    while len(continuation.encode("utf-8")) > continuation_chars:
        continuation = truncate(continuation, len(continuation) - 1)
    if len(context) < context_chars // 4 or len(continuation) < continuation_chars // 2:
        return None
    return context, continuation


def cloze_examples(passages: Sequence[str], n: int, context_chars: int, rng: random.Random) -> list[dict]:
    examples = [e for e in (cloze_example(p, context_chars) for p in passages) if e]
    rng.shuffle(examples)
    return examples[:n]


def choice_examples(passages: Sequence[str], n: int, context_chars: int, continuation_chars: int, choices: int,
                    rng: random.Random) -> list[dict]:
    splits = [s for s in (split_passage(p, context_chars, continuation_chars) for p in passages) if s]
    order = list(range(len(splits)))
    rng.shuffle(order)
    examples = []
    pool = list(dict.fromkeys(c for _, c in splits))  # distinct continuations, in corpus order
    if len(pool) < choices:
        return []  # too few distinct passages for a single example
    for i in order[:n]:
        context, real = splits[i]
        others = [c for c in pool if c != real]
        candidates = rng.sample(others, choices - 1)
        label = rng.randrange(choices)
        candidates.insert(label, real)
        examples.append({"context": context, "choices": candidates, "label": label})
    return examples


def task_name(family: str, domain: str) -> str:
    return f"{family}_{domain}"


def task_config(family: str, domain: str, data_file: Path) -> dict[str, Any]:
    common = {
        "task": task_name(family, domain),
        "task_alias": domain,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": literal_data_files(data_file)},
        "test_split": "test",
        "doc_to_text": "context",  # bare feature names: the value verbatim, no Jinja
        "metadata": {"version": TASK_VERSION, "domain": domain},
    }
    if family == CLOZE:
        # The whitespace before the word is part of the target, as in the text.
        return {**common, "output_type": "loglikelihood", "doc_to_target": "target", "target_delimiter": "",
                "metric_list": [{"metric": "acc", **_MEAN}]}
    return {**common, "output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
            "target_delimiter": " ", "metric_list": [{"metric": "acc", **_MEAN}, {"metric": "acc_norm", **_MEAN}]}


def generate_downstream_tasks(
    corpus_dir: str | Path,
    out_dir: str | Path,
    domains: Sequence[str] | None = None,
    examples_per_domain: int = 100,
    seed: int = 1234,
    context_chars: int = 600,
    continuation_chars: int = 120,
    choices: int = 4,
) -> dict[str, Any]:
    """Write data files, task and group YAMLs and the manifest; return the manifest."""
    if examples_per_domain < 1 or choices < 2 or context_chars < 40 or continuation_chars < 10:
        raise ConfigError("need examples_per_domain >= 1, choices >= 2, context_chars >= 40, continuation_chars >= 10")
    corpus_dir, domains = check_domains(corpus_dir, domains)
    folder = Path(out_dir).resolve() / SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, {*(f"{f}.yaml" for f in GROUPS),
                          *(task_name(f, d) + ext for f in GROUPS for d in domains for ext in (".yaml", ".jsonl"))})
    info: dict[str, dict[str, Any]] = {family: {} for family in GROUPS}
    for d in domains:
        passages = test_passages(corpus_dir / d / "test.jsonl", context_chars + continuation_chars)
        rng = {f: random.Random(f"{seed}:{f}:{d}") for f in GROUPS}
        built = {
            CLOZE: cloze_examples(passages, examples_per_domain, context_chars, rng[CLOZE]),
            CHOICE: choice_examples(passages, examples_per_domain, context_chars, continuation_chars, choices,
                                    rng[CHOICE]),
        }
        for family, examples in built.items():
            if not examples:
                raise DataError(f"domain {d}: its test split yields no {family} example; lower "
                                "evaluation.downstream.context_chars or give the domain more test text")
            data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
            data_file = folder / f"{task_name(family, d)}.jsonl"
            write_if_changed(data_file, data)
            write_if_changed(folder / f"{task_name(family, d)}.yaml", dump_yaml(task_config(family, d, data_file)))
            info[family][d] = {"task": task_name(family, d), "examples": len(examples), "data_file": str(data_file),
                               "sha256": hashlib.sha256(data.encode("utf-8")).hexdigest()}
    for family in GROUPS:
        group = {"group": family, "task": [task_name(family, d) for d in domains],
                 "metadata": {"version": TASK_VERSION}}
        write_if_changed(folder / f"{family}.yaml", dump_yaml(group))
    manifest = {
        "groups": {family: {d: task_name(family, d) for d in domains} for family in GROUPS},
        "domains": info,
        "params": {"corpus_dir": str(corpus_dir), "examples_per_domain": examples_per_domain, "seed": seed,
                   "context_chars": context_chars, "continuation_chars": continuation_chars, "choices": choices},
    }
    write_if_changed(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = generator_parser("eval.harness.downstream_tasks", __doc__, SUBDIR)
    p.add_argument("--examples-per-domain", type=int, default=100)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--context-chars", type=int, default=600)
    p.add_argument("--continuation-chars", type=int, default=120)
    p.add_argument("--choices", type=int, default=4)
    a = p.parse_args(argv)
    manifest = generate_downstream_tasks(a.corpus_dir, a.out, a.domains, a.examples_per_domain, a.seed,
                                         a.context_chars, a.continuation_chars, a.choices)
    for family, per_domain in manifest["domains"].items():
        print(f"{family}: " + ", ".join(f"{d} {m['examples']}" for d, m in per_domain.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
