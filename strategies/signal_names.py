"""The optional training signals a strategy may declare (``Strategy.signals``), by name, with what
the strategy receives in ``stats.extra[<name>]``: the contract between a strategy and the provider
that computes the signal (models/signals/__init__.py registers one provider per name here, and
refuses to load with a name left without one). The configuration check (strategies/grid_config.py)
refuses a strategy that declares a name not listed here."""

SIGNALS: dict[str, str] = {
    "reference_token_loss": "per-token losses of a frozen reference model on the step's tokens (DoReMi)",
    "target_gradient": "the gradient of a held-out target batch, kept on the device (DoGE)",
    "domain_gradients": "one gradient per domain; the strategy gets their inner products (DoGE)",
    "example_gradient_features": "sketched per-example gradients of probe batches (DoGraph)",
    "heldout_loss": "each domain's mean token loss on fixed val windows, float64 (K,), of the parameters before "
                    "the step's update (Aioli, Skill-It)",
    "domain_embeddings": "each domain's mean final hidden state on fixed windows, float64 (K, d_model), of the "
                         "parameters before the step's update (Chameleon)",
}
