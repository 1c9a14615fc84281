"""Checkpoints that cannot run code when loaded and are checked before they are trusted.

A checkpoint is a folder ``checkpoints/step000120/`` in the run folder holding

- ``tensors.safetensors``: every tensor and numpy array of the state (model, optimizer, RNG);
- ``state.json``: the rest (counters, hyperparameters, strategy scalars) as JSON, with each
  tensor replaced by a reference into the safetensors file, plus the sha256 of both parts.

Neither format can execute code on load (no pickle anywhere). A folder whose checksums do not
match, or that cannot be read, is moved aside as ``step000120.corrupt`` and the previous
checkpoint is tried; the last two are kept so a checkpoint damaged on disk costs at most one
interval of training. Folders are written whole (``mixbench.io.atomic_dir``, fsynced).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mixbench.io import atomic_dir, fsync_dir, sha256_file

CHECKPOINTS = "checkpoints"
TENSORS, STATE = "tensors.safetensors", "state.json"
KEEP = 2
# Written by mixbench before checkpoints became folders: a pickle, so it is never opened.
LEGACY_NAME = "checkpoint.pt"
_STEP_DIR = re.compile(r"step(\d+)")


class CorruptCheckpoint(Exception):
    """A checkpoint folder that must not be resumed; the message says why."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """The checkpoint folders under ``root`` (a run's ``checkpoints/``), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[4:]))


def save_checkpoint(root: str | Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``root/stepNNNNNN/`` and remove all but the newest KEEP checkpoints."""
    root = Path(root)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, {}, "state")
    folder = root / f"step{step:06d}"
    with atomic_dir(folder) as tmp:
        save_file(tensors, tmp / TENSORS)
        text = _canonical(skeleton)
        record = {"step": step, "tensors_sha256": sha256_file(tmp / TENSORS),
                  "state_sha256": hashlib.sha256(text.encode()).hexdigest(), "state": skeleton}
        (tmp / STATE).write_text(json.dumps(record), encoding="utf-8")
    for old in checkpoint_dirs(root)[:-KEEP]:
        shutil.rmtree(old)
    fsync_dir(root)
    return folder


def read_checkpoint(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The state saved in ``folder``, after checking both checksums (``verify=False``: a folder
    another process has just checked). CorruptCheckpoint when the folder's content is bad; an
    error of the machine rather than the file (out of memory, permissions, a stale NFS handle)
    is raised as it is, so the job fails and can be retried without losing the checkpoint."""
    try:
        record = json.loads((folder / STATE).read_text(encoding="utf-8"))
        skeleton = record["state"]
        expected_state, expected_tensors = record["state_sha256"], record["tensors_sha256"]
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{folder / STATE} is missing") from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpoint(f"{folder / STATE} cannot be read ({type(exc).__name__}: {exc})") from None
    if verify and hashlib.sha256(_canonical(skeleton).encode()).hexdigest() != expected_state:
        raise CorruptCheckpoint(f"{folder / STATE} does not match its recorded sha256")
    try:
        actual = sha256_file(folder / TENSORS) if verify else expected_tensors
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{folder / TENSORS} is missing") from None
    if actual != expected_tensors:
        raise CorruptCheckpoint(f"{folder / TENSORS} has sha256 {actual[:12]}…, "
                                f"its checkpoint recorded {str(expected_tensors)[:12]}…")
    try:
        mapped = load_file(folder / TENSORS, device="cpu")
    except SafetensorError as exc:  # checksums can match a crafted file: its header decides
        raise CorruptCheckpoint(f"{folder / TENSORS} is not a safetensors file ({exc})") from None
    # Copies, so that no tensor keeps the file mapped: a mapped file could not be removed from
    # an NFS folder (it would leave a .nfsXXXX behind) and its space would stay in use.
    tensors = {key: tensor.clone() for key, tensor in mapped.items()}
    del mapped
    try:
        return _decode(skeleton, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpoint(f"{folder} names tensors its file does not hold ({type(exc).__name__}: {exc})") from None


def load_latest(root: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest good checkpoint under ``root`` and its state, or None. Each bad one on the way is
    moved aside (``*.corrupt``) with a message on stderr saying which file and why."""
    root = Path(root)
    legacy = root.parent / LEGACY_NAME
    if legacy.exists():
        aside = _move_aside(legacy, ".legacy")
        print(f"warning: {legacy} is a checkpoint in the old pickle format, which is never loaded because "
              f"unpickling can run code; moved it aside to {aside.name}", file=sys.stderr)
    candidates = checkpoint_dirs(root)
    skipped = False
    for folder in reversed(candidates):
        try:
            state = read_checkpoint(folder)
        except CorruptCheckpoint as exc:
            aside = _move_aside(folder, ".corrupt")
            print(f"warning: corrupt checkpoint: {exc}; moved it aside to {aside}", file=sys.stderr)
            skipped = True
            continue
        if skipped:
            print(f"resuming from the previous good checkpoint, {folder}", file=sys.stderr)
        return folder, state
    if skipped:
        print(f"no good checkpoint is left in {root}; starting this run over from step 0", file=sys.stderr)
    return None


def remove_checkpoints(root: Path) -> None:
    """Remove the checkpoints under ``root`` (corrupt ones moved aside are kept for inspection):
    after the run has finished, its model supersedes them."""
    for folder in checkpoint_dirs(root):
        shutil.rmtree(folder)


def _move_aside(path: Path, suffix: str) -> Path:
    target, n = path.with_name(path.name + suffix), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{n}")
    path.rename(target)
    return target


def _canonical(skeleton: Any) -> str:
    return json.dumps(skeleton, sort_keys=True, allow_nan=True)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], seen: dict, where: str) -> Any:
    """JSON-able ``obj`` with tensors and arrays moved into ``tensors`` (shared storage stored once)."""
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": _store(obj.detach(), tensors, seen, where)}
    if isinstance(obj, (np.ndarray, np.generic)):  # numpy scalars too: a float32 must stay a float32
        array = np.asarray(obj)
        if array.dtype == object:
            raise TypeError(f"{where}: an array of Python objects cannot go into a checkpoint")
        key = _store(torch.from_numpy(np.ascontiguousarray(array).reshape(array.shape)), tensors, seen, where)
        return {"__ndarray__": key, "shape": list(array.shape), "scalar": isinstance(obj, np.generic)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, seen, f"{where}.{k}") for k, v in obj.items()}
        # Keys JSON cannot hold as they are (the optimizer's integer parameter ids).
        return {"__items__": [[_encode(k, tensors, seen, f"{where} key"), _encode(v, tensors, seen, f"{where}.{k}")]
                              for k, v in obj.items()]}
    raise TypeError(f"{where}: a value of type {type(obj).__name__} cannot go into a checkpoint")


def _store(tensor: torch.Tensor, tensors: dict, seen: dict, where: str) -> str:
    """The key of ``tensor`` in ``tensors``: a tensor that is the same view of the same memory as
    one stored before (tied weights) gets that one's key. Views are told apart on the tensor as
    it is, on its own device, and ``seen`` keeps the tensors alive so no address is reused."""
    view = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
    if view is not None and view in seen:
        return seen[view][0]
    key = f"t{len(tensors)}"
    # A different view of memory already stored must not alias it (safetensors refuses shared
    # or non-contiguous memory).
    shared = view is not None and any(v[:2] == view[:2] for v in seen)
    copy = tensor.to("cpu", copy=shared)
    tensors[key] = copy.contiguous() if not shared else copy.clone(memory_format=torch.contiguous_format)
    if view is not None:
        seen[view] = (key, tensor)
    return key


def _decode(obj: Any, tensors: dict[str, torch.Tensor], used: set | None = None) -> Any:
    used = set() if used is None else used
    if isinstance(obj, list):
        return [_decode(v, tensors, used) for v in obj]
    if not isinstance(obj, dict):
        return obj
    for marker in ("__tensor__", "__ndarray__"):
        if marker in obj:
            key = obj[marker]
            tensor = tensors[key].clone() if key in used else tensors[key]  # a tied copy must not alias the other
            used.add(key)
            if marker == "__tensor__":
                return tensor
            array = tensor.numpy().reshape(obj["shape"])
            return array[()] if obj["scalar"] else array
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, used) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors, used): _decode(v, tensors, used) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors, used) for k, v in obj.items()}
