"""Forward and backward passes of one optimizer step, and the count of every pass made.

Two orders, chosen by the strategy:
- usually each micro-batch is trained on as soon as it is forwarded, with the loss weights
  the strategy gave before the step, and the step's signals go to the strategy afterwards;
- a strategy that ``reweights_current_step`` (DoReMi: the step's loss uses the weights its
  own excess losses just produced) first sees the signals of every micro-batch, then the
  loss is taken with its new weights. By default (``training.reweighted_step: one_forward``)
  every micro-batch is forwarded once and keeps its graph until the weights are known: one
  forward per token, but the activations of the whole local batch are held at once. With
  ``two_forwards`` a no-grad pass collects the signals and each micro-batch is forwarded
  again, holding one micro-batch's activations at a time.

The per-token loss is the model's own forward (``model(input_ids=x, targets=y)``,
models/gpt2.py): chunked, no logits kept (models/token_loss.py), inside the compiled graph and
the DDP-wrapped forward.

Device to host: every transfer of the loop goes through ``to_host`` (a blocking copy: the host
waits for the device) or ``start_host_copy`` (into pinned memory without waiting, read a step
later), so that ``TRANSFERS`` counts the host synchronisations a step makes.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from models.flat_params import unwrap
from models.gpt2 import TrainableGPT2, unpadded_vocab_size
from models.token_loss import chunked_token_loss


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, L + 1) on the device
    domains: torch.Tensor  # (B,) on the device
    domain_ids: np.ndarray  # (B,) on the host
    micro: list[slice]
    global_domain_ids: np.ndarray | None = None  # every rank's rows of the step, on the host (None: this rank's)

    def all_domain_ids(self) -> np.ndarray:
        return self.domain_ids if self.global_domain_ids is None else self.global_domain_ids


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array to the device; on CUDA through pinned memory, without waiting for the copy."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class TransferCount:
    """Device-to-host transfers of the training loop: ``blocking`` ones make the host wait for
    the device (a synchronisation), ``lagged`` ones are read a step after they were started."""

    def __init__(self):
        self.blocking = self.lagged = 0

    def reset(self) -> None:
        self.blocking = self.lagged = 0


TRANSFERS = TransferCount()


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """The one blocking device-to-host copy of the loop (counted: each is a host synchronisation)."""
    TRANSFERS.blocking += 1
    return tensor.detach().cpu().numpy()


def _tensors(value, found: list) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensors(item, found)


def _replace(value, arrays: dict):
    if isinstance(value, torch.Tensor):
        return arrays[id(value)]
    if isinstance(value, dict):
        return {key: _replace(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_replace(item, arrays) for item in value)
    return value


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Every tensor as float64 in one vector (exact for fp32 values and integer ids below 2**53)."""
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def _split(flat: np.ndarray, tensors: list[torch.Tensor]) -> dict:
    arrays, start = {}, 0
    for t in tensors:
        dtype = torch.empty((), dtype=t.dtype).numpy().dtype
        array = flat[start:start + t.numel()].reshape(tuple(t.shape)).astype(dtype)
        arrays[id(t)] = array.item() if t.dim() == 0 else array  # a scalar tensor becomes a Python number
        start += t.numel()
    return arrays


def values_to_host(values):
    """``values`` (dicts, lists, tuples, anything else kept) with every tensor in it replaced by
    its numpy copy: one blocking transfer for all of them."""
    tensors: list[torch.Tensor] = []
    _tensors(values, tensors)
    if not tensors:
        return values
    return _replace(values, _split(to_host(_flatten(tensors)), tensors))


