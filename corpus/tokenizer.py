"""Train (or load) the tokenizer and save it as a transformers tokenizer.

    python -m corpus.tokenizer --config config/config.yaml

``kind: bpe`` trains a byte-level BPE on the train split of every domain (never val/test);
``kind: pretrained`` copies a saved transformers tokenizer from ``tokenizer.path``.
Either way the result is ``{data_dir}/tokenizer`` loadable with ``AutoTokenizer``, with
``<|endoftext|>`` as the document separator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

from mixbench.cli import config_command
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


def load_pretrained(path: str | None):
    """A saved tokenizer folder, or a hub name (e.g. ``gpt2``) where the hub can be reached."""
    from transformers import AutoTokenizer

    if not path:
        raise DataError("tokenizer.kind is 'pretrained' but tokenizer.path is not set")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise DataError(f"cannot load tokenizer {path!r}: not a saved tokenizer folder, and the hub "
                        f"could not provide it ({exc.__class__.__name__})") from None
    if tok.eos_token_id is None:
        raise DataError(f"tokenizer at {path!r} has no eos token; documents could not be separated")
    return tok


def build(config: dict) -> Path:
    spec = config["tokenizer"]
    out = Path(config["data_dir"]) / "tokenizer"
    if spec["kind"] == "bpe":
        corpus_dir = Path(config["data_dir"]) / "corpus"
        tok = train_bpe(iter_train_texts(corpus_dir, config["corpus"]["domains"]), spec["vocab_size"])
    else:
        tok = load_pretrained(spec["path"])
    with atomic_dir(out) as tmp:
        tok.save_pretrained(tmp)
    print(f"tokenizer: {len(tok)} tokens -> {out}", file=sys.stderr)
    return out


main = config_command(build, __doc__)


if __name__ == "__main__":
    main()
