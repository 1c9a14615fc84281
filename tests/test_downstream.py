"""Offline downstream tasks: their construction, and that lm-eval scores them as constructed."""

import os

for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"

import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
from collections import defaultdict  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from conftest import FIXTURE_CORPUS, make_test_config  # noqa: E402
from eval.analysis import collect
from eval.harness import evaluate  # noqa: E402
from eval.analysis.aggregate import aggregate  # noqa: E402
from eval.harness.downstream import evaluate_downstream, task_failure  # noqa: E402
from eval.harness.downstream_tasks import CHOICE, CLOZE, generate_downstream_tasks, split_passage  # noqa: E402
from eval.analysis.tables import MISSING, downstream_sections, downstream_summary_cells  # noqa: E402
from eval.harness.task_index import check_task_names  # noqa: E402
from eval.harness.tasks import generate_perplexity_tasks  # noqa: E402
from strategies import grid_config  # noqa: E402
from mixbench.errors import ConfigError, DataError  # noqa: E402
from mixbench.io import write_json  # noqa: E402
from run_fixture import write_grid  # noqa: E402
from test_eval import CTX, model_dir  # noqa: E402,F401 (a module-scoped fixture: a tiny random GPT-2)

PAPER_TASKS = yaml.safe_load(open(FIXTURE_CORPUS.parents[2] / "config" / "paper.yaml"))["downstream"]["tasks"]
SETTINGS = {"examples_per_domain": 12, "seed": 5, "context_chars": 160, "continuation_chars": 40}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The fixture corpus's documents as test splits, three domains."""
    root = tmp_path_factory.mktemp("corpus")
    docs = defaultdict(list)
    for line in FIXTURE_CORPUS.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        docs[doc["domain"]].append(doc["text"])
    for domain in ("code", "books", "qa"):
        (root / domain).mkdir()
        lines = [json.dumps({"id": f"{domain}-{i}", "text": t}) for i, t in enumerate(docs[domain][:20])]
        (root / domain / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tasks(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("downstream")
    return out, generate_downstream_tasks(corpus, out, **SETTINGS)


def examples(out, family, domain):
    path = out / "downstream" / f"{family}_{domain}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def source_text(corpus, domain):
    return "\n".join(json.loads(line)["text"] for line in (corpus / domain / "test.jsonl").read_text().splitlines())


def test_cloze_examples_cut_a_real_passage_before_its_last_word(corpus, tasks):
    out, manifest = tasks
    for domain in ("code", "books", "qa"):
        built = examples(out, CLOZE, domain)
        assert len(built) == manifest["domains"][CLOZE][domain]["examples"] == 12
        text = source_text(corpus, domain)
        for e in built:
            assert e["context"] + e["target"] in text  # contiguous in the test split
            word = e["target"].lstrip()
            assert word.isascii() and word.isalpha() and len(word) >= 3 and e["target"][0].isspace()
            assert len(e["context"]) >= SETTINGS["context_chars"] // 4


def test_choice_examples_hold_the_real_continuation_at_the_label(corpus, tasks):
    out, _ = tasks
    for domain in ("code", "books", "qa"):
        text = source_text(corpus, domain)
        built = examples(out, CHOICE, domain)
        assert len(built) == 12
        labels = [e["label"] for e in built]
        assert len(set(labels)) > 1  # the position is drawn, not fixed
        for e in built:
            assert len(e["choices"]) == 4 and len(set(e["choices"])) == 4
            real = e["choices"][e["label"]]
            assert re.search(re.escape(e["context"]) + r"\s+" + re.escape(real), text)  # it really follows
            for c in e["choices"]:
                assert c in text and len(c.encode("utf-8")) <= SETTINGS["continuation_chars"]


def test_generation_is_deterministic_and_seeded(corpus, tasks, tmp_path):
    out, manifest = tasks
    again = generate_downstream_tasks(corpus, tmp_path / "again", **SETTINGS)
    other = generate_downstream_tasks(corpus, tmp_path / "other", **{**SETTINGS, "seed": 6})
    for family in (CLOZE, CHOICE):
        for d in ("code", "books", "qa"):
            assert again["domains"][family][d]["sha256"] == manifest["domains"][family][d]["sha256"]
        assert any(other["domains"][family][d]["sha256"] != manifest["domains"][family][d]["sha256"]
                   for d in ("code", "books", "qa"))
    # Fewer domains change no other domain's examples (each draws from its own generator).
    alone = generate_downstream_tasks(corpus, tmp_path / "alone", domains=["books"], **SETTINGS)
    assert alone["domains"][CHOICE]["books"]["sha256"] == manifest["domains"][CHOICE]["books"]["sha256"]


def test_a_short_passage_gives_up_context_and_a_tiny_one_is_skipped():
    passage = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
    context, continuation = split_passage(passage, context_chars=60, continuation_chars=30)
    assert passage.startswith(context) and len(continuation) >= 15 and len(context) >= 15
    assert split_passage("too short", context_chars=60, continuation_chars=30) is None


def test_a_domain_without_examples_is_a_data_error(tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "test.jsonl").write_text(json.dumps({"id": "a", "text": "one two"}) + "\n")
    with pytest.raises(DataError, match="no mixbench_cloze example"):
        generate_downstream_tasks(tmp_path, tmp_path / "out", **SETTINGS)


def loglikelihood(model, tok, context, continuation):
    """Independent of lm-eval: log p(continuation | context) and whether it is the greedy output,
    with the context cut from the left to the model's window as lm-eval does."""
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    target = whole[n_ctx:]
    seq = whole[-(CTX + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0, -len(target):].double().log_softmax(-1)
    picked = logits[torch.arange(len(target)), torch.tensor(target)]
    return float(picked.sum()), bool((logits.argmax(-1) == torch.tensor(target)).all())


@pytest.fixture(scope="module")
def record(model_dir, tasks):  # noqa: F811
    out, _ = tasks
    return evaluate_downstream(model_dir, [CLOZE, CHOICE], out, batch_size=4, device="cpu")


def test_lm_eval_scores_the_tasks_as_constructed(model_dir, tasks, record):  # noqa: F811
    from transformers import AutoTokenizer, GPT2LMHeadModel

    out, _ = tasks
    assert record["failed"] == {}
    model, tok = GPT2LMHeadModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    for domain in ("code", "books", "qa"):
        cloze = record["tasks"][f"{CLOZE}_{domain}"]
        assert cloze["group"] == CLOZE and cloze["domain"] == domain and cloze["examples"] == 12
        greedy = [loglikelihood(model, tok, e["context"], e["target"])[1] for e in examples(out, CLOZE, domain)]
        assert cloze["metrics"]["acc"] == pytest.approx(sum(greedy) / len(greedy))
        choice = record["tasks"][f"{CHOICE}_{domain}"]
        hits = hits_norm = 0
        for e in examples(out, CHOICE, domain):
            scores = [loglikelihood(model, tok, e["context"], " " + c)[0] for c in e["choices"]]
            norm = [s / len(c) for s, c in zip(scores, e["choices"])]  # acc_norm: per character of the choice
            hits += max(range(4), key=scores.__getitem__) == e["label"]
            hits_norm += max(range(4), key=norm.__getitem__) == e["label"]
        assert choice["metrics"]["acc"] == pytest.approx(hits / 12)
        assert choice["metrics"]["acc_norm"] == pytest.approx(hits_norm / 12)
        assert choice["metrics"]["acc_stderr"] > 0 or choice["metrics"]["acc"] in (0, 1)


def test_every_paper_task_resolves_in_lm_evals_registry(tmp_path):
    # agieval_logiqa_en stands in for logiqa, whose dataset (EleutherAI/logiqa) needs a loading
    # script that the pinned datasets no longer runs; see config/paper.yaml.
    assert PAPER_TASKS == ["piqa", "hellaswag", "lambada_openai", "copa", "openbookqa", "winogrande", "sciq",
                           "agieval_logiqa_en", "arc_easy", "arc_challenge"]
    check_task_names(PAPER_TASKS, cache_dir=tmp_path)  # indexes lm-eval's task YAMLs; downloads nothing
    (cache,) = tmp_path.glob("lm_eval-*-tasks.json")
    assert set(PAPER_TASKS) <= set(json.loads(cache.read_text()))
    with pytest.raises(ConfigError, match="'hellaswg' is not a task in lm-eval's registry; did you mean hellaswag"):
        check_task_names(["hellaswg"], cache_dir=tmp_path)  # answered from the cache
    with pytest.raises(ConfigError, match="not generated tasks"):
        check_task_names(["mixbench_clozed"])


def test_random_draws_do_not_depend_on_python_hash_seed():
    # random.Random(str) hashes the string with SHA-512, not hash(): stable across processes.
    assert random.Random("5:mixbench_choice:code").random() == random.Random("5:mixbench_choice:code").random()


def corrupt(path):
    path.write_text('{"context": "a line cut off in the midd', encoding="utf-8")


def test_a_task_that_fails_to_load_fails_alone(model_dir, corpus, record, tmp_path, capsys):  # noqa: F811
    generate_perplexity_tasks(corpus, tmp_path)
    generate_downstream_tasks(corpus, tmp_path, **SETTINGS)  # the examples `record` was scored on
    corrupt(tmp_path / "downstream" / f"{CHOICE}_books.jsonl")
    ppl, down = tmp_path / "perplexity.json", tmp_path / "downstream.json"
    argv = ["--model", str(model_dir), "--tasks-dir", str(tmp_path), "--out", str(ppl), "--downstream", CLOZE, CHOICE,
            "--downstream-out", str(down), "--batch-size", "4", "--device", "cpu"]
    assert evaluate.main(argv) == 0
    result = json.loads(down.read_text())
    # The good task's numbers are those of a run without the bad one.
    cloze = {task: r for task, r in record["tasks"].items() if r["group"] == CLOZE}
    assert list(result["tasks"]) == list(cloze)
    for task, r in cloze.items():
        assert result["tasks"][task]["examples"] == r["examples"]
        assert result["tasks"][task]["metrics"] == pytest.approx(r["metrics"])
    assert result["failed"] == {CHOICE: {
        "stage": "load", "exception": "DatasetGenerationError",
        "message": "An error occurred while generating the dataset (caused by ArrowInvalid: JSON parse error: "
                   "Missing a closing quotation mark in string. in row 0)"}}
    err = capsys.readouterr().err
    assert (f"WARNING: downstream task {CHOICE} failed to load: DatasetGenerationError: An error occurred while "
            "generating the dataset") in err
    assert "1 of 2 downstream tasks failed" in err and json.loads(ppl.read_text())["tasks"].keys() == {"books", "code", "qa"}

    # In the tables: a missing cell where the task failed, and a footnote naming it.
    grid = {"sizes": ["test"], "strategies": ["uniform", "natural"], "seeds": [0, 1]}
    logiqa = task_failure("agieval_logiqa_en", "load",
                          ConnectionError("Couldn't reach 'hails/agieval-logiqa-en' on the Hub (OfflineModeIsEnabled)"))
    config = grid_config.validate(make_test_config(tmp_path / "grid", grid=grid,
                                           downstream={"tasks": [CLOZE, CHOICE, "agieval_logiqa_en"]}))
    write_grid(config)
    for size, strategy, seed, cell in collect.grid_cells(config):
        path = cell / "final" / "eval" / "downstream.json"
        fixture = json.loads(path.read_text())
        failed = {"agieval_logiqa_en": logiqa}  # fails everywhere, as logiqa would
        if (strategy, seed) != ("uniform", 0):  # CHOICE fails in three of the four runs
            fixture["tasks"] = {t: r for t, r in fixture["tasks"].items() if r["group"] != CHOICE}
            failed[CHOICE] = result["failed"][CHOICE]
        write_json(path, {**fixture, "failed": failed})
    long = collect.downstream(config)
    assert list(dict.fromkeys(long.task)) == [CLOZE, CHOICE, "agieval_logiqa_en"]
    errors = long[long.error.notna()]
    assert len(errors) == 4 + 3 and errors.value.isna().all() and errors.metric.isna().all()
    cells = downstream_summary_cells(long, grid).set_index(["size", "strategy"])
    assert list(cells.columns) == [f"{CLOZE} acc", f"{CHOICE} acc", f"{CHOICE} acc_norm", "agieval_logiqa_en"]
    assert (cells["agieval_logiqa_en"] == MISSING).all()
    assert cells.loc[("test", "natural"), f"{CHOICE} acc"] == MISSING
    assert re.fullmatch(r"0\.\d{4} \(1 of 2 seeds\)", cells.loc[("test", "uniform"), f"{CHOICE} acc_norm"])
    assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", cells.loc[("test", "natural"), f"{CLOZE} acc"])
    (title, _), (note_title, note) = downstream_sections(long, grid, "mean ± std over 2 seeds")
    assert f"{MISSING}: no result, the task failed" in title and "failed" in note_title
    assert note.to_dict("records") == [
        {"task": CHOICE, "failed in": "test/uniform/seed1, test/natural/seed0, test/natural/seed1",
         "error": "DatasetGenerationError: " + result["failed"][CHOICE]["message"]},
        {"task": "agieval_logiqa_en", "failed in": "every run (4)",
         "error": f"ConnectionError: {logiqa['message']}"}]
    aggregate(config)  # the result tables take the failures without an error
    table = pd.read_csv(tmp_path / "grid" / "results" / "tables" / "downstream.csv")
    assert table[table.task == "agieval_logiqa_en"].error.str.startswith("ConnectionError: Couldn't reach").all()

    # Every task failing fails the job, before the model loads (no perplexity either).
    corrupt(tmp_path / "downstream" / f"{CLOZE}_code.jsonl")
    ppl.unlink()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(argv)
    assert exit_info.value.code == 2 and not ppl.exists()
    err = capsys.readouterr().err
    assert f"error: every downstream task failed, so there is no downstream result to write: {CLOZE} (load)" in err


def test_a_failure_is_one_line_that_names_its_dataset():
    script = RuntimeError("Dataset scripts are no longer supported, but found logiqa.py")
    failure = task_failure("logiqa", "load", script, dataset="EleutherAI/logiqa")
    import datasets

    assert failure == {"stage": "load", "exception": "RuntimeError", "message": (
        f"dataset EleutherAI/logiqa uses a loading script, which datasets {datasets.__version__} no longer runs "
        "(Dataset scripts are no longer supported, but found logiqa.py)")}
    try:
        try:
            raise FileNotFoundError("Dataset EleutherAI/logiqa is not cached in None")
        except FileNotFoundError as e:
            raise ConnectionError("Couldn't reach 'EleutherAI/logiqa' on the Hub (OfflineModeIsEnabled)\nmore") from e
    except ConnectionError as offline:
        failure = task_failure("logiqa", "run", offline)
    assert failure["stage"] == "run" and failure["exception"] == "ConnectionError"
    assert failure["message"].startswith("Couldn't reach 'EleutherAI/logiqa' on the Hub (OfflineModeIsEnabled): "
                                         "dataset EleutherAI/logiqa is not in the local Hugging Face cache")
    assert "\n" not in failure["message"]


def test_one_evaluation_job_writes_the_numbers_of_the_two_job_path(model_dir, corpus, tmp_path):  # noqa: F811
    """The workflow's one job per model (eval.harness.evaluate: the model loaded once, perplexity then
    downstream) writes the same files as `eval.harness.run` and `eval.harness.downstream` run one after the other,
    each loading the model itself: every number equal, not approximately equal."""
    from eval.harness import downstream as eval_downstream
    from eval.harness import run as eval_run

    generate_perplexity_tasks(corpus, tmp_path)
    generate_downstream_tasks(corpus, tmp_path, **SETTINGS)
    common = ["--model", str(model_dir), "--tasks-dir", str(tmp_path), "--batch-size", "4", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    # The two-job path first: what the joint job leaves behind in this process cannot reach it.
    assert eval_run.main([*common, "--out", str(two / "perplexity.json")]) == 0
    assert eval_downstream.main([*common, "--tasks", CLOZE, CHOICE, "--out", str(two / "downstream.json")]) == 0
    assert evaluate.main([*common, "--out", str(one / "perplexity.json"), "--downstream", CLOZE, CHOICE,
                          "--downstream-out", str(one / "downstream.json")]) == 0
    for name in ("perplexity.json", "downstream.json"):
        joint, separate = json.loads((one / name).read_text()), json.loads((two / name).read_text())
        assert joint == separate, name
    ppl = json.loads((one / "perplexity.json").read_text())
    assert set(ppl["tasks"]) == {"books", "code", "qa"} and all(m["documents"] == 20 for m in ppl["tasks"].values())
    down = json.loads((one / "downstream.json").read_text())
    assert len(down["tasks"]) == 6 and down["failed"] == {}
