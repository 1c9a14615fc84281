"""A byte-level BPE tokenizer built from a tiktoken-style ranks file, without tiktoken.

A ranks file (e.g. ``r50k_base.tiktoken``, the GPT-2 encoding) has one line per token: the
base64 of the token's bytes, a space, its rank. Ranks are 0..n-1; every single byte is a token,
and every longer token is the merge of two tokens of lower rank, listed in the order BPE
learned them. Such a file holds no merge list: each token's merge is recovered by running BPE
on the token's own bytes with the merges of lower rank, which must leave exactly two pieces.
For a vocabulary learned by BPE this gives back the merges it was trained with, so the result
encodes text as the original tokenizer does (merges applied by rank, as GPT-2's merges.txt is).
A token that leaves more pieces could not be produced by the original either; a few are kept
without a merge (a warning says so), many mean the file is not in merge order (a DataError).

The tokenizer built here is what GPT-2's own transformers tokenizer is: GPT-2's
pre-tokenization pattern, GPT-2's byte-to-character mapping, the BPE model, and
``<|endoftext|>`` as its only special token with id n (50256 for GPT-2's 50256 ranks). Files of
encodings with another pattern (cl100k_base, o200k_base) are not supported: they would load,
and split text differently from the model that uses them.
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path

from mixbench.errors import DataError

EOS = "<|endoftext|>"

# GPT-2's pre-tokenization (tokenizers' ByteLevel pattern; tiktoken's r50k_base pattern).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def read_ranks(path: str | Path) -> tuple[list[bytes], list[int]]:
    """The tokens of a ranks file in rank order, and the file line each one is on."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"tokenizer.path {str(path)!r} is a folder, not a tiktoken ranks file; a saved "
                        f"transformers tokenizer folder is `tokenizer.kind: pretrained`")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"tiktoken ranks file {str(path)!r} does not exist; for GPT-2 download {R50K_URL} "
                        f"(sha256 {R50K_SHA256}) and point tokenizer.path at it") from None
    except OSError as exc:
        raise DataError(f"cannot read tiktoken ranks file {str(path)!r}: {exc.strerror or exc}") from None

    by_rank: dict[int, tuple[bytes, int]] = {}
    line_of_token: dict[bytes, int] = {}
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split()
        where = f"{path}, line {lineno}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected `<base64 of the token's bytes> <rank>`, got {len(fields)} "
                            f"field(s): {_show(line)}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{where}: {_show(fields[0])} is not base64") from None
        if not token:
            raise DataError(f"{where}: the token is empty")
        if not fields[1].isdigit():
            raise DataError(f"{where}: the rank {_show(fields[1])} is not a non-negative integer")
        rank = int(fields[1])
        if rank in by_rank:
            raise DataError(f"{where}: rank {rank} is also the rank of line {by_rank[rank][1]}; "
                            f"each rank must be given once")
        if token in line_of_token:
            raise DataError(f"{where}: token {token!r} is also on line {line_of_token[token]}; "
                            f"each token must be given once")
        by_rank[rank] = (token, lineno)
        line_of_token[token] = lineno

    n = len(by_rank)
    if n == 0:
        raise DataError(f"tiktoken ranks file {str(path)!r} has no tokens")
    if max(by_rank) != n - 1:
        missing = next(r for r in range(n) if r not in by_rank)
        raise DataError(f"{path}: the ranks must be 0..{n - 1} (one per token), but rank {missing} is missing "
                        f"and the largest is {max(by_rank)}")
    missing_bytes = [b for b in range(256) if bytes([b]) not in line_of_token]
    if missing_bytes:
        raise DataError(f"{path}: {len(missing_bytes)} of the 256 single bytes are not tokens (e.g. "
                        f"{bytes(missing_bytes[:5])!r}); a byte-level BPE needs every byte so that no text is "
                        f"out of vocabulary")
    tokens = [by_rank[r][0] for r in range(n)]
    lines = [by_rank[r][1] for r in range(n)]
    return tokens, lines


def _show(raw: bytes, limit: int = 60) -> str:
    text = raw.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bpe(token: bytes, merges: dict[tuple[bytes, bytes], int]) -> list[bytes]:
    """Byte-pair encode one token's bytes: always merge the adjacent pair of lowest rank (leftmost on ties)."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, None
        for i in range(len(parts) - 1):
            rank = merges.get((parts[i], parts[i + 1]))
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


# A learned BPE vocabulary recovers every merge. A token that does not (BPE on its bytes with the
# merges before it leaves more than two pieces) could never be produced by the original tokenizer
# either: it is kept, without a merge, so ids do not move. More of them than this share of the
# multi-byte tokens means the file is not a BPE vocabulary in merge order.
MAX_UNREACHABLE_SHARE = 0.01


def recover_merges(tokens: list[bytes], lines: list[int] | None = None, path: str | Path = "ranks file",
                   unreachable: list[int] | None = None) -> list[tuple[bytes, bytes]]:
    """The merge that made each multi-byte token, in rank order. Ranks of tokens that no merge of lower
    rank can make are appended to ``unreachable``."""
    merges: dict[tuple[bytes, bytes], int] = {}
    skipped: list[tuple[int, list[bytes]]] = []
    multi = 0
    for rank, token in enumerate(tokens):
        if len(token) == 1:
            continue
        multi += 1
        parts = _bpe(token, merges)
        if len(parts) != 2:
            skipped.append((rank, parts))
            continue
        merges[(parts[0], parts[1])] = rank
    if len(skipped) > MAX_UNREACHABLE_SHARE * multi:
        rank, parts = skipped[0]
        line = lines[rank] if lines else rank + 1
        raise DataError(
            f"{path}, line {line}: token {tokens[rank]!r} (rank {rank}) is not the merge of two tokens of lower "
            f"rank (BPE with the merges before it gives {len(parts)} pieces: {parts[:4]!r}), nor are "
            f"{len(skipped) - 1} more of the {multi} multi-byte tokens; the file must list a byte-level BPE "
            f"vocabulary in the order its merges were learned")
    if unreachable is not None:
        unreachable.extend(rank for rank, _ in skipped)
    return sorted(merges, key=merges.__getitem__)


def read_bpe(path: str | Path) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The tokens of a ranks file in rank order and its merges in merge order; any problem is a DataError."""
    tokens, lines = read_ranks(path)
    unreachable: list[int] = []
    merges = recover_merges(tokens, lines, Path(path).expanduser(), unreachable)
    if unreachable:
        print(f"{path}: {len(unreachable)} token(s) are not the merge of two tokens of lower rank (e.g. rank "
              f"{unreachable[0]}, {tokens[unreachable[0]]!r}); kept with their ids, but no text encodes to them",
              file=sys.stderr)
    return tokens, merges


def build_tokenizer(path: str | Path):
    """A ``PreTrainedTokenizerFast`` equivalent to GPT-2's, with the vocabulary of the ranks file at ``path``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens, merges = read_bpe(path)
    char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(char[b] for b in token)

    vocab = {text(t): rank for rank, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(text(a), text(b)) for a, b in merges], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    if tok.token_to_id(EOS) != len(tokens):
        raise DataError(f"{path}: {EOS} should get id {len(tokens)} (the number of ranks) but got "
                        f"{tok.token_to_id(EOS)}; the file must not contain {EOS} itself")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)
