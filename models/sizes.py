"""GPT-2 model sizes: the table and parameter formulas of mixbench/model_sizes.py, which lives in
the bottom layer so that mixbench/ (the preflight's disk estimate) reads it without importing models/."""

from mixbench.model_sizes import SIZES, ModelSize, approx_parameters, non_embedding_parameters  # noqa: F401
