"""What every evaluation shares: loading a saved model for lm-eval and running its tasks.

Importing this module switches Hugging Face libraries to offline mode: evaluation reads only
local files (the saved model, generated task data, or datasets already in the HF cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

# Must precede the first import of huggingface_hub / datasets / transformers, which read these
# flags once at import time.
for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"

from eval.harness.model_folder import (check_model_files, check_tokenizer_lineage,  # noqa: E402
                                      check_vocabulary)
from mixbench.errors import ConfigError, DataError  # noqa: E402

# Parts of lm-eval's output that describe the evaluation; the rest (timings, environment,
# model repr) would make two identical runs write different files.
KEPT_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")


def log(msg: str) -> None:
    print(f"[eval] {msg}", file=sys.stderr, flush=True)


def resolve_device(device: str) -> str:
    import torch

    from mixbench.gpu_checks import TorchFacts, job_device_problem

    problem = job_device_problem(device, TorchFacts.here())  # given a GPU: use it, never the CPU unseen
    if problem:
        raise ConfigError(problem)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return device


def load_model(model_dir: str | Path, device: str):
    """Load model and tokenizer saved with ``save_pretrained``; give the tokenizer a pad token.

    The folder is checked first (eval/harness/model_folder.py): safetensors weights only, a
    tokenizer that fits the embedding and is the one its run trained with. Nothing it loads may
    execute code: no pickle, no code shipped with the model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    check_model_files(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load the tokenizer saved in {model_dir}: {e}") from e
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    check_vocabulary(model_dir, len(tok), config.get_text_config().vocab_size)
    warning = check_tokenizer_lineage(model_dir)
    if warning:
        log(f"WARNING: {warning}")
    if tok.eos_token_id is None and tok.bos_token_id is None:
        # lm-eval predicts a document's first token from BOS, or EOS when there is no BOS.
        raise DataError(f"the tokenizer in {model_dir} has neither an eos nor a bos token")
    if tok.pad_token is None:
        # Padding only fills batches (masked out of the score); EOS is the usual GPT-2 choice.
        tok.pad_token = tok.eos_token or tok.bos_token
    # float32 everywhere: reduced precision would shift the scores between devices.
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, local_files_only=True, dtype="float32",
                                                 use_safetensors=True, trust_remote_code=False)
    return model.to(device).eval(), tok


def context_length(config) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    raise DataError("the model config has no n_positions / max_position_embeddings")


def make_lm(model_dir: str | Path, device: str, batch_size: int):
    """lm-eval's HF wrapper around the saved model, and the settings it runs with."""
    from lm_eval.models.huggingface import HFLM

    device = resolve_device(device)
    model, tok = load_model(model_dir, device)
    max_length = context_length(model.config)
    log(f"model {model_dir} ({sum(p.numel() for p in model.parameters()):,} parameters) on {device}, "
        f"context {max_length}, batch size {batch_size}")
    lm = HFLM(
        pretrained=model,
        tokenizer=tok,
        batch_size=batch_size,
        # Explicit, so windows and truncation use exactly the model's context and never
        # lm-eval's 2048 fallback or the tokenizer's model_max_length.
        max_length=max_length,
        # Text is encoded without special tokens; lm-eval itself prepends the single prefix
        # token (BOS, else EOS) where a request has no context. A tokenizer whose post-processor
        # adds BOS/EOS would otherwise have those scored as part of the text.
        add_bos_token=False,
    )
    return lm, {"max_length": max_length, "batch_size": batch_size}


def task_manager(include_path: str | None, include_defaults: bool):
    """lm-eval's task index: the YAMLs under ``include_path``, and with ``include_defaults`` its registry."""
    from lm_eval.tasks import TaskManager

    # include_defaults=False where possible: indexing lm-eval's ~15k built-in tasks costs ~20 s.
    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def run_tasks(lm, tasks: Sequence[Any], include_path: str | None = None, include_defaults: bool = False,
              limit: int | None = None, num_fewshot: int | None = None, bootstrap_iters: int = 0,
              manager=None) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` over task names resolved in the given task index (or in
    ``manager``, one already built), or over Task / Group objects that index already built."""
    from unittest import mock

    from lm_eval import evaluator

    if manager is None:
        manager = task_manager(include_path, include_defaults)
    # lm-eval's environment report runs ~30 subprocesses (torch's collect_env: ~0.8 s a call) for
    # keys that KEPT_KEYS drops; the versions that matter are in every result's provenance.
    with mock.patch.object(evaluator, "add_env_info", lambda results: None):
        return evaluator.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                         num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=bootstrap_iters)


def kept_output(output: dict[str, Any]) -> dict[str, Any]:
    # lm-eval's configs may hold callables or dataclasses; their str() is enough for the record.
    return json.loads(json.dumps({k: output[k] for k in KEPT_KEYS if k in output}, default=str))


def lm_eval_version() -> str:
    import lm_eval

    return lm_eval.__version__


def model_parser(module: str, doc: str, tasks_help: str, *, one_model: bool = True) -> argparse.ArgumentParser:
    """The arguments every evaluation command takes (``--model`` where it scores ``one_model``)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    if one_model:
        p.add_argument("--model", required=True, help="folder written by save_pretrained (model + tokenizer)")
    p.add_argument("--tasks-dir", help=tasks_help)
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples per task (testing)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
