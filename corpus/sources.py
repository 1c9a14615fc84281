"""Where domain documents come from: Debian packages, local jsonl/parquet files, or the HF hub.

``records(corpus)`` yields every record of the configured source in the source's own order, as
``corpus.records.Record`` / ``BadRecord``, one at a time: the builder streams them and stops
reading when it has what it needs. ``check_source`` fails before any reading when the source
cannot be read at all (missing packages or files, no network for a hub dataset).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from corpus.hub import hub_unreachable
from corpus.records import Read, Record, read_local, read_stream
from mixbench.errors import DataError


def check_source(corpus: dict) -> None:
    """Fail before any work if the configured source cannot be read."""
    if corpus["source"] == "debian":
        from corpus import debian

        debian.check_available(corpus["domains"], corpus["deb_dir"])
    elif corpus["source"] == "jsonl":
        if not corpus["path"]:
            raise DataError("corpus.source is 'jsonl' but corpus.path is not set")
        if not local_files(corpus["path"]):
            raise DataError(f"corpus.path {corpus['path']!r} matches no file")
    elif corpus["source"] == "huggingface":
        if not corpus["dataset"]:
            raise DataError("corpus.source is 'huggingface' but corpus.dataset is not set")
        if not Path(corpus["dataset"]).exists():
            problem = hub_unreachable()
            if problem:
                raise DataError(hub_unreachable_message(corpus, problem))


def hub_unreachable_message(corpus: dict, why: str) -> str:
    dataset, split = corpus["dataset"], corpus["dataset_split"]
    folder = f"data/hub/{dataset.split('/')[-1]}"
    return (
        f"cannot stream the dataset {dataset!r} from the Hugging Face hub ({why}). On a machine with "
        f"network access, download the files of its {split!r} split once (for SlimPajama they are under "
        f"{split}/; see the dataset's file list for others):\n"
        f"    hf download {dataset} --repo-type dataset --include '{split}/*' --local-dir {folder}\n"
        f"then copy that folder here and read it as local files (streamed, in chunks, the same documents; "
        f"never the validation or test files, which would put held-out text into training):\n"
        f"    corpus: {{source: jsonl, path: '{folder}/{split}/**/*.jsonl.zst'}}   # or '*.parquet', '*.jsonl'"
    )


def local_files(pattern: str) -> list[str]:
    """Files matching ``pattern`` (``**`` descends into folders), sorted by path: the read order."""
    return sorted(p for p in glob.glob(str(Path(pattern).expanduser()), recursive=True) if Path(p).is_file())


def describe(corpus: dict) -> dict:
    """Where the documents came from, for the manifest."""
    if corpus["source"] == "jsonl":
        return {"files": local_files(corpus["path"])}
    if corpus["source"] == "huggingface":
        return {"dataset": corpus["dataset"], "config": corpus["dataset_config"], "split": corpus["dataset_split"]}
    from corpus import debian

    return {"packages": {d: debian.package_versions(d, corpus["deb_dir"]) for d in corpus["domains"]}}


def records(corpus: dict) -> Iterator[Read]:
    """Every record of the source, in its order (files by sorted path, then line or row)."""
    text_field, domain_field = corpus["text_field"], corpus["domain_field"]
    if corpus["source"] == "debian":
        yield from _debian_records(corpus)
    elif corpus["source"] == "jsonl":
        for path in local_files(corpus["path"]):
            yield from read_local(path, text_field, domain_field)
    else:
        yield from read_stream(_hub_stream(corpus), corpus["dataset"], text_field, domain_field)


def _debian_records(corpus: dict) -> Iterator[Read]:
    from corpus import debian

    for domain in corpus["domains"]:
        origin = f"debian:{domain}"
        for number, (name, text) in enumerate(debian.iter_documents(domain, corpus["deb_dir"]), 1):
            yield Record(origin, f"{origin} document {number} ({name})", domain, text)


def _hub_stream(corpus: dict):
    import datasets

    try:
        stream = datasets.load_dataset(
            corpus["dataset"], corpus["dataset_config"], split=corpus["dataset_split"], streaming=True
        )
    except FileNotFoundError as exc:  # datasets' DatasetNotFoundError: a name the hub does not have
        raise DataError(f"corpus.dataset {corpus['dataset']!r}: {str(exc)[:300]}") from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        # requests' and huggingface_hub's connection errors derive from these.
        raise DataError(hub_unreachable_message(corpus, f"{type(exc).__name__}: {str(exc)[:300]}")) from None
    yield from stream
