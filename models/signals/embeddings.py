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
DDP each rank embeds every window-th row and the sums are all-reduced. The strategy receives a
float64 array (K, d_model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mixbench.errors import ConfigError
from models.heldout import HeldOutSet
from models.signals.base import SignalProvider, StepContext
from models.signals.heldout_loss import windows_option
from models.step import to_device, to_host


class DomainEmbeddings(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        from corpus.tokens import TokenStore

        h, s = self.handles, self.handles.settings
        unknown = sorted(set(self.options) - {"split", "windows", "layer"})
        split, self.layer = self.options.get("split", "val"), self.options.get("layer", "final")
        if unknown or split not in ("val", "train") or self.layer not in ("final", "middle"):
            raise ConfigError(f"signal {self.name!r}: options are split ('val' or 'train'), windows and layer "
                              f"('final' or 'middle'); got {self.options}")
        if h.sources.data_dir is None:
            raise ValueError(f"signal {self.name!r} needs token files: build the loop with SignalSources(data_dir=...)")
        if self.layer == "middle" and h.raw_model.config.n_layer < 2:
            # transformers' hidden_states[1] of a one-block model is the last one, after the final norm
            raise ConfigError(f"signal {self.name!r}: layer 'middle' needs a model of 2 or more blocks; this one has "
                              f"{h.raw_model.config.n_layer}, whose middle is its last: use layer 'final' or a deeper model")
        store = TokenStore(Path(h.sources.data_dir) / "tokens", split, list(h.domains))
        windows = HeldOutSet(store, seq_len=s.seq_len, windows_per_domain=windows_option(self.options, self.name),
                             split=split)
        mine = np.arange(len(windows.tokens)) % s.world_size == s.rank
        self.inputs = to_device(windows.tokens[mine][:, :-1], s.device)
        self.domain_ids = torch.as_tensor(windows.domain_ids[mine], device=s.device)
        self.num_domains, self.world_size = len(h.domains), s.world_size

    @torch.no_grad()
    def compute(self, step: StepContext) -> np.ndarray:
        model, passes, micro = self.handles.raw_model, self.handles.passes, self.handles.settings.micro_batch_size
        was_training = model.training
        model.eval()
        width = model.config.n_embd
        sums = torch.zeros(self.num_domains, width, dtype=torch.float64, device=self.inputs.device)
        counts = torch.zeros(self.num_domains, dtype=torch.float64, device=self.inputs.device)
        for start in range(0, len(self.inputs), micro):
            chunk, ids = self.inputs[start:start + micro], self.domain_ids[start:start + micro]
            passes.count("forward", chunk.numel())
            with torch.autocast(passes.device.type, dtype=torch.bfloat16, enabled=passes.bf16):
                hidden = self.hidden(model, chunk)
            sums.index_add_(0, ids, hidden.double().sum(dim=1))
            counts.index_add_(0, ids, torch.full_like(ids, chunk.shape[1], dtype=torch.float64))
        model.train(was_training)
        if self.world_size > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        return to_host(sums / counts[:, None])

    def hidden(self, model, chunk):
        """The hidden states the ``layer`` option names, (rows, tokens, n_embd)."""
        if self.layer == "final":
            return model.transformer(input_ids=chunk, use_cache=False)[0]  # after the final layer norm
        states = model.transformer(input_ids=chunk, use_cache=False, output_hidden_states=True).hidden_states
        return states[len(states) // 2]
