"""Forward and backward passes of one optimizer step, and the signals strategies asked for.

Two orders, chosen by the strategy:
- usually each micro-batch is trained on as soon as it is forwarded, with the loss weights
  the strategy gave before the step, and the step's signals go to the strategy afterwards;
- a strategy that ``reweights_current_step`` (DoReMi: the step's loss uses the weights its
  own excess losses just produced) first sees the signals of every micro-batch, then the
  loss is taken with its new weights. One micro-batch keeps its graph for that; with several,
  a no-grad forward pass collects the signals and each micro-batch is forwarded again.
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


class StepPasses:
    def __init__(self, model, seq_len: int, num_domains: int, device: torch.device, bf16: bool, world_size: int,
                 reference_model=None):
        self.model, self.seq_len, self.k = model, seq_len, num_domains
        self.device, self.bf16, self.world_size = device, bf16, world_size
        self.reference_model = reference_model
        # Tokens through each kind of pass on this rank, for the compute table: a forward pass
        # costs ~2N FLOPs per token and a backward pass ~4N (Kaplan et al. 2020, attention excluded).
        self.token_passes = {"forward": 0, "backward": 0, "reference_forward": 0}

    def count(self, kind: str, tokens: int) -> None:
        self.token_passes[kind] += int(tokens)

    def token_loss(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token next-token cross-entropy, shape (b, L)."""
        x, y = tokens[:, :-1], tokens[:, 1:]
        self.count("reference_forward" if model is self.reference_model else "forward", x.numel())
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(x.shape)

    def row_weights(self, loss_weights: np.ndarray | None, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence weights and the normaliser: the loss is Σ w ℓ / Σ w over every token of
        the step on every rank (per-token weights w_d of the sequence's domain)."""
        rows = np.ones(len(batch.domain_ids)) if loss_weights is None else loss_weights[batch.domain_ids]
        row_w = torch.as_tensor(rows, dtype=torch.float32, device=self.device)
        denom = row_w.sum() * self.seq_len
        self.all_reduce(denom)
        return row_w, denom

    def train_micro(self, batch: Batch, i: int, row_w: torch.Tensor, denom: torch.Tensor,
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
        with nullcontext() if keep_graph else torch.no_grad():
            return [self.token_loss(self.model, batch.tokens[rows]) for rows in batch.micro]

    @torch.no_grad()
    def reference_token_loss(self, batch: Batch) -> torch.Tensor:
        """The frozen reference model's per-token losses: one forward pass, no graph."""
        return torch.cat([self.token_loss(self.reference_model, batch.tokens[rows]) for rows in batch.micro])

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
