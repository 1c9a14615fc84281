"""Perplexity task generation and the lm-eval runner, on a tiny random GPT-2 and corpus."""

import os

for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from eval.harness import run as eval_run  # noqa: E402
from eval.harness.tasks import generate_perplexity_tasks, pieces, truncate  # noqa: E402
from eval.metrics import HELDOUT_METRICS  # noqa: E402
from mixbench.errors import DataError  # noqa: E402

CTX = 64
EOS = "<|endoftext|>"
# Short documents (well under CTX tokens) except in "long", which needs several windows.
DOCS = {
    "books": ["In the beginning was the word.", "Call me Ishmael. Some years ago, never mind how long.",
              "Café, naïve, Œuvre — ünïcode bytes count twice."],
    "code": ["def f(x):\n    return x + 1\n", "for i in range(3):\n    print(i)", "x = {'a': [1, 2]}"],
    "long": [" ".join(f"word{i} and then some more text" for i in range(40))],
}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for domain, texts in DOCS.items():
        (root / domain).mkdir()
        lines = [json.dumps({"id": f"{domain}-{i}", "text": t}) for i, t in enumerate(texts)]
        (root / domain / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "no_test_split").mkdir()  # a folder without test.jsonl is not a domain
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([t for texts in DOCS.values() for t in texts] * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)  # no pad token on purpose
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=CTX, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("model")
    GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tasks_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    generate_perplexity_tasks(corpus, out)
    return out / "perplexity"


