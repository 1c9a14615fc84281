"""Evaluation: lm-eval task generation, the evaluation runner, aggregation and figures."""
