"""Train (or load) the tokenizer and save it as a transformers tokenizer.

    python -m corpus.tokenizer --config config/config.yaml

``kind: bpe`` trains a byte-level BPE on the train split of every domain (never val/test);
``kind: pretrained`` copies a saved transformers tokenizer from ``tokenizer.path``: a local
folder, or a hub name (e.g. ``gpt2``) found in the Hugging Face cache or downloaded;
``kind: tiktoken`` builds GPT-2's tokenizer from a tiktoken ranks file at ``tokenizer.path``
(e.g. ``r50k_base.tiktoken``; corpus/tiktoken_file.py).
Every kind gives ``{data_dir}/tokenizer`` loadable with ``AutoTokenizer``, with
``<|endoftext|>`` as the document separator, and its ``lineage.json`` (the corpus's digest,
corpus/data_lineage.py). ``check_tokenizer_source`` says before any job
runs whether the configured source can be had (a hub name without network fails at once,
saying what to download and where to point the config).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

from corpus import identity
from corpus.data_lineage import record_tokenizer_lineage
from corpus.manifest import verify_splits
from mixbench import config as cfg
from mixbench.cli import config_command
from corpus.hub import hub_unreachable
from mixbench.errors import DataError
from mixbench.io import atomic_dir

EOS = "<|endoftext|>"


def iter_train_texts(corpus_dir: Path, domains: list[str]) -> Iterator[str]:
    for domain in domains:
        with open(corpus_dir / domain / "train.jsonl", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def train_bpe(texts: Iterator[str], vocab_size: int):
    """Byte-level BPE as in GPT-2: bytes first, so no text is ever out of vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def offline_message(name: str, reason: str, cache_problem: str | None = None) -> str:
    """What to download, and how to point the config at it, for a hub tokenizer that cannot be had here."""
    from corpus.tiktoken_file import R50K_SHA256, R50K_URL

    folder = f"data/{name.split('/')[-1]}-tokenizer"
    cache = (f"its copy in the Hugging Face cache cannot be loaded ({cache_problem})" if cache_problem
             else "not in the Hugging Face cache")
    lines = [
        f"tokenizer {name!r} is not a local folder and {cache}, and the hub cannot be reached ({reason}). "
        f"To use it without network, either:",
        "  - on a machine with network, save it as a folder:",
        f"      python -c \"from transformers import AutoTokenizer; "
        f"AutoTokenizer.from_pretrained('{name}').save_pretrained('{folder}')\"",
        f"    copy {folder}/ here (relative to the directory the workflow runs in) and set in the config:",
        f"      tokenizer: {{kind: pretrained, path: {folder}}}",
    ]
    if "gpt2" in name.lower():
        lines += [
            "  - or download GPT-2's BPE ranks file (tiktoken's r50k_base, the `gpt2` encoding):",
            f"      {R50K_URL}",
            f"    (sha256 {R50K_SHA256}) to data/r50k_base.tiktoken and set in the config:",
            "      tokenizer: {kind: tiktoken, path: data/r50k_base.tiktoken}",
        ]
    return "\n".join(lines)


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("tokenizer_config.json", "tokenizer.json"))


def resolve_pretrained(path: str | None) -> tuple[str, str]:
    """Where ``kind: pretrained`` loads from, without loading it: ``("folder", dir)``, ``("cache", name)``
    (a hub name already in the Hugging Face cache) or ``("hub", name)`` (the hub answers). Anything else is
    a DataError now: a hub name with no network fails at once, saying what to download instead."""
    if not path:
        raise DataError("tokenizer.kind is 'pretrained' but tokenizer.path is not set: give a saved tokenizer "
                        "folder or a hub name (e.g. gpt2)")
    local = Path(path).expanduser()
    if local.is_dir():
        if not any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise DataError(f"tokenizer.path {path!r} is a folder but not a saved transformers tokenizer (no "
                            f"tokenizer.json or tokenizer_config.json in it); save one with "
                            f"`tokenizer.save_pretrained('{path}')`")
        return "folder", str(local)
    if local.is_file():
        raise DataError(f"tokenizer.path {path!r} is a file, not a tokenizer folder; a tiktoken ranks file "
                        f"(e.g. r50k_base.tiktoken) is `tokenizer.kind: tiktoken`")
    # "data/gpt2-tokenizer" also looks like a hub name; an existing local parent folder says it is not.
    if (path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path
            or (local.parent != Path(".") and local.parent.is_dir())):
        raise DataError(f"tokenizer.path {path!r}: no such folder ({local.absolute()})")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        raise DataError(f"tokenizer.path {path!r} is neither an existing folder ({local.absolute()}) nor a valid "
                        f"hub name") from None
    if _in_hub_cache(path):
        return "cache", path
    reason = hub_unreachable()
    if reason:
        raise DataError(offline_message(path, reason))
    return "hub", path


