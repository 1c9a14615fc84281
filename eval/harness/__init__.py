"""The lm-eval side of evaluation: task generation and scoring of saved models (python -m eval.harness.evaluate)."""
