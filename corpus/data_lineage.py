"""The data folder's lineage (mixbench/lineage.py): what the tokenizer and the token files were
made from, recorded by their builds and checked by every job that reads them.

- the tokenizer build writes ``tokenizer/lineage.json``: ``{"corpus": digest}``;
- the token build checks it against the corpus and records ``meta.json``'s ``lineage``:
  ``{"corpus": digest, "tokenizer": digest}``;
- ``TokenStore`` checks that against the corpus and tokenizer beside the token files, so token ids
  of another corpus or tokenizer are never trained on, whatever the files' modification times say.

The digests are of ``corpus/manifest.json`` (which records every domain's sha256) and of the
tokenizer's vocabulary and merges: a few milliseconds, never a hash of the token files themselves
(``meta.json`` records theirs). Data built before lineage was recorded is read, with one warning
line per folder and process saying that its lineage cannot be checked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mixbench.errors import DataError
from mixbench.io import read_json, write_json
from mixbench.lineage import CORPUS_FILE, TOKENIZER_LINEAGE, differences, file_digest, tokenizer_digest

RETOKENIZE = "snakemake --cores 1 --forcerun tokenize_corpus"
RETRAIN_TOKENIZER = "snakemake --cores 1 --forcerun train_tokenizer"
_warned: set[str] = set()  # one warning per folder and process: several readers open the same files


def corpus_digest(data_dir: str | Path) -> str:
    return file_digest(Path(data_dir) / "corpus" / CORPUS_FILE)


def record_tokenizer_lineage(folder: str | Path, data_dir: str | Path | None) -> None:
    """Write ``folder/lineage.json`` (the tokenizer being built, inside its atomic write): the
    digest of the corpus in ``data_dir`` it was trained on, or, with ``data_dir`` None (``kind:
    pretrained`` or ``tiktoken``, which read no corpus), ``"corpus": null``: made from no corpus, it
    suits any."""
    corpus = None if data_dir is None else corpus_digest(data_dir)
    write_json(Path(folder) / TOKENIZER_LINEAGE, {"corpus": corpus})


def checked_tokenizer_lineage(data_dir: str | Path) -> dict[str, str]:
    """The lineage the token build records: the corpus's and the tokenizer's digests, after checking
    that the tokenizer was made from this corpus (DataError naming what changed otherwise)."""
    data_dir = Path(data_dir)
    folder = data_dir / "tokenizer"
    current = {"corpus": corpus_digest(data_dir)}
    path = folder / TOKENIZER_LINEAGE
    if path.is_file():
        recorded = read_json(path)
        changed = differences(recorded, current) if recorded.get("corpus") is not None else []
        if changed:
            raise DataError(f"{folder} was made from another corpus ({'; '.join(changed)}); rebuild it with: "
                            f"{RETRAIN_TOKENIZER}")
    else:
        warn_once(f"warning: {folder} has no {TOKENIZER_LINEAGE} (built by an older mixbench): which corpus it was "
                  f"made from cannot be checked; rebuild it with: {RETRAIN_TOKENIZER}")
    return {**current, "tokenizer": tokenizer_digest(folder)}


def check_tokens_lineage(tokens_dir: str | Path, meta: dict) -> None:
    """Refuse token files whose ``meta.json`` lineage differs from the corpus and tokenizer beside
    them (one line naming what changed and the rebuild); warn once where it cannot be checked."""
    tokens_dir = Path(tokens_dir)
    meta_path = tokens_dir / "meta.json"
    recorded = meta.get("lineage")
    if recorded is None:
        warn_once(f"warning: {meta_path} records no lineage (built by an older mixbench): which corpus and tokenizer "
                  f"its token ids come from cannot be checked; rebuild it with: {RETOKENIZE}")
        return
    data_dir = tokens_dir.parent
    present = {"corpus": (data_dir / "corpus" / CORPUS_FILE).is_file(),
               "tokenizer": (data_dir / "tokenizer" / "tokenizer.json").is_file()}
    missing = [name for name, here in present.items() if not here]
    if missing:
        warn_once(f"warning: {meta_path} records its lineage but there is no {' or '.join(missing)} beside it in "
                  f"{data_dir}: {', '.join(missing)} cannot be checked")
    current = {}
    if present["corpus"]:
        current["corpus"] = corpus_digest(data_dir)
    if present["tokenizer"]:
        current["tokenizer"] = tokenizer_digest(data_dir / "tokenizer")
    changed = differences({name: recorded.get(name) for name in current}, current)
    if changed:
        raise DataError(f"{meta_path} was made from other data than the data beside it ({'; '.join(changed)}); "
                        f"rebuild it with: {RETOKENIZE}")


def warn_once(line: str) -> None:
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)
