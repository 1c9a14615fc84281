"""Build a randomly initialised GPT-2 (no pretrained weights) of a named size."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from models.sizes import SIZES


def gpt2_config(size: str, vocab_size: int, dropout: float = 0.0, bos_id: int = 0, eos_id: int = 0) -> GPT2Config:
    spec = SIZES[size]
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
    )


def build_model(config: GPT2Config, device: str | torch.device = "cpu") -> GPT2LMHeadModel:
    """GPT-2 with SDPA attention; on the meta device nothing is allocated (for counting)."""
    with torch.device(device):
        model = GPT2LMHeadModel(config)
    # transformers picks SDPA by default when available; say so explicitly for the GPU path.
    model.config._attn_implementation = "sdpa"
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters: the tied lm_head/wte matrix is counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
