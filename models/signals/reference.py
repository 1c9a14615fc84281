"""``reference_token_loss``: a frozen reference model's per-token losses on the step's tokens.

Options: ``stage``, the upstream stage whose saved model is the reference (DoReMi: its
``reference`` run). The reference runs in eval mode (no dropout: a fixed function of the
tokens), without a graph, micro-batch by micro-batch, through the same chunked loss as the
training forward (models/token_loss.py). The strategy receives, gathered over every rank: the
training forward's per-token losses, the reference's, and each row's domain (gathered on the
device; the loop brings them to the host with the step's other stats in one transfer).
"""

from __future__ import annotations

from typing import Any

import torch

from mixbench.errors import ConfigError, TrainingError
from models.gpt2 import count_parameters
from models.signals.base import SignalProvider, StepContext


class ReferenceTokenLoss(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        stage = self.options["stage"]
        upstream = self.handles.sources.upstream
        if stage not in upstream:
            raise ConfigError(f"signal {self.name!r} needs the model of stage {stage!r}: pass --upstream {stage}=DIR")
        from transformers import GPT2LMHeadModel

        self.reference = GPT2LMHeadModel.from_pretrained(upstream[stage] / "model").to(self.handles.settings.device)
        self.reference.eval()
        self.reference.requires_grad_(False)
        self.handles.passes.register("reference_forward", 2 * count_parameters(self.reference))

    @classmethod
    def parameter_copies(cls, num_domains: int) -> float:
        return 1.0  # the frozen reference model (its forwards keep no graph)

    @torch.no_grad()
    def compute(self, step: StepContext) -> dict[str, Any]:
        if step.token_loss is None:
            raise TrainingError(f"signal {self.name!r} needs the per-token losses of the step's training forward, "
                                "which a provider that computes the step's gradient itself does not give")
        passes, batch = self.handles.passes, step.batch
        reference = torch.cat([passes.token_loss(self.reference, batch.tokens[rows], kind="reference_forward")
                               for rows in batch.micro])
        return {"token_loss": passes.gather(step.token_loss.float()),  # device tensors: see the docstring
                "reference_token_loss": passes.gather(reference.float()),
                "token_domains": passes.gather(batch.domains)}
