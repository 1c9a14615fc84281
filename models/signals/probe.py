"""``example_gradient_features``: sketched per-example gradients of probe batches (models/probe.py).

Options: ``params`` (regex over parameter names, None = the last transformer block),
``sketch_dim``, ``per_domain`` (train sequences per domain per probe) and ``target_per_domain``
(the fixed target batch, drawn once from the val split). Both come from their own sampler
streams, the same on every rank, so probing never shifts a training batch. Every probe is saved
to ``probes/step{N}.npz`` in the run folder (for the gradient-direction figures). The strategy
receives ``{"domains": [features of domain i], "target": features of the target batch}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixbench.io import atomic_path
from models.probe import GradientProbe
from models.signals.base import SignalProvider, StepContext

PROBE_STREAM, PROBE_TARGET_STREAM = 2000, 3000


class ExampleGradientFeatures(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        h, s, o = self.handles, self.handles.settings, self.options
        k = len(h.domains)
        self.probe = GradientProbe(h.raw_model, o.get("params"), o.get("sketch_dim", 1024), h.sources.seed, s.device)
        self.sampler = h.sources.sampler("train", h.domains, s.seq_len, PROBE_STREAM)
        self.rows = np.repeat(np.arange(k), o.get("per_domain", 8))
        # The target batch is drawn once, from a fresh stream: the same after a resume.
        target_source = h.sources.sampler("val", h.domains, s.seq_len, PROBE_TARGET_STREAM)
        self.target = torch.from_numpy(target_source.windows(np.repeat(np.arange(k), o.get("target_per_domain", 4))))
        self.snapshot_dir = None if h.sources.run_dir is None else h.sources.run_dir / "probes"

    def compute(self, step: StepContext) -> dict[str, Any]:
        tokens = torch.from_numpy(self.sampler.windows(self.rows))
        features = self.probe.features(tokens)
        target = self.probe.features(self.target)
        passes = self.handles.passes
        probed = (len(tokens) + len(self.target)) * passes.seq_len  # one forward + backward per sequence
        passes.count("forward", probed)
        passes.count("backward", probed)
        if self.handles.settings.rank == 0 and self.snapshot_dir is not None:
            with atomic_path(self.snapshot_dir / f"step{step.step:06d}.npz") as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, features=features.astype(np.float32), domains=self.rows,
                                    target=target.astype(np.float32), domain_names=np.array(self.handles.domains))
        k = len(self.handles.domains)
        return {"domains": [features[self.rows == i] for i in range(k)], "target": target}

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
