"""Where the tokenizer comes from: a hub name with no network, a local folder, a tiktoken ranks file."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from conftest import FIXTURE_CORPUS
from corpus import tokenizer
from corpus.hub import HUB_TIMEOUT_S, OFFLINE_VARIABLES
from corpus.tiktoken_file import EOS, build_tokenizer, read_ranks, recover_merges
from mixbench.errors import DataError

TEXTS = [
    "def f(x):\n    return x ** 2  # square\n\n\tif x != 0: pass\n",
    "naïve café, Straße, Ελληνικά, 日本語のテキスト, emoji 🙂👍🏽 and a zero\u200bwidth space",
    "They're here; it's fine. We'll see, I'd say you've won, I'm done. DON'T 'quote' ''s",
    "spaces     between   words\n\n\n   and trailing   ",
    "\r\n\r\nwindows lines\r\n\ttabs\t\tand\u00a0nbsp\u3000ideographic space",
    "numbers 3.14159 1,000,000 2024-05-01 0x1F 12345678901234567890",
    "<html><body class=\"x\">&amp; &#x27;</body></html>\n",
    "",
    "   ",
    "\n",
    "a",
    "\x00\x01\x7f control \ufffd bytes",
]


def config_with(root: Path, spec: dict) -> dict:
    """What ``tokenizer.build`` reads of a config, its tokenizer section checked against the schema."""
    from mixbench.config import _Validator, load_schema

    spec = dict(spec)
    _Validator(load_schema()["properties"]["tokenizer"]).validate(spec)  # and defaults filled in
    return {"data_dir": str(root / "data"), "tokenizer": spec}


def fixture_texts() -> list[str]:
    return [json.loads(line)["text"] for line in FIXTURE_CORPUS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """No test may find a hub tokenizer in this machine's Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


# --- a hub name without network ---------------------------------------------------------------


def assert_says_what_to_download(message: str, name: str = "gpt2") -> None:
    assert f"{name!r} is not a local folder" in message
    assert ("python -c \"from transformers import AutoTokenizer; "
            f"AutoTokenizer.from_pretrained('{name}').save_pretrained('data/{name}-tokenizer')\"") in message
    assert f"tokenizer: {{kind: pretrained, path: data/{name}-tokenizer}}" in message
    assert "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken" in message
    assert "tokenizer: {kind: tiktoken, path: data/r50k_base.tiktoken}" in message


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_hub_tokenizer_fails_at_once_saying_what_to_download(tmp_path, monkeypatch, var):
    import huggingface_hub.utils

    for variable in OFFLINE_VARIABLES:  # other tests' imports may have set them (eval.harness.lm evaluates offline)
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(var, "1")
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: pytest.fail("offline: no request"))
    spec = {"kind": "pretrained", "path": "gpt2", "vocab_size": 8192}
    start = time.monotonic()
    with pytest.raises(DataError) as pre_flight:
        tokenizer.check_tokenizer_source(spec)
    with pytest.raises(DataError) as job:
        tokenizer.build({"data_dir": str(tmp_path / "data"), "tokenizer": spec})
    assert time.monotonic() - start < 3
    assert f"{var} is set" in str(pre_flight.value)
    assert str(pre_flight.value) == str(job.value)
    assert_says_what_to_download(str(job.value))
    assert not (tmp_path / "data" / "tokenizer").exists()


def test_unreachable_hub_fails_at_once_after_one_request(monkeypatch):
    import huggingface_hub.utils
    from huggingface_hub import constants

    for variable in OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    requests = []

    class NoNetwork:
        def head(self, url, timeout):
            requests.append((url, timeout))
            raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.utils, "get_session", NoNetwork)
    with pytest.raises(DataError) as exc:
        tokenizer.load_pretrained("openai-community/gpt2")
    assert requests == [(constants.ENDPOINT, HUB_TIMEOUT_S)]
    assert "did not answer: ConnectionError: Name or service not known" in str(exc.value)
    assert "from_pretrained('openai-community/gpt2').save_pretrained('data/gpt2-tokenizer')" in str(exc.value)
    assert "r50k_base.tiktoken" in str(exc.value)
    with pytest.raises(DataError) as other:
        tokenizer.check_tokenizer_source({"kind": "pretrained", "path": "EleutherAI/pythia-70m"})
    assert "kind: tiktoken" not in str(other.value)  # the GPT-2 ranks file is offered for GPT-2 only


