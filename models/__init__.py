"""GPT-2 sizes, the single training loop, checkpointing and the sampler-driven data path."""