@pytest.fixture(scope="module")
def result(model_dir, tasks_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("result") / "ppl.json"
    argv = ["--model", str(model_dir), "--tasks-dir", str(tasks_dir.parent), "--out", str(out),
            "--batch-size", "4", "--device", "cpu"]
    assert eval_run.main(argv) == 0
    # Deterministic: the same run writes the same bytes; another batch size the same numbers.
    again, other_bs = out.with_name("again.json"), out.with_name("bs3.json")
    assert eval_run.main(argv[:5] + [str(again)] + argv[6:]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert eval_run.main(argv[:5] + [str(other_bs), "--batch-size", "3", "--device", "cpu"]) == 0
    for domain, metrics in json.loads(other_bs.read_text())["tasks"].items():
        assert metrics == pytest.approx(json.loads(out.read_text())["tasks"][domain], rel=1e-6)
    return json.loads(out.read_text())


def test_task_yamls_use_absolute_paths(tasks_dir):
    manifest = json.loads((tasks_dir / "tasks.json").read_text())
    assert manifest["tasks"] == {d: f"mixbench_ppl_{d}" for d in sorted(DOCS)}
    group = yaml.safe_load((tasks_dir / "mixbench_ppl.yaml").read_text())
    assert group["group"] == "mixbench_ppl" and group["task"] == list(manifest["tasks"].values())
    for domain, name in manifest["tasks"].items():
        cfg = yaml.safe_load((tasks_dir / f"{name}.yaml").read_text())
        assert cfg["task"] == name and cfg["output_type"] == "loglikelihood_rolling"
        data_file = Path(cfg["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and data_file == tasks_dir / f"{domain}.jsonl"
        assert [m["metric"] for m in cfg["metric_list"]] == [m.name for m in HELDOUT_METRICS]
        assert all({"aggregation", "higher_is_better"} <= m.keys() for m in cfg["metric_list"])
        rows = [json.loads(line) for line in data_file.read_text().splitlines()]
        assert [r["text"] for r in rows] == DOCS[domain]


def test_regenerating_leaves_files_untouched(corpus, tmp_path):
    generate_perplexity_tasks(corpus, tmp_path)
    files = sorted((tmp_path / "perplexity").iterdir())
    for f in files:  # backdate, so any rewrite would show even within one clock tick
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    generate_perplexity_tasks(corpus, tmp_path)
    assert sorted((tmp_path / "perplexity").iterdir()) == files
    assert all(f.stat().st_mtime_ns == 1_000_000_000 for f in files)
    # Dropping a domain removes its files instead of leaving a stale task behind.
    generate_perplexity_tasks(corpus, tmp_path, domains=["books"])
    assert sorted(p.name for p in (tmp_path / "perplexity").iterdir()) == [
        "books.jsonl", "mixbench_ppl.yaml", "mixbench_ppl_books.yaml", "tasks.json"]


def test_documents_are_cut_at_max_chars(corpus, tmp_path):
    assert truncate("aaa bbb ccc", 7) == "aaa bbb"
    assert truncate("aaa bbb ccc", 8) == "aaa bbb"
    assert truncate("aaa bbbbbb", 5) == "aaa"
    assert truncate("abcdefgh", 5) == "abcde"
    assert truncate("short", 50) == "short"
    m = generate_perplexity_tasks(corpus, tmp_path, domains=["long"], max_chars=50, max_documents=1)
    (text,) = [json.loads(x)["text"] for x in Path(m["domains"]["long"]["data_file"]).open()]
    source = DOCS["long"][0]
    assert len(text) <= 50 and source.startswith(text) and source[len(text)] == " "


def test_long_documents_are_cut_into_consecutive_pieces(corpus, tmp_path):
    text = "alpha beta gamma delta epsilon zeta eta theta"
    cut = pieces(text, 12)
    assert cut == ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]
    assert " ".join(cut) == text
    m = generate_perplexity_tasks(corpus, tmp_path, domains=["long"], max_chars=50, max_documents=3)
    rows = [json.loads(x) for x in Path(m["domains"]["long"]["data_file"]).open()]
    assert len(rows) == 3 and all(len(r["text"]) <= 50 for r in rows)
    assert DOCS["long"][0].startswith(" ".join(r["text"] for r in rows))
    assert [r["id"].rsplit("#", 1)[1] for r in rows] == ["0", "1", "2"]


def test_result_has_every_domain(result, model_dir):
    assert result["model"] == str(model_dir)
    assert set(result["tasks"]) == set(DOCS)
    for domain, metrics in result["tasks"].items():
        assert metrics["documents"] == len(DOCS[domain])
        for name in [m.name for m in HELDOUT_METRICS]:  # every held-out metric, scored from lm-eval's output
            assert math.isfinite(metrics[name]) and metrics[name] > 0
    assert "mixbench_ppl_books" in result["lm_eval_results"]["results"]


def _score(model_dir, text, rolling):
    """Independent NLL (nats) of one document, predicted from EOS as lm-eval does."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    seq = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    if not rolling:
        assert len(seq) <= CTX, "keep the simple check's documents inside one window"
    nll = 0.0
    # Targets seq[s:e] in blocks of CTX; each block is predicted from the CTX tokens before e.
    for s in range(1, len(seq), CTX):
        e = min(s + CTX, len(seq))
        w0 = max(0, e - 1 - CTX)
        with torch.no_grad():
            logits = model(torch.tensor([seq[w0:e - 1]])).logits[0, s - 1 - w0:]
        nll += torch.nn.functional.cross_entropy(
            logits.double(), torch.tensor(seq[s:e]), reduction="sum").item()
    return nll, len(seq) - 1


def test_bits_per_byte_matches_independent_computation(result, model_dir):
    texts = DOCS["books"]
    nll, tokens = map(sum, zip(*(_score(model_dir, t, rolling=False) for t in texts)))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    got = result["tasks"]["books"]
    assert got["bits_per_byte"] == pytest.approx(nll / (n_bytes * math.log(2)), rel=1e-5)
    assert got["byte_perplexity"] == pytest.approx(math.exp(nll / n_bytes), rel=1e-5)
    assert got["word_perplexity"] == pytest.approx(math.exp(nll / words), rel=1e-4)
    # A random model is close to uniform: about log2(V) bits per token.
    assert got["bits_per_byte"] == pytest.approx(math.log2(300) * tokens / n_bytes, rel=0.05)


def test_long_documents_use_rolling_windows_of_the_context(result, model_dir):
    (text,) = DOCS["long"]
    nll, tokens = _score(model_dir, text, rolling=True)
    assert tokens > 2 * CTX  # several windows, so max_length really is n_positions
    expected = nll / (len(text.encode("utf-8")) * math.log(2))
    assert result["tasks"]["long"]["bits_per_byte"] == pytest.approx(expected, rel=1e-5)


def test_missing_inputs_are_data_errors(model_dir, tasks_dir, tmp_path, capsys):
    with pytest.raises(DataError, match="model directory"):
        eval_run.evaluate(tmp_path / "no_model", tasks_dir, device="cpu")
    with pytest.raises(DataError, match="tasks directory"):
        eval_run.evaluate(model_dir, tmp_path / "no_tasks", device="cpu")
    with pytest.raises(DataError, match="corpus directory"):
        generate_perplexity_tasks(tmp_path / "no_corpus", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        eval_run.main(["--model", str(model_dir), "--tasks-dir", str(tmp_path), "--out", "x.json"])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def test_cli_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "eval.harness.run", "--model", str(tmp_path / "m"),
         "--tasks-dir", str(tmp_path / "t"), "--out", str(tmp_path / "r.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