class PendingHostCopy:
    """Tensors on their way to the host: the copy is queued behind the work that makes them (on
    CUDA into pinned memory, without waiting), ``result()`` reads them, waiting only if the
    device has not got that far. Read after the next step's work is queued, it never leaves the
    device idle."""

    def __init__(self, values):
        TRANSFERS.lagged += 1
        self.values, self.tensors = values, []
        _tensors(values, self.tensors)
        flat = _flatten(self.tensors)
        self.event = None
        if flat.device.type == "cuda":
            self.host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self.host.copy_(flat, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = flat.cpu()

    def result(self):
        if self.event is not None:
            self.event.synchronize()
        return _replace(self.values, _split(self.host.numpy(), self.tensors))


def model_token_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of ``model`` (through its compiled / DDP wrappers when it computes
    it in its forward; a plain GPT-2, e.g. a saved reference model, through its body and output
    layer)."""
    plain = unwrap(model)
    if isinstance(plain, TrainableGPT2):
        return model(input_ids=x, targets=y)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        raise TypeError(f"a DDP-wrapped {type(plain).__name__} must compute its loss in its forward (build it "
                        "with models.gpt2.build_model) for its gradients to be synchronised")
    hidden = plain.transformer(input_ids=x, use_cache=False)[0]
    return chunked_token_loss(hidden, plain.lm_head.weight, y, unpadded_vocab_size(plain))


class StepPasses:
    def __init__(self, *, model, seq_len: int, num_domains: int, device: torch.device, bf16: bool, world_size: int,
                 num_parameters: int):
        self.model, self.seq_len, self.num_domains = model, seq_len, num_domains
        self.device, self.bf16, self.world_size = device, bf16, world_size
        # Tokens through each kind of pass on this rank, for the compute table, and the FLOPs
        # per token of each kind: a forward pass costs ~2N, a backward pass ~4N (Kaplan et al.
        # 2020, attention excluded). Signal providers register the kinds they add.
        self.token_passes = {"forward": 0, "backward": 0}
        self.flops_per_token = {"forward": 2 * num_parameters, "backward": 4 * num_parameters}

    def register(self, kind: str, flops_per_token: int) -> None:
        self.token_passes.setdefault(kind, 0)
        self.flops_per_token[kind] = int(flops_per_token)

    def count(self, kind: str, tokens: int) -> None:
        self.token_passes[kind] += int(tokens)

    def flops(self, token_passes: dict[str, int] | None = None) -> int:
        """FLOPs of the given pass counts (default: this rank's so far)."""
        passes = self.token_passes if token_passes is None else token_passes
        return sum(n * self.flops_per_token[kind] for kind, n in passes.items())

    def token_loss(self, model, tokens: torch.Tensor, kind: str | None = "forward") -> torch.Tensor:
        """Per-token next-token cross-entropy, shape (b, L); the tokens are counted as a pass of
        ``kind`` (None: not counted, e.g. a measurement that is not part of training)."""
        x, y = tokens[:, :-1], tokens[:, 1:]
        if kind is not None:
            self.count(kind, x.numel())
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return model_token_loss(model, x, y)

    def row_weights(self, loss_weights: np.ndarray | None, batch: Batch) -> tuple[torch.Tensor, float]:
        """Per-sequence weights and the normaliser: the loss is Σ w ℓ / Σ w over every token of
        the step on every rank (per-token weights w_d of the sequence's domain). Every rank knows
        the domains of the whole step, so the normaliser needs no collective and no device sync."""
        weights = np.ones(self.num_domains) if loss_weights is None else np.asarray(loss_weights, dtype=np.float64)
        row_w = to_device(weights[batch.domain_ids].astype(np.float32), self.device)
        denom = float(weights[batch.all_domain_ids()].sum()) * self.seq_len
        return row_w, denom

    def train_micro(self, batch: Batch, i: int, row_w: torch.Tensor, denom: float,
                    token_loss: torch.Tensor | None = None) -> torch.Tensor:
        """Forward (unless given a loss with its graph) and backward of micro-batch i."""
        rows = batch.micro[i]
        last = i == len(batch.micro) - 1
        sync = self.model.no_sync() if (self.world_size > 1 and not last) else nullcontext()
        with sync:
            if token_loss is None:
                token_loss = self.token_loss(self.model, batch.tokens[rows])
            # DDP averages gradients over ranks; scale so the result is the global weighted mean.
            ((token_loss.sum(dim=1) * row_w[rows]).sum() * self.world_size / denom).backward()
        self.count("backward", token_loss.numel())
        return token_loss.detach()

    def forward_only(self, batch: Batch, keep_graph: bool) -> list[torch.Tensor]:
        """Per-token losses of every micro-batch, with their graphs if ``keep_graph``. Under DDP
        only the last forward prepares gradient synchronisation: ``backward_kept`` then runs one
        backward through all of them, which reduces each gradient once."""
        if not keep_graph:
            with torch.no_grad():
                return [self.token_loss(self.model, batch.tokens[rows]) for rows in batch.micro]
        losses = []
        for i, rows in enumerate(batch.micro):
            last = i == len(batch.micro) - 1
            with self.model.no_sync() if (self.world_size > 1 and not last) else nullcontext():
                losses.append(self.token_loss(self.model, batch.tokens[rows]))
        return losses

    def backward_kept(self, batch: Batch, graphs: list[torch.Tensor], row_w: torch.Tensor,
                      denom: float) -> None:
        """One backward through the kept graphs of every micro-batch with the given row weights."""
        total = sum((loss.sum(dim=1) * row_w[rows]).sum() for loss, rows in zip(graphs, batch.micro))
        (total * self.world_size / denom).backward()
        self.count("backward", sum(loss.numel() for loss in graphs))

    def domain_counts(self, batch: Batch) -> np.ndarray:
        """Tokens per domain over the step on every rank (known on the host: no transfer)."""
        return np.bincount(batch.all_domain_ids(), minlength=self.num_domains).astype(np.float64) * self.seq_len

    def domain_sums(self, token_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Summed token loss per domain over the step on every rank, float64, on the device."""
        loss_sum = torch.zeros(self.num_domains, device=self.device, dtype=torch.float64)
        loss_sum.index_add_(0, batch.domains, token_loss.sum(dim=1).double())
        self.all_reduce(loss_sum)
        return loss_sum

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-rank tensor over ranks (same shape on every rank), on the device."""
        if self.world_size > 1:
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor)
            tensor = torch.cat(parts)
        return tensor

    def all_reduce(self, *tensors: torch.Tensor) -> None:
        if self.world_size > 1:
            for t in tensors:
                dist.all_reduce(t)
