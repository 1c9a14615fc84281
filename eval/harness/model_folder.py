"""What evaluation checks in a model folder before it loads anything from it, and what the result
records of where the model came from.

A model folder is ``RUN/model`` (written by ``save_pretrained``), and ``RUN/run.json`` records
the digests of what the run trained with (mixbench/lineage.py). Evaluation

- loads weights only from safetensors files: a pickle (``pytorch_model.bin``, ``*.pkl``) can
  execute code while it loads, so a folder holding only one is an error, never a fallback;
- refuses a tokenizer with more tokens than the model's embedding has rows (its larger ids
  would index past the embedding while scoring);
- refuses a tokenizer other than the one the run trained with (scores of text cut into other
  tokens would silently mean something else), and warns where the run recorded none.

Torch-free: it reads JSON files only.
"""

from __future__ import annotations

from pathlib import Path

from mixbench.errors import DataError
from mixbench.io import read_json
from mixbench.lineage import RUN_FILE, TOKENIZER_FILE, run_digest, tokenizer_digest

# What save_pretrained writes: one file, or shards listed by an index.
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
# Weights formats that are pickles (torch.save and friends), named in the error.
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


def check_model_files(model_dir: str | Path) -> None:
    """A config, safetensors weights and a tokenizer.json are there; DataError (one line) if not."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise DataError(f"model directory {model_dir} does not exist or has no config.json; "
                        "train the model first (it must be written with save_pretrained)")
    if not any((model_dir / name).is_file() for name in SAFETENSORS):
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        retrain = f"retrain it (snakemake --cores all --forcerun {run_file(model_dir)})"
        if pickles:
            raise DataError(f"{model_dir} holds its weights only as a pickle ({', '.join(pickles)}): evaluation loads "
                            f"only safetensors weights ({SAFETENSORS[0]}), since loading a pickle can execute code; "
                            f"re-save the model where its origin is trusted with `model.save_pretrained('{model_dir}', "
                            f"safe_serialization=True)`, or {retrain}")
        raise DataError(f"{model_dir} holds no model weights (no {SAFETENSORS[0]}): it was not saved with "
                        f"save_pretrained, or its saving did not finish; {retrain}")
    if not (model_dir / TOKENIZER_FILE).is_file():
        tokenizer_digest(model_dir)  # raises its one-line error naming the folder and the fix


def run_file(model_dir: str | Path) -> Path:
    """The run.json of the run a model folder belongs to (``RUN/model`` -> ``RUN/run.json``)."""
    return Path(model_dir).parent / RUN_FILE


def model_lineage(model_dir: str | Path) -> dict[str, str | None]:
    """What a result records of where it came from: ``{"run": sha256 of RUN/run.json (None for a
    folder outside a run), "tokenizer": the model folder's tokenizer digest}``."""
    run = run_file(model_dir)
    return {"run": run_digest(run.parent) if run.is_file() else None, "tokenizer": tokenizer_digest(model_dir)}


def check_vocabulary(model_dir: str | Path, tokenizer_size: int, embedding_rows: int) -> None:
    """A tokenizer with more tokens than the embedding has rows would index past it while scoring."""
    if tokenizer_size > embedding_rows:
        raise DataError(f"the tokenizer in {model_dir} has {tokenizer_size} tokens but the model's embedding has only "
                        f"{embedding_rows} rows (config.json vocab_size): it is not the tokenizer this model trained "
                        f"with; put the run's own tokenizer back in {model_dir}, or retrain the run "
                        f"(snakemake --cores all --forcerun {run_file(model_dir)})")


def check_tokenizer_lineage(model_dir: str | Path) -> str | None:
    """The model folder's tokenizer is the one its run trained with (run.json's
    ``inputs.tokenizer``): DataError if not; a warning (returned) where that cannot be checked."""
    run = run_file(model_dir)
    if not run.is_file():
        return (f"{model_dir} is not in a run folder (no {run}): its tokenizer cannot be checked against the one "
                "it trained with, and the result records no run (lineage.run is null)")
    recorded = (read_json(run).get("inputs") or {}).get("tokenizer")
    if recorded is None:
        return (f"{run} records no inputs.tokenizer (written before runs recorded their inputs): the tokenizer in "
                f"{model_dir} cannot be checked against the one the run trained with; retrain the run to record it")
    current = tokenizer_digest(model_dir)
    if current != recorded:
        raise DataError(f"the tokenizer in {model_dir} (digest {current[:12]}) is not the one its run trained with "
                        f"({run} records {recorded[:12]}): its scores would not be the run's; put the run's own "
                        f"tokenizer back in {model_dir}, or retrain the run (snakemake --cores all --forcerun {run})")
    return None