def _tiktoken_path(spec: dict) -> str:
    if not spec.get("path"):
        from corpus.tiktoken_file import R50K_URL

        raise DataError(f"tokenizer.kind is 'tiktoken' but tokenizer.path is not set: point it at a ranks file, "
                        f"e.g. GPT-2's r50k_base.tiktoken from {R50K_URL}")
    return spec["path"]


def check_tokenizer_source(spec: dict) -> None:
    """Pre-flight: raise a DataError now if the tokenizer of ``spec`` (the config's ``tokenizer`` section)
    cannot be had when its job runs. Fast, and imports neither transformers nor torch: at most one HEAD
    request to the hub (``corpus.hub.HUB_TIMEOUT_S``), or one read of a ranks file and its merges."""
    if spec["kind"] == "pretrained":
        resolve_pretrained(spec.get("path"))
    elif spec["kind"] == "tiktoken":
        from corpus.tiktoken_file import read_bpe

        read_bpe(_tiktoken_path(spec))  # about a second for GPT-2's 50k ranks


def load_pretrained(path: str | None):
    """A saved tokenizer folder, or a hub name (e.g. ``gpt2``) from the cache or, where it answers, the hub."""
    where, source = resolve_pretrained(path)  # before importing transformers: a failure here comes at once
    if where == "hub":
        return _load_from_hub(source)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        if where == "folder":
            raise DataError(f"cannot load the tokenizer folder {path!r}: {_first_line(exc)}") from None
        reason = hub_unreachable()  # an incomplete cache entry: the hub may still provide the rest
        if reason:
            raise DataError(offline_message(source, reason, cache_problem=_first_line(exc))) from None
        return _load_from_hub(source)
    return _with_eos(tok, path)


def _load_from_hub(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load tokenizer {name!r} from the hub: {_first_line(exc)}") from None
    return _with_eos(tok, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _with_eos(tok, path: str):
    if tok.eos_token_id is None:
        raise DataError(f"tokenizer at {path!r} has no eos token; documents could not be separated")
    return tok


def build(config: dict) -> Path:
    spec = config["tokenizer"]
    out = Path(config["data_dir"]) / "tokenizer"
    if spec["kind"] == "bpe":
        corpus_dir = Path(config["data_dir"]) / "corpus"
        identity.check(corpus_dir, config, "corpus")
        verify_splits(corpus_dir, config["corpus"]["domains"], ["train"])
        tok = train_bpe(iter_train_texts(corpus_dir, config["corpus"]["domains"]), spec["vocab_size"])
    elif spec["kind"] == "tiktoken":
        from corpus.tiktoken_file import build_tokenizer

        tok = build_tokenizer(_tiktoken_path(spec))
    else:
        tok = load_pretrained(spec["path"])
    with atomic_dir(out) as tmp:
        tok.save_pretrained(tmp)
        # Only a trained BPE is made from the corpus; a pretrained or tiktoken one suits any corpus.
        record_tokenizer_lineage(tmp, config["data_dir"] if spec["kind"] == "bpe" else None)
        identity.record(tmp, config, "tokenizer")
    print(f"tokenizer: {len(tok)} tokens -> {out}", file=sys.stderr)
    return out


main = config_command(build, __doc__, load=cfg.load)


if __name__ == "__main__":
    main()
