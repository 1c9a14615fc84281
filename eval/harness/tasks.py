"""Generate lm-eval perplexity tasks, one per domain, from the held-out test splits.

    python -m eval.harness.tasks --corpus-dir DIR --out DIR [--domains a b ...]
                         [--max-documents 100] [--max-chars 4000]

Writes into ``{out}/perplexity/``: ``{domain}.jsonl`` (the evaluated documents),
``mixbench_ppl_{domain}.yaml`` (a ``loglikelihood_rolling`` task), ``mixbench_ppl.yaml`` (the
group) and ``tasks.json`` (the manifest ``eval.harness.run`` reads). Files whose content would not
change are left untouched, so Snakemake sees no new mtimes and reruns nothing.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from corpus.manifest import verify_splits
from eval.metrics import HELDOUT_METRICS
from mixbench.cli import main_guard
from mixbench.errors import ConfigError, DataError
from mixbench.io import write_text

GROUP = "mixbench_ppl"
TASK_PREFIX = GROUP + "_"
SUBDIR = "perplexity"
MANIFEST = "tasks.json"
TASK_VERSION = 1
# Domain names become task names and file names: keep them to a safe alphabet.
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def task_name(domain: str) -> str:
    return TASK_PREFIX + domain


def list_domains(corpus_dir: str | Path) -> list[str]:
    """The sub-folders of ``corpus_dir`` that hold a ``test.jsonl``, sorted."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise DataError(f"corpus directory {corpus_dir} does not exist; build the corpus first")
    domains = sorted(p.name for p in corpus_dir.iterdir() if (p / "test.jsonl").is_file())
    if not domains:
        raise DataError(f"no domain folder with a test.jsonl under {corpus_dir}")
    return domains


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last whitespace if there is one."""
    if len(text) <= max_chars:
        return text
    # Index max_chars itself may be the whitespace right after a complete word.
    for i in range(max_chars, 0, -1):
        if text[i].isspace():
            head = text[:i].rstrip()
            if head:
                return head
            break
    return text[:max_chars]  # one unbroken token longer than max_chars: hard cut


def pieces(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``max_chars`` characters at whitespace."""
    out = []
    while text:
        piece = truncate(text, max_chars)
        out.append(piece)
        text = text[len(piece):].lstrip()
    return out


def read_test_documents(path: Path, max_documents: int, max_chars: int) -> list[dict[str, str]]:
    """Up to ``max_documents`` evaluation documents from a test.jsonl: each test document is cut
    into pieces of at most ``max_chars`` characters (so a domain of a few long files is scored
    on as much text as a domain of many short entries), taken in file order."""
    docs: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if len(docs) >= max_documents:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                doc_id, text = obj["id"], obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{lineno}: expected a JSON object with 'id' and 'text' ({e})")
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: 'text' must be a string")
            # An empty document has no bytes to score and would only skew the word count.
            for k, piece in enumerate(pieces(text, max_chars) if text.strip() else []):
                docs.append({"id": f"{doc_id}#{k}", "text": piece})
    if not docs:
        raise DataError(f"{path} holds no non-empty document")
    return docs[:max_documents]


def literal_data_files(data_file: Path) -> dict[str, str]:
    """``data_files`` naming exactly ``data_file``, an absolute path (lm-eval resolves relative
    ones against the CWD, not the YAML). ``datasets`` reads every data file as a glob pattern, so
    the path's ``*``, ``?`` and ``[`` are escaped: a folder named ``d*`` or ``d[ab]`` must not
    read ``da/``'s documents too, or instead. ``::`` chains file systems there, and no escape exists."""
    if "::" in str(data_file):
        raise DataError(f"{data_file}: the Hugging Face datasets library reads '::' in a path as a chain of file "
                        "systems; move the data folder (data_dir) to a path without '::'")
    return {"test": glob.escape(str(data_file))}


def task_config(domain: str, data_file: Path) -> dict[str, Any]:
    return {
        "task": task_name(domain),
        "task_alias": domain,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": literal_data_files(data_file)},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        # A bare feature name makes lm-eval return doc["text"] verbatim (no Jinja rendering).
        "doc_to_target": "text",
        # Aggregations spelled out: lm-eval warns when a metric_list entry relies on defaults.
        "metric_list": [{"metric": m.name, "aggregation": m.aggregation, "higher_is_better": m.higher_is_better}
                        for m in HELDOUT_METRICS],
        "metadata": {"version": TASK_VERSION, "domain": domain},
    }


