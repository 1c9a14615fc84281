"""What an evaluation checks in a model folder before scoring, and the lineage its results record.

Model folders are built by hand (a tiny random GPT-2 and a tiny BPE) as ``RUN/model`` beside a
``RUN/run.json`` that records the tokenizer the run trained with."""

import os

for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from eval.harness import evaluate  # noqa: E402
from eval.harness.downstream_tasks import CLOZE, generate_downstream_tasks  # noqa: E402
from eval.harness.lm import load_model  # noqa: E402
from eval.harness.tasks import generate_perplexity_tasks  # noqa: E402
from mixbench.errors import DataError  # noqa: E402
from mixbench.lineage import run_digest, tokenizer_digest  # noqa: E402

EOS = "<|endoftext|>"
TEXTS = ["In the beginning was the word, and the word was with the text of the corpus. " * 4,
         "def f(x):\n    return x + 1\n\nfor i in range(3):\n    print(f(i))\n" * 4,
         "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. " * 4]
REPO = Path(__file__).resolve().parents[1]


def train_tokenizer(extra: str = "", vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([t + extra for t in TEXTS] * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)


@pytest.fixture(scope="module")
def data_tokenizer(tmp_path_factory):
    """The data folder's tokenizer, as the tokenizer job saves it."""
    folder = tmp_path_factory.mktemp("data") / "tokenizer"
    train_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Perplexity and downstream tasks on one small domain."""
    corpus, out = tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("tasks")
    (corpus / "books").mkdir()
    lines = [json.dumps({"id": f"books-{i}", "text": t}) for i, t in enumerate(TEXTS)]
    (corpus / "books" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    generate_perplexity_tasks(corpus, out)
    generate_downstream_tasks(corpus, out, examples_per_domain=2, context_chars=60, continuation_chars=20)
    return out


def make_run(root: Path, data_tokenizer: Path, tokenizer=None, inputs: bool = True) -> Path:
    """RUN/model as training saves it (model and the data tokenizer via save_pretrained), and a
    RUN/run.json recording the data tokenizer's digest; ``tokenizer`` replaces the model folder's."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    trained_with = AutoTokenizer.from_pretrained(data_tokenizer)
    model = root / "run" / "model"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(trained_with), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=trained_with.eos_token_id, eos_token_id=trained_with.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(model)
    (tokenizer or trained_with).save_pretrained(model)
    record = {"strategy": "uniform", "stage": "final"}
    if inputs:
        record["inputs"] = {"config": "f" * 64, "tokens": "e" * 64, "tokenizer": tokenizer_digest(data_tokenizer),
                            "upstream": {}}
    (root / "run" / "run.json").write_text(json.dumps(record))
    return model


def evaluate_args(model: Path, tasks: Path, out: Path, downstream: bool = False) -> list[str]:
    args = ["--model", str(model), "--tasks-dir", str(tasks), "--out", str(out / "perplexity.json"),
            "--batch-size", "4", "--device", "cpu", "--limit", "1"]
    if downstream:
        args += ["--downstream", CLOZE, "--downstream-out", str(out / "downstream.json"), "--downstream-limit", "1"]
    return args


def test_both_result_files_record_the_run_and_tokenizer(data_tokenizer, tasks, tmp_path, capsys):
    model = make_run(tmp_path, data_tokenizer)
    # A model folder's save_pretrained copy of the data tokenizer is the same tokenizer.
    assert tokenizer_digest(model) == tokenizer_digest(data_tokenizer)
    assert evaluate.main(evaluate_args(model, tasks, tmp_path / "eval", downstream=True)) == 0
    assert "WARNING" not in capsys.readouterr().err
    expected = {"run": run_digest(model.parent), "tokenizer": tokenizer_digest(data_tokenizer)}
    for name in ("perplexity.json", "downstream.json"):
        result = json.loads((tmp_path / "eval" / name).read_text())
        assert result["lineage"] == expected, name
        assert result["tasks"], name  # still the result the tables read


def test_a_run_without_inputs_gets_one_warning_and_a_folder_outside_a_run_no_run(data_tokenizer, tasks, tmp_path,
                                                                                 capsys):
    model = make_run(tmp_path, data_tokenizer, inputs=False)
    load_model(model, "cpu")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "records no inputs.tokenizer" in warnings[0] and "cannot be checked" in warnings[0]
    (model.parent / "run.json").unlink()
    assert evaluate.main(evaluate_args(model, tasks, tmp_path / "eval")) == 0
    assert "is not in a run folder" in capsys.readouterr().err
    lineage = json.loads((tmp_path / "eval" / "perplexity.json").read_text())["lineage"]
    assert lineage == {"run": None, "tokenizer": tokenizer_digest(data_tokenizer)}


def test_a_tokenizer_other_than_the_runs_is_refused(data_tokenizer, tmp_path):
    other = train_tokenizer(" zebra quartz xylophone")
    assert len(other) == 300  # the same size: it would be scored without any error
    model = make_run(tmp_path, data_tokenizer, tokenizer=other)
    with pytest.raises(DataError) as error:
        load_model(model, "cpu")
    message = str(error.value)
    assert "\n" not in message and str(model) in message and "put the run's own tokenizer back" in message
    assert tokenizer_digest(model)[:12] in message and tokenizer_digest(data_tokenizer)[:12] in message


def test_a_tokenizer_larger_than_the_embedding_is_refused(data_tokenizer, tmp_path):
    larger = train_tokenizer(" and many more words to merge: zebra quartz xylophone", vocab_size=400)
    assert len(larger) > 300
    model = make_run(tmp_path, data_tokenizer, tokenizer=larger)
    with pytest.raises(DataError, match=rf"the tokenizer in {model} has {len(larger)} tokens but the model's "
                                        r"embedding has only 300 rows.*put the run's own tokenizer back"):
        load_model(model, "cpu")


class RunsCode:
    """A pickle that, once loaded, runs a command (what safetensors-only loading keeps out)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pkl"])
def test_a_folder_with_only_pickled_weights_is_refused_unloaded(data_tokenizer, tmp_path, pickle_name):
    model = make_run(tmp_path, data_tokenizer)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"weights": RunsCode(marker)}, model / pickle_name)
    with pytest.raises(DataError, match=rf"{model} holds its weights only as a pickle \({pickle_name}\): evaluation "
                                        r"loads only safetensors weights.*safe_serialization=True.*retrain"):
        load_model(model, "cpu")
    assert not marker.exists()


def test_safetensors_are_loaded_even_beside_a_pickle(data_tokenizer, tmp_path):
    model = make_run(tmp_path, data_tokenizer)
    marker = tmp_path / "code-ran"
    torch.save({"weights": RunsCode(marker)}, model / "pytorch_model.bin")
    loaded, _tok = load_model(model, "cpu")
    assert loaded.get_input_embeddings().num_embeddings == 300 and not marker.exists()


def test_a_folder_without_weights_exits_with_one_line(data_tokenizer, tasks, tmp_path):
    model = make_run(tmp_path, data_tokenizer)
    (model / "model.safetensors").unlink()
    proc = subprocess.run([sys.executable, "-m", "eval.harness.evaluate", *evaluate_args(model, tasks, tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert f"{model} holds no model weights (no model.safetensors)" in line and "retrain it" in line
