"""Evaluation, in two packages that never import each other: ``eval.harness`` scores saved models
with lm-eval (task generation, perplexity and downstream scoring), ``eval.analysis`` turns
finished runs into tables and figures. What both read lives here: the held-out metrics
(eval/metrics.py)."""
