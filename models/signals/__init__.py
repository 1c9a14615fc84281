"""Registry of signal providers: signal name -> provider class, imported only when asked for.

A strategy declares the optional signals it needs (``Strategy.signals``); the training loop
looks each one up here and lets its provider compute it. The loop never names a signal, so a
new signal needs no change to the loop, the entry point, the benchmark or the figures.

How to add a signal
-------------------
1. Write ``models/signals/<module>.py`` with a subclass of ``models.signals.base.SignalProvider``:
   ``compute(step)`` returns what the strategy receives in ``stats.extra[<name>]`` (numpy
   arrays, floats, or small device tensors, which the loop brings to the host with the step's
   other results in one transfer; never tensors of the model's size). Count the token passes it
   makes with ``handles.passes.count(kind, tokens)`` (register a new kind and its FLOPs per
   token with ``handles.passes.register``), and return anything that must survive a resume
   from ``state_dict``. Its options come from the strategy's ``signal_options()[<name>]``. If it
   holds buffers of the model's size, say how many in ``parameter_copies`` (the memory estimate
   of models/memory.py adds them).
2. Register it below: ``"<name>": "models.signals.<module>:<Class>"``, and name it, with what
   the strategy receives, in strategies/signal_names.py (the strategies' side of the contract:
   this module refuses to load while the two lists differ).
3. Declare it in a strategy's ``signals``; the config check refuses names not listed there.

This module imports nothing heavy.
"""

from __future__ import annotations

from mixbench.registry import lazy_load
from strategies.signal_names import SIGNALS

REGISTRY: dict[str, str] = {
    # per-token losses of a frozen reference model on the step's tokens (DoReMi)
    "reference_token_loss": "models.signals.reference:ReferenceTokenLoss",
    # gradient of a held-out target batch, kept on the device for the inner products (DoGE)
    "target_gradient": "models.signals.target:TargetGradient",
    # one gradient per domain; the strategy gets their inner products, the model Σ w_i g_i (DoGE)
    "domain_gradients": "models.signals.domain_gradients:DomainGradients",
    # sketched per-example gradients of probe batches (DoGraph)
    "example_gradient_features": "models.signals.probe:ExampleGradientFeatures",
    # each domain's loss on fixed val windows, counted as extra forwards (Aioli, Skill-It)
    "heldout_loss": "models.signals.heldout_loss:HeldOutLoss",
    # each domain's mean last hidden state on fixed windows (Chameleon)
    "domain_embeddings": "models.signals.embeddings:DomainEmbeddings",
}

if set(REGISTRY) != set(SIGNALS):  # a declared signal nothing computes, or a provider no strategy can name
    raise ImportError(f"models/signals/__init__.py registers providers for {sorted(REGISTRY)}, but "
                      f"strategies/signal_names.py names {sorted(SIGNALS)}: list each signal in both")


def available() -> list[str]:
    return sorted(REGISTRY)


def provider_class(name: str):
    """Import and return the provider registered for ``name``; KeyError lists the valid names."""
    return lazy_load(REGISTRY, name, unknown="no provider computes signal", listing="signals with a provider")


def parameter_copies(names, num_domains: int) -> float:
    """The device memory the providers of ``names`` hold, in fp32 copies of the parameters."""
    return float(sum(provider_class(n).parameter_copies(num_domains) for n in names))


def computation_order(names) -> list[str]:
    """Signal names ordered so that every provider runs after the signals it ``uses``."""
    pending, ordered = sorted(names), []
    while pending:
        ready = [n for n in pending if not (set(provider_class(n).uses) & set(pending) - {n})]
        if not ready:
            raise ValueError(f"signals {pending} use each other in a cycle")
        ordered += ready
        pending = [n for n in pending if n not in ready]
    return ordered


def providers_for(strategy, handles) -> list:
    """One provider per signal ``strategy`` requires, with its options, each after those it uses."""
    options = strategy.signal_options()
    return [provider_class(name)(name=name, handles=handles, options=options.get(name, {}))
            for name in computation_order(strategy.required_signals())]
