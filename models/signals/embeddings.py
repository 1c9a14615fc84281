"""``domain_embeddings``: one vector per domain from the model's last hidden states (Chameleon).

Options: ``split`` ("val", the default, or "train"), ``windows`` per domain (default 8) and
``layer``: "final" (the default), the output of the last layer norm, the input of the output layer;
or "middle", the residual stream after block ⌈n_layer / 2⌉, without a layer norm (the hidden state
``hidden_states[len(hidden_states) // 2]`` of transformers, which Chameleon's authors embed with).
The windows are evenly spaced through each domain's split with no randomness (models/heldout.py's
construction), so the embeddings of a run depend on its model alone. A domain's embedding is the
mean, over every token of its windows, of that hidden state. The windows run through the model when the step's signals are
computed (after its backward, before its optimizer update: at step t, the parameters after step
t − 1), in eval mode and without a graph; their forwards are counted as ``forward`` passes. Under
DDP each rank embeds every world_size-th window and the sums are all-reduced (models/heldout.py's
``HeldOutEvaluator.domain_means``, which the learning curves and ``heldout_loss`` use too). The strategy receives a
float64 array (K, d_model).
"""

from __future__ import annotations

import numpy as np
import torch

from mixbench.errors import ConfigError
from models.heldout import HeldOutEvaluator, HeldOutSet
from models.signals.base import SignalProvider, StepContext
from models.signals.heldout_loss import windows_option


class DomainEmbeddings(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        h, s = self.handles, self.handles.settings
        unknown = sorted(set(self.options) - {"split", "windows", "layer"})
        split, self.layer = self.options.get("split", "val"), self.options.get("layer", "final")
        if unknown or split not in ("val", "train") or self.layer not in ("final", "middle"):
            raise ConfigError(f"signal {self.name!r}: options are split ('val' or 'train'), windows and layer "
                              f"('final' or 'middle'); got {self.options}")
        if self.layer == "middle" and h.raw_model.config.n_layer < 2:
            # transformers' hidden_states[1] of a one-block model is the last one, after the final norm
            raise ConfigError(f"signal {self.name!r}: layer 'middle' needs a model of 2 or more blocks; this one has "
                              f"{h.raw_model.config.n_layer}, whose middle is its last: use layer 'final' or a deeper model")
        windows = HeldOutSet(h.sources.token_store(split, h.domains), seq_len=s.seq_len, split=split,
                             windows_per_domain=windows_option(self.options, self.name))
        # Its forwards are counted here (``forward``), not by the evaluator: they are no loss.
        self.evaluator = HeldOutEvaluator(windows, passes=h.passes, micro_batch_size=s.micro_batch_size,
                                          rank=s.rank, world_size=s.world_size)

    def compute(self, step: StepContext) -> np.ndarray:
        model, passes = self.handles.raw_model, self.handles.passes

        def hidden_sums(rows: torch.Tensor) -> torch.Tensor:
            inputs = rows[:, :-1]
            passes.count("forward", inputs.numel())
            with torch.autocast(passes.device.type, dtype=torch.bfloat16, enabled=passes.bf16):
                return self.hidden(model, inputs).double().sum(dim=1)

        return self.evaluator.domain_means(model, hidden_sums, width=model.config.n_embd)

    def hidden(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """The hidden states the ``layer`` option names, (rows, tokens, n_embd)."""
        if self.layer == "final":
            return model.transformer(input_ids=inputs, use_cache=False)[0]  # after the final layer norm
        states = model.transformer(input_ids=inputs, use_cache=False, output_hidden_states=True).hidden_states
        return states[len(states) // 2]