# --- a local folder ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bpe():
    """A byte-level BPE trained like the default kind (tokenizers' trainer), on the fixture corpus."""
    return tokenizer.train_bpe(iter(fixture_texts() + TEXTS), vocab_size=1000)


def test_a_saved_folder_is_the_tokenizer_offline(tmp_path, monkeypatch, small_bpe):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "my-tokenizer"
    small_bpe.save_pretrained(folder)
    config = config_with(tmp_path, {"kind": "pretrained", "path": str(folder)})
    tokenizer.check_tokenizer_source(config["tokenizer"])
    from transformers import AutoTokenizer

    built = AutoTokenizer.from_pretrained(tokenizer.build(config))
    for text in TEXTS:
        assert built.tokenize(text) == small_bpe.tokenize(text)
    assert built.eos_token == EOS


def test_pretrained_paths_that_are_not_a_tokenizer_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "r50k_base.tiktoken").write_text("IQ== 0\n")
    cases = {
        str(tmp_path / "empty"): "is a folder but not a saved transformers tokenizer",
        str(tmp_path / "missing"): "no such folder",
        "./data/gpt2-tokenizer": "no such folder",
        str(tmp_path / "r50k_base.tiktoken"): "`tokenizer.kind: tiktoken`",
        "not a name!": "neither an existing folder",
        None: "tokenizer.path is not set",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=re.escape(message)):
            tokenizer.check_tokenizer_source({"kind": "pretrained", "path": path})


# --- a tiktoken ranks file --------------------------------------------------------------------


