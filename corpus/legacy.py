"""What data built before products recorded their settings still says about them.

A corpus, tokenizer or token files made by an older mixbench hold no settings marker
(``corpus.identity``), but their files record part of the settings they were built with:

- the corpus's ``manifest.json``: its domains, source, document selection, bad-record rule, each
  domain's cap, and each domain's split sizes (which ``val_fraction``, ``test_fraction`` and
  ``min_split_documents`` determine from its document count), and for a hub source the dataset,
  its config and split;
- ``tokenizer.json``: its vocabulary size, which for a trained BPE is ``tokenizer.vocab_size``;
- the token files' ``meta.json``: their domains, vocabulary size and each split's document count,
  which are those of the corpus and tokenizer they were made from.

Each comparison returns which settings (or facts) it compared and, one line each, what differs.
Settings no file records (the source's path, the text and domain fields, the read budget, the
tokenizer's kind and path) cannot be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from corpus.spool import SPLITS, selection_of, split_sizes
from mixbench import config as cfg
from mixbench.errors import DataError

# manifest.json's name of a hub source's setting: the setting's name in the corpus section.
HUB_FIELDS = {"dataset": "dataset", "config": "dataset_config", "split": "dataset_split"}
SPLIT_SETTINGS = ("corpus.val_fraction", "corpus.test_fraction", "corpus.min_split_documents")


@dataclass
class Comparison:
    checked: list[str] = field(default_factory=list)  # setting names, or facts, compared
    differing: list[str] = field(default_factory=list)  # "name: recorded there, expected here"

    def compare(self, name: str, recorded, expected, covers: tuple[str, ...] = ()) -> None:
        """Compare one recorded value; ``covers``: the settings it stands for, if not ``name``."""
        self.checked += [n for n in covers or (name,) if n not in self.checked]
        if recorded != expected:
            self.differing.append(f"{name}: {recorded} there, {expected} here")

    def compare_per_domain(self, name: str, recorded: dict, expected: dict, covers: tuple[str, ...] = ()) -> None:
        """Compare values per domain, naming only the domains whose values differ."""
        changed = [domain for domain in expected if recorded.get(domain) != expected[domain]]
        self.compare(name, {d: recorded.get(d) for d in changed}, {d: expected[d] for d in changed}, covers)


def compare_corpus(manifest: dict, corpus: dict) -> Comparison:
    """The corpus settings a manifest records, against the config's ``corpus`` section."""
    result = Comparison()
    domains = manifest.get("domains", {})
    result.compare("corpus.domains", sorted(domains), sorted(corpus["domains"]))
    for key in ("source", "bad_records"):
        if key in manifest:
            result.compare(f"corpus.{key}", manifest[key], corpus[key])
    if "selection" in manifest:  # recorded as resolved: null means hash for debian, stream otherwise
        result.compare("corpus.selection", manifest["selection"], selection_of(corpus))
    if corpus["source"] == manifest.get("source") == "huggingface":
        for recorded, key in HUB_FIELDS.items():
            if recorded in manifest:
                result.compare(f"corpus.{key}", manifest[recorded], corpus[key])
    shared = [domain for domain in corpus["domains"] if domain in domains]
    capped = [domain for domain in shared if "cap_bytes" in domains[domain]]
    if capped:
        result.compare_per_domain("corpus.max_bytes_per_domain", {d: domains[d]["cap_bytes"] for d in capped},
                                  {d: cfg.domain_cap(corpus, d) for d in capped})
    if shared:
        recorded = {d: _test_val_documents(domains[d]["splits"]) for d in shared}
        expected = {d: _split_sizes(sum(domains[d]["splits"][s]["documents"] for s in SPLITS), corpus)
                    for d in shared}
        result.compare_per_domain("split sizes (test, val documents)", recorded, expected, covers=SPLIT_SETTINGS)
    return result


def compare_tokenizer(vocab_size: int, spec: dict) -> Comparison:
    """A tokenizer's vocabulary size against the config's ``tokenizer`` section (a trained BPE's
    is the configured one; a pretrained or tiktoken tokenizer's is its own)."""
    result = Comparison()
    if spec["kind"] == "bpe":
        result.compare("tokenizer.vocab_size", vocab_size, spec["vocab_size"])
    return result


def compare_tokens(meta: dict, manifest: dict, vocab_size: int, corpus: dict) -> Comparison:
    """Token files' metadata against the corpus and tokenizer beside them and the config's domains."""
    result = Comparison()
    files = meta.get("domains", {})
    result.compare("corpus.domains", sorted(files), sorted(corpus["domains"]))
    result.compare("the tokenizer's vocabulary size", meta.get("vocab_size"), vocab_size)
    shared = [d for d in corpus["domains"] if d in files and d in manifest.get("domains", {})]
    result.compare_per_domain(
        "documents per split (token files, corpus)",
        {d: [files[d][s]["documents"] for s in SPLITS] for d in shared},
        {d: [manifest["domains"][d]["splits"][s]["documents"] for s in SPLITS] for d in shared})
    return result


def tokenizer_vocab_size(folder: str | Path) -> int:
    """The vocabulary size (with added tokens) of a saved fast tokenizer."""
    # Imported here, not at the top: the workflow imports this module at every start, and only
    # data without markers needs a tokenizer read.
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def _test_val_documents(splits: dict) -> list[int]:
    return [splits["test"]["documents"], splits["val"]["documents"]]


def _split_sizes(documents: int, corpus: dict) -> list[int] | str:
    try:
        return list(split_sizes(documents, corpus["val_fraction"], corpus["test_fraction"],
                                corpus["min_split_documents"]))
    except DataError:
        return f"too few of its {documents} documents"
