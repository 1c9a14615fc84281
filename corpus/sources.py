"""Where domain documents come from: Debian packages, local jsonl/parquet files, or the HF hub.

``records(corpus)`` yields every record of the configured source in the source's own order, as
``corpus.records.Record`` / ``BadRecord``, one at a time: the builder streams them and stops
reading when it has what it needs, and saves its progress at the ``Finished`` points between
inputs, where a read can resume. ``check_source`` fails before any reading when the source
cannot be read at all (missing packages or files, no network for a hub dataset).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from corpus.hub import hub_unreachable
from corpus.records import Finished, Read, Record, read_local, read_stream
from mixbench.errors import DataError

HUB_POSITION_EVERY = 10_000  # records of a hub stream between two points a read can resume after


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


def records(corpus: dict, position: dict | None = None) -> Iterator[Read | Finished]:
    """Every record of the source, in its order (files by sorted path, then line or row), with a
    ``Finished`` after each input whose records are all yielded: a local file, a Debian domain,
    or ``HUB_POSITION_EVERY`` records of a hub stream. ``position`` (a ``Finished``'s) starts
    the read after it."""
    text_field, domain_field = corpus["text_field"], corpus["domain_field"]
    if corpus["source"] == "huggingface":
        yield from _hub_records(corpus, position or {"records": 0})
        return
    if corpus["source"] == "debian":
        inputs = [(domain, lambda domain=domain: _debian_records(corpus, domain)) for domain in corpus["domains"]]
    else:
        inputs = [(path, lambda path=path: read_local(path, text_field, domain_field))
                  for path in local_files(corpus["path"])]
    done = (position or {"inputs": 0})["inputs"]
    for index, (name, read) in enumerate(inputs[done:], done + 1):
        yield from read()
        yield Finished({"inputs": index}, name)


def _debian_records(corpus: dict, domain: str) -> Iterator[Read]:
    from corpus import debian

    origin = f"debian:{domain}"
    for number, (name, text) in enumerate(debian.iter_documents(domain, corpus["deb_dir"]), 1):
        yield Record(origin, f"{origin} document {number} ({name})", domain, text)


def _hub_records(corpus: dict, position: dict) -> Iterator[Read | Finished]:
    """The stream's records; its ``state_dict`` (shard and record within it) is the position,
    so a resumed stream skips the shards before it without reading them."""
    stream = _hub_stream(corpus)
    if "stream" in position:
        stream.load_state_dict(position["stream"])
    number = position["records"]
    for read in read_stream(stream, corpus["dataset"], corpus["text_field"], corpus["domain_field"], number + 1):
        yield read
        number += 1
        if number % HUB_POSITION_EVERY == 0:
            yield Finished({"records": number, "stream": stream.state_dict()}, f"{corpus['dataset']} record {number:,}")


def _hub_stream(corpus: dict):
    import datasets

    try:
        return datasets.load_dataset(
            corpus["dataset"], corpus["dataset_config"], split=corpus["dataset_split"], streaming=True
        )
    except FileNotFoundError as exc:  # datasets' DatasetNotFoundError: a name the hub does not have
        raise DataError(f"corpus.dataset {corpus['dataset']!r}: {str(exc)[:300]}") from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        # requests' and huggingface_hub's connection errors derive from these.
        raise DataError(hub_unreachable_message(corpus, f"{type(exc).__name__}: {str(exc)[:300]}")) from None
