"""Evaluate a saved model on the generated per-domain perplexity tasks with lm-eval.

    python -m eval.run --model DIR --tasks-dir DIR --out FILE.json
                       [--batch-size 16] [--device cpu|cuda|auto] [--limit N] [--threads N]

``--tasks-dir`` is the folder ``eval.tasks`` wrote (``OUT/perplexity``, or ``OUT`` itself).
Scoring is lm-eval's own ``loglikelihood_rolling``; this module only loads the model, picks the
tasks and extracts per-domain bits per byte, byte perplexity and word perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

# Must precede the first import of huggingface_hub / datasets / transformers, which read these
# flags once at import time; evaluation never needs the network.
for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"

from eval.tasks import MANIFEST, SUBDIR  # noqa: E402
from mixbench.cli import main_guard  # noqa: E402
from mixbench.errors import ConfigError, DataError, MixbenchError  # noqa: E402
from mixbench.io import read_json, write_json  # noqa: E402

METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")
# Parts of lm-eval's output that describe the evaluation; the rest (timings, environment,
# model repr) would make two identical runs write different files.
_KEPT_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
              "higher_is_better", "n-samples")


def _log(msg: str) -> None:
    print(f"[eval.run] {msg}", file=sys.stderr, flush=True)


def load_manifest(tasks_dir: str | Path) -> dict[str, Any]:
    """Read the manifest of ``eval.tasks`` and check that every data file is still there."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise DataError(f"tasks directory {tasks_dir} does not exist; run `python -m eval.tasks` first")
    path = next((p for p in (tasks_dir / MANIFEST, tasks_dir / SUBDIR / MANIFEST) if p.is_file()), None)
    if path is None:
        raise DataError(f"no {MANIFEST} in {tasks_dir} or {tasks_dir / SUBDIR}; "
                        "run `python -m eval.tasks` to generate the tasks")
    manifest = read_json(path)
    manifest["tasks_dir"] = str(path.parent.resolve())
    for domain, meta in manifest["domains"].items():
        if not Path(meta["data_file"]).is_file():
            raise DataError(f"data file {meta['data_file']} of domain {domain} is missing; "
                            "regenerate the tasks with `python -m eval.tasks`")
    return manifest


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return device


def load_model(model_dir: str | Path, device: str):
    """Load model and tokenizer saved with ``save_pretrained``; give the tokenizer a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise DataError(f"model directory {model_dir} does not exist or has no config.json; "
                        "train the model first (it must be written with save_pretrained)")
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load the tokenizer saved in {model_dir}: {e}") from e
    if tok.eos_token_id is None and tok.bos_token_id is None:
        # lm-eval predicts a document's first token from BOS, or EOS when there is no BOS.
        raise DataError(f"the tokenizer in {model_dir} has neither an eos nor a bos token")
    if tok.pad_token is None:
        # Padding only fills batches (masked out of the score); EOS is the usual GPT-2 choice.
        tok.pad_token = tok.eos_token or tok.bos_token
    # float32 everywhere: reduced precision would shift bits per byte between devices.
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype="float32")
    return model.to(device).eval(), tok


def context_length(config) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    raise DataError("the model config has no n_positions / max_position_embeddings")


def domain_metrics(output: dict[str, Any], task: str) -> dict[str, Any]:
    """Per-domain numbers from lm-eval's output (metrics are keyed ``"<metric>,<filter>"``)."""
    res = output["results"][task]
    metrics = {m: float(res[f"{m},none"]) for m in METRICS}
    for m, v in metrics.items():
        if not math.isfinite(v):
            raise MixbenchError(f"{task}: {m} is {v}; the model produced non-finite log-likelihoods")
    metrics["documents"] = int(output["n-samples"][task]["effective"])
    return metrics


def evaluate(
    model_dir: str | Path,
    tasks_dir: str | Path,
    batch_size: int = 16,
    device: str = "auto",
    limit: int | None = None,
) -> dict[str, Any]:
    """Run lm-eval on every domain task listed in the manifest and return the result record."""
    manifest = load_manifest(tasks_dir)
    device = resolve_device(device)
    model, tok = load_model(model_dir, device)
    max_length = context_length(model.config)

    import lm_eval
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = manifest["tasks"]
    _log(f"model {model_dir} ({sum(p.numel() for p in model.parameters()):,} parameters) on {device}, "
         f"context {max_length}, batch size {batch_size}")
    _log(f"tasks from {manifest['tasks_dir']}: " + ", ".join(
        f"{d} ({manifest['domains'][d]['documents']} docs)" for d in tasks))
    lm = HFLM(
        pretrained=model,
        tokenizer=tok,
        batch_size=batch_size,
        # Explicit, so the rolling windows are exactly the model's context and never lm-eval's
        # 2048 fallback or the tokenizer's model_max_length.
        max_length=max_length,
        # The document is encoded without special tokens; lm-eval itself prepends the single
        # prefix token (BOS, else EOS) that predicts the first token. A tokenizer whose
        # post-processor adds BOS/EOS would otherwise have those scored as part of the text.
        add_bos_token=False,
    )
    # include_defaults=False: indexing lm-eval's ~15k built-in tasks costs ~20 s and is unused.
    manager = TaskManager(include_path=manifest["tasks_dir"], include_defaults=False)
    output = simple_evaluate(
        model=lm,
        tasks=list(tasks.values()),
        task_manager=manager,
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,  # perplexity aggregations have no stderr anyway
    )
    per_domain = {d: domain_metrics(output, t) for d, t in tasks.items()}
    for d, m in per_domain.items():
        _log(f"{d}: bits/byte {m['bits_per_byte']:.4f}, byte ppl {m['byte_perplexity']:.3f}, "
             f"word ppl {m['word_perplexity']:.2f} ({m['documents']} docs)")
    return {
        "model": str(model_dir),
        "lm_eval_version": lm_eval.__version__,
        "settings": {"max_length": max_length, "batch_size": batch_size, "limit": limit,
                     "tasks_dir": manifest["tasks_dir"]},
        "tasks": per_domain,
        "lm_eval_results": _jsonable({k: output[k] for k in _KEPT_KEYS if k in output}),
    }


def _jsonable(obj: Any) -> Any:
    # lm-eval's configs may hold callables or dataclasses; their str() is enough for the record.
    return json.loads(json.dumps(obj, default=str))


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="folder written by save_pretrained (model + tokenizer)")
    p.add_argument("--tasks-dir", required=True, help="folder written by `python -m eval.tasks`")
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--limit", type=int, default=None, help="only the first N documents per domain (testing)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    record = evaluate(args.model, args.tasks_dir, args.batch_size, args.device, args.limit)
    write_json(args.out, record)
    _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
