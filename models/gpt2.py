"""Build a randomly initialised GPT-2 (no pretrained weights) of a named size."""

from __future__ import annotations

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mixbench.model_sizes import SIZES
from models.token_loss import chunked_token_loss


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


class TrainableGPT2(GPT2LMHeadModel):
    """GPT-2 whose forward also gives per-token losses: ``model(input_ids=x, targets=y)`` returns
    the (b, L) next-token cross-entropy through models/token_loss.py, no logits kept. The loss is
    the forward of the module itself, so torch.compile puts it in the compiled graph and DDP's
    gradient hooks are armed by it. Its parameters, names and saved form are GPT-2's."""

    loss_chunk_tokens: int | None = None  # tokens per chunk of the loss; None: models/memory.py's rule

    def forward(self, input_ids=None, targets=None, **kwargs):
        if targets is None:
            return super().forward(input_ids=input_ids, **kwargs)
        hidden = self.transformer(input_ids=input_ids, use_cache=False, **kwargs)[0]
        return chunked_token_loss(hidden, self.lm_head.weight, targets, unpadded_vocab_size(self),
                                  self.loss_chunk_tokens)


def build_model(config: GPT2Config, device: str | torch.device = "cpu") -> TrainableGPT2:
    """GPT-2 with SDPA attention; on the meta device nothing is allocated (for counting). The
    model gets its own copy of ``config``: padding its vocabulary never changes the caller's."""
    config = copy.deepcopy(config)
    with torch.device(device):
        model = TrainableGPT2(config)
    # transformers picks SDPA by default when available; say so explicitly for the GPU path.
    model.config._attn_implementation = "sdpa"
    return model


# The token embedding (tied to the output layer) gets rows up to a multiple of this: the output
# matmul's width is then a multiple of the tensor cores' tile (50,257 → 50,304 for GPT-2's BPE).
VOCAB_MULTIPLE = 64


def pad_vocabulary(model: GPT2LMHeadModel, multiple: int = VOCAB_MULTIPLE) -> GPT2LMHeadModel:
    """Give the tied embedding zero rows up to a multiple of ``multiple``, in place. The padding
    is never sampled (no token has its id) and never scored: every loss slices the logits to
    ``unpadded_vocab_size`` (models/step.py), so its rows get no gradient, stay zero (AdamW moves
    nothing without a gradient, and decays zero to zero), and the saved model drops them
    (``unpadded_copy``). Done after initialisation: the real rows draw the same random numbers."""
    vocab = model.config.vocab_size
    padded = -(-vocab // multiple) * multiple
    if padded == vocab:
        return model
    old = model.get_input_embeddings().weight
    embedding = torch.nn.Embedding(padded, old.shape[1], device=old.device, dtype=old.dtype)
    with torch.no_grad():
        embedding.weight.zero_()
        embedding.weight[:vocab] = old
    model.set_input_embeddings(embedding)
    model.lm_head.weight = embedding.weight  # keep them tied
    model.config.unpadded_vocab_size = vocab
    model.config.vocab_size = padded
    return model


def unpadded_vocab_size(model: torch.nn.Module) -> int:
    config = model.config
    return getattr(config, "unpadded_vocab_size", None) or config.vocab_size


def unpadded_copy(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """The model as it is saved and evaluated: the real vocabulary only."""
    vocab = unpadded_vocab_size(model)
    if vocab == model.config.vocab_size and type(model) is GPT2LMHeadModel:
        return model
    config = GPT2Config.from_dict({k: v for k, v in model.config.to_dict().items() if k != "unpadded_vocab_size"})
    config.vocab_size = vocab
    with torch.device("meta"):
        copy = GPT2LMHeadModel(config)
    copy.config._attn_implementation = model.config._attn_implementation
    state = {k: v[:vocab] if k in ("transformer.wte.weight", "lm_head.weight") else v
             for k, v in model.state_dict().items()}
    copy.load_state_dict(state, assign=True)
    copy.tie_weights()
    return copy


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters: the tied lm_head/wte matrix is counted once, its padding rows not at all."""
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "unpadded_vocab_size", None):
        total -= (config.vocab_size - config.unpadded_vocab_size) * config.n_embd
    return total