def group_config(names: Sequence[str]) -> dict[str, Any]:
    # No aggregate_metric_list: per-domain numbers are the result; averages are computed later
    # (a size-weighted lm-eval average would weight by documents, not bytes).
    return {"group": GROUP, "task": list(names), "metadata": {"version": TASK_VERSION}}


def dump_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=10_000)


def write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return
    write_text(path, text)


def remove_stale(folder: Path, keep: set[str]) -> None:
    """Drop generated task files (.yaml, .jsonl) not named in ``keep``, so lm-eval does not
    index tasks of domains no longer generated."""
    for path in folder.iterdir():
        if path.suffix in (".yaml", ".jsonl") and path.name not in keep:
            path.unlink()


def check_domains(corpus_dir: str | Path, domains: Sequence[str] | None) -> tuple[Path, list[str]]:
    """The absolute corpus folder and the sorted domains (default: all), each with a test split."""
    corpus_dir = Path(corpus_dir).resolve()
    domains = sorted(domains) if domains else list_domains(corpus_dir)
    for d in domains:
        if not _DOMAIN_RE.match(d):
            raise ConfigError(f"domain name {d!r} must match {_DOMAIN_RE.pattern}")
        if not (corpus_dir / d / "test.jsonl").is_file():
            raise DataError(f"{corpus_dir / d / 'test.jsonl'} does not exist")
    if (corpus_dir / "manifest.json").exists():  # a corpus built by corpus/build.py
        verify_splits(corpus_dir, domains, ["test"])
    else:
        print(f"note: {corpus_dir} has no manifest.json (not built by corpus.build): its test splits are "
              "used unchecked", file=sys.stderr)
    return corpus_dir, domains


def generate_perplexity_tasks(
    corpus_dir: str | Path,
    out_dir: str | Path,
    domains: Sequence[str] | None = None,
    max_documents: int = 100,
    max_chars: int = 4000,
) -> dict[str, Any]:
    """Write the per-domain data files, task YAMLs, group YAML and manifest; return the manifest."""
    if max_documents < 1 or max_chars < 1:
        raise ConfigError("max_documents and max_chars must be positive")
    corpus_dir, domains = check_domains(corpus_dir, domains)
    folder = Path(out_dir).resolve() / SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, {f"{GROUP}.yaml", *(f"{task_name(d)}.yaml" for d in domains),
                          *(f"{d}.jsonl" for d in domains)})
    info: dict[str, Any] = {}
    for d in domains:
        docs = read_test_documents(corpus_dir / d / "test.jsonl", max_documents, max_chars)
        data = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
        data_file = folder / f"{d}.jsonl"
        write_if_changed(data_file, data)
        write_if_changed(folder / f"{task_name(d)}.yaml", dump_yaml(task_config(d, data_file)))
        info[d] = {
            "task": task_name(d),
            "data_file": str(data_file),
            "documents": len(docs),
            "bytes": sum(len(doc["text"].encode("utf-8")) for doc in docs),
            "sha256": hashlib.sha256(data.encode("utf-8")).hexdigest(),
        }
    write_if_changed(folder / f"{GROUP}.yaml", dump_yaml(group_config([task_name(d) for d in domains])))
    manifest = {
        "group": GROUP,
        "tasks": {d: task_name(d) for d in domains},
        "domains": info,
        "params": {"corpus_dir": str(corpus_dir), "max_documents": max_documents, "max_chars": max_chars},
    }
    write_if_changed(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def generator_parser(module: str, doc: str, subdir: str) -> argparse.ArgumentParser:
    """The arguments every task generator takes."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    p.add_argument("--corpus-dir", required=True, help="folder with {domain}/test.jsonl")
    p.add_argument("--out", required=True, help=f"output folder (tasks go to OUT/{subdir})")
    p.add_argument("--domains", nargs="+", help="domains to include (default: all with a test.jsonl)")
    return p


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = generator_parser("eval.harness.tasks", __doc__, SUBDIR)
    p.add_argument("--max-documents", type=int, default=100, help="at most N evaluation pieces per domain")
    p.add_argument("--max-chars", type=int, default=4000, help="cut test documents into pieces of at most this many characters")
    args = p.parse_args(argv)
    manifest = generate_perplexity_tasks(args.corpus_dir, args.out, args.domains, args.max_documents, args.max_chars)
    for d, meta in manifest["domains"].items():
        print(f"{meta['task']}: {meta['documents']} documents, {meta['bytes']} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