def ranks_of(tok) -> list[bytes]:
    """A trained byte-level BPE as a tiktoken file's tokens: the 256 bytes in GPT-2's order, then each
    merge's token in merge order (as in r50k_base.tiktoken)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    return [bytes([b]) for b in bytes_to_unicode()] + [bytes(byte_of[c] for c in a + b) for a, b in merges]


def write_ranks(path: Path, tokens: list[bytes]) -> Path:
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    return path


@pytest.fixture(scope="module")
def ranks_file(tmp_path_factory, small_bpe) -> Path:
    return write_ranks(tmp_path_factory.mktemp("tiktoken") / "small.tiktoken", ranks_of(small_bpe))


def test_a_tiktoken_file_gives_the_tokenizer_it_was_written_from(tmp_path, monkeypatch, small_bpe, ranks_file):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = config_with(tmp_path, {"kind": "tiktoken", "path": str(ranks_file)})
    tokenizer.check_tokenizer_source(config["tokenizer"])
    built = AutoTokenizer.from_pretrained(tokenizer.build(config))  # as corpus/tokens.py loads it
    n = len(ranks_of(small_bpe))
    assert n == 1000 - 1  # the trained vocabulary less its special token
    assert built.eos_token == built.bos_token == EOS and built.eos_token_id == n and len(built) == n + 1
    for text in TEXTS + fixture_texts():
        ids = built(text, add_special_tokens=False)["input_ids"]
        assert built.convert_ids_to_tokens(ids) == small_bpe.tokenize(text)
        assert built.decode(ids) == text
    assert built("a" + EOS + "b", add_special_tokens=False)["input_ids"][1] == n


def test_merges_come_back_in_the_order_they_were_learned(small_bpe):
    tokens = ranks_of(small_bpe)
    assert [a + b for a, b in recover_merges(tokens)] == tokens[256:]


def lines_of(tokens: list[bytes]) -> list[str]:
    return [f"{base64.b64encode(t).decode()} {rank}" for rank, t in enumerate(tokens)]


BYTES = [bytes([b]) for b in range(256)]


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:3] + ["not-base64! 3"] + ls[4:], r"line 4: 'not-base64!' is not base64"),
    (lambda ls: ls[:9] + ["Cg== 9 extra"] + ls[10:], r"line 10: expected `<base64 of the token's bytes> <rank>`, "
                                                    r"got 3 field\(s\)"),
    (lambda ls: ls[:6] + ["Bg== six"] + ls[7:], r"line 7: the rank 'six' is not a non-negative integer"),
    (lambda ls: ls + ["YWI= 5"], r"line 259: rank 5 is also the rank of line 6"),
    (lambda ls: ls + ["AA== 258"], r"line 259: token b'\\x00' is also on line 1"),
    (lambda ls: ls[:-1] + ["YWJj 300"], r"the ranks must be 0\.\.257 \(one per token\), but rank 257 is missing"),
    (lambda ls: lines_of(BYTES[1:] + [b"ab"]), r"1 of the 256 single bytes are not tokens \(e\.g\. b'\\x00'\)"),
    (lambda ls: ls + ["eHl6 258"], r"line 259: token b'xyz' \(rank 258\) is not the merge of two tokens of lower"),
    (lambda ls: [], r"has no tokens"),
])
def test_a_malformed_ranks_file_names_its_line(tmp_path, edit, message):
    good = lines_of(BYTES + [b"ab", b"abc"])  # ranks 0..257
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(edit(good)) + "\n")
    with pytest.raises(DataError, match=message) as exc:
        build_tokenizer(path)
    assert str(path) in str(exc.value)


def test_a_missing_ranks_file_says_where_to_get_gpt2s(tmp_path):
    for spec in ({"kind": "tiktoken", "path": str(tmp_path / "r50k_base.tiktoken")}, {"kind": "tiktoken"}):
        with pytest.raises(DataError, match="r50k_base.tiktoken") as exc:
            tokenizer.check_tokenizer_source(spec)
        assert "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken" in str(exc.value)
    with pytest.raises(DataError, match="is a folder, not a tiktoken ranks file"):
        read_ranks(tmp_path)


def test_blank_lines_and_a_missing_final_newline_are_accepted(tmp_path):
    path = tmp_path / "ok.tiktoken"
    path.write_text("\n".join(lines_of(BYTES + [b"ab"])[::-1]).replace(" 3\n", " 3\n\n"))  # any line order
    tokens, lines = read_ranks(path)
    assert tokens == BYTES + [b"ab"] and lines[0] == 258
    assert build_tokenizer(path).tokenize("abab") == ["ab", "ab"]


def test_a_few_tokens_no_merge_can_make_are_kept_and_never_produced(tmp_path, small_bpe, capsys):
    tokens = ranks_of(small_bpe) + [b"\x00\x01\x02"]  # no merge of lower rank joins these bytes
    built = build_tokenizer(write_ranks(tmp_path / "extra.tiktoken", tokens))
    assert "1 token(s) are not the merge of two tokens of lower rank" in capsys.readouterr().err
    assert built.convert_tokens_to_ids(built.convert_ids_to_tokens(len(tokens) - 1)) == len(tokens) - 1
    assert built.eos_token_id == len(tokens)
    assert built("\x00\x01\x02", add_special_tokens=False)["input_ids"] == [tokens.index(b) for b in BYTES[:3]]
    assert built.tokenize(TEXTS[0]) == small_bpe.tokenize(TEXTS[0])


def test_a_hub_name_in_the_hugging_face_cache_loads_offline(tmp_path, monkeypatch, small_bpe):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = Path(constants.HF_HUB_CACHE) / "models--gpt2"  # the cache layout huggingface_hub writes
    snapshot = repo / "snapshots" / "0123abc"
    small_bpe.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    spec = {"kind": "pretrained", "path": "gpt2"}
    assert tokenizer.resolve_pretrained("gpt2") == ("cache", "gpt2")
    tokenizer.check_tokenizer_source(spec)
    with pytest.raises(DataError) as incomplete:  # AutoTokenizer reads the model's config.json too
        tokenizer.load_pretrained("gpt2")
    assert "its copy in the Hugging Face cache cannot be loaded" in str(incomplete.value)
    assert_says_what_to_download(str(incomplete.value))
    (snapshot / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert tokenizer.load_pretrained("gpt2").tokenize(TEXTS[2]) == small_bpe.tokenize(TEXTS[2])
