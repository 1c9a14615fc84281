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
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F


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


class StepPasses:
    def __init__(self, *, model, seq_len: int, num_domains: int, device: torch.device, bf16: bool, world_size: int,
                 num_parameters: int, vocab_size: int | None = None):
        self.model, self.seq_len, self.k = model, seq_len, num_domains
        self.vocab_size = vocab_size  # logits beyond it are the embedding's padding: never scored
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
            logits = model(input_ids=x).logits[..., : self.vocab_size]
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(x.shape)

    def row_weights(self, loss_weights: np.ndarray | None, batch: Batch) -> tuple[torch.Tensor, float]:
        """Per-sequence weights and the normaliser: the loss is Σ w ℓ / Σ w over every token of
        the step on every rank (per-token weights w_d of the sequence's domain). Every rank knows
        the domains of the whole step, so the normaliser needs no collective and no device sync."""
        weights = np.ones(self.k) if loss_weights is None else np.asarray(loss_weights, dtype=np.float64)
        row_w = torch.as_tensor(weights[batch.domain_ids], dtype=torch.float32).to(self.device)
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

    def domain_sums(self, token_loss: torch.Tensor, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Summed token loss and token count per domain over the step on every rank."""
        loss_sum = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        count = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        loss_sum.index_add_(0, batch.domains, token_loss.sum(dim=1).double())
        count.index_add_(0, batch.domains, torch.full_like(loss_sum[batch.domains], self.seq_len))
        self.all_reduce(loss_sum, count)
        return loss_sum.cpu().numpy(), count.cpu().numpy()

    def gather(self, tensor: torch.Tensor) -> np.ndarray:
        """Concatenate a per-rank tensor over ranks (same shape on every rank)."""
        if self.world_size > 1:
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor)
            tensor = torch.cat(parts)
        return tensor.cpu().numpy()

    def all_reduce(self, *tensors: torch.Tensor) -> None:
        if self.world_size > 1:
            for t in tensors:
                dist.all_reduce(t)
