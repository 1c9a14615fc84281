"""GPT-2 model sizes. Torch-free, so that the workflow, the config checks and the preflight read it
instantly; it lives in mixbench/, the bottom layer.

Parameter counts are for the vocabulary named in the comment (tied input/output embedding
counted once); tests/test_models.py checks small/medium/large on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int


SIZES: dict[str, ModelSize] = {
    "test": ModelSize(n_layer=1, n_head=2, n_embd=32, n_positions=64),  # ~30k with a 512 vocab: pytest only
    "tiny": ModelSize(n_layer=2, n_head=4, n_embd=128, n_positions=128),  # 0.68M with the CPU grid's 2k vocab (1.46M with 8k)
    "micro": ModelSize(n_layer=2, n_head=2, n_embd=64, n_positions=128),  # 0.63M with 8k vocab: CPU grid's RegMix swarm
    "mini": ModelSize(n_layer=4, n_head=4, n_embd=256, n_positions=256),  # 5.3M with 8k vocab: CPU proxy
    "proxy-82m": ModelSize(n_layer=6, n_head=12, n_embd=768, n_positions=1024),  # 81.9M with 50k vocab: DoGE's proxy
    # The paper family at CPU scale (config/rehearsal.yaml): depth doubles and triples from small
    # to medium to large, as for GPT-2, and the proxy has half of small's layers, as 82M has of 124M.
    "rehearsal-proxy": ModelSize(n_layer=1, n_head=2, n_embd=64, n_positions=128),  # 0.19M with 2k vocab
    "rehearsal-small": ModelSize(n_layer=2, n_head=2, n_embd=64, n_positions=128),  # 0.24M with 2k vocab
    "rehearsal-medium": ModelSize(n_layer=4, n_head=4, n_embd=96, n_positions=128),  # 0.66M with 2k vocab
    "rehearsal-large": ModelSize(n_layer=6, n_head=4, n_embd=128, n_positions=128),  # 1.47M with 2k vocab
    # RegMix's 1M-class proxy (Liu et al. 2024: their `tinyllama_1M`, 2 layers, 8 heads, 256 wide)
    # with GPT-2's blocks: 1.58M non-embedding parameters (theirs: ~1.3M, with a narrower MLP).
    "regmix-1m": ModelSize(n_layer=2, n_head=8, n_embd=256, n_positions=1024),  # 14.7M with 50,257 vocab
    "small": ModelSize(n_layer=12, n_head=12, n_embd=768, n_positions=1024),  # 124.4M with 50,257 vocab
    "medium": ModelSize(n_layer=24, n_head=16, n_embd=1024, n_positions=1024),  # 354.8M
    "large": ModelSize(n_layer=36, n_head=20, n_embd=1280, n_positions=1024),  # 774.0M
}


def approx_parameters(size: ModelSize, vocab_size: int) -> int:
    """Closed-form GPT-2 parameter count (tied embeddings), for FLOP estimates without torch."""
    # Each block: attention (4d² + 4d) + MLP (8d² + 5d) + two LayerNorms (4d); then the final LayerNorm.
    d = size.n_embd
    return vocab_size * d + size.n_positions * d + non_embedding_parameters(size) + 2 * d


def non_embedding_parameters(size: ModelSize) -> int:
    """Parameters of the transformer blocks alone: what makes one size larger than another
    whatever the vocabulary (DoReMi's 280M model is GPT-2 small's blocks with a 256k vocabulary)."""
    d = size.n_embd
    return size.n_layer * (12 * d * d + 13 * d)


GPT2_VOCAB = 50257  # GPT-2's BPE, 50,256 merges and <|endoftext|>


def planned_vocab_size(tokenizer: dict) -> int:
    """The vocabulary a grid's models will have, before its tokenizer is built: a trained BPE's
    configured size, else GPT-2's (a pretrained or tiktoken tokenizer is taken to be GPT-2's)."""
    return int(tokenizer["vocab_size"]) if tokenizer["kind"] == "bpe" else GPT2_VOCAB
