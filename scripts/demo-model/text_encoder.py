"""A CLIP text encoder (the SD-1.x kind), small, with Hugging Face's parameter names.

Written out here rather than taken from `transformers` to keep the training requirements to torch
and diffusers. The names match `CLIPTextModel`'s `text_model.*`, which is what A1111's single-file
layout stores under `cond_stage_model.transformer.text_model.`; the forward pass is the one A1111
runs for CLIP skip 1: token + position embeddings, pre-LayerNorm causal self-attention blocks with
quick-GELU MLPs, and the final LayerNorm.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

BOS, EOS = 49406, 49407
CONTEXT = 77


class Tokenizer:
    """CLIP's token ids for captions made of whole vocabulary words.

    Each caption word is one whole-word token of CLIP's vocabulary (`word</w>`), which is what
    CLIP's BPE produces for these common words; a word that is not one raises instead of being
    split differently from the server's tokenizer. A1111 pads SD-1.x prompts with the end token.
    """

    def __init__(self, vocab_json: Path):
        self.vocab = json.loads(vocab_json.read_text())

    def ids(self, text: str) -> list[int]:
        words = text.lower().split()
        if len(words) > CONTEXT - 2:
            raise ValueError(f"caption too long: {text!r}")
        tokens = []
        for word in words:
            token = self.vocab.get(word + "</w>")
            if token is None:
                raise ValueError(f"{word!r} is not a whole CLIP token")
            tokens.append(token)
        return [BOS, *tokens, EOS] + [EOS] * (CONTEXT - 2 - len(tokens))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=True
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick GELU


class Layer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Embeddings(nn.Module):
    def __init__(self, vocab: int, width: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(CONTEXT, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.01)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class Encoder(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Layer(width, heads, hidden) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ClipTextModel(nn.Module):
    """`text_model` of a CLIP text encoder; `forward` gives A1111's SD-1.x conditioning."""

    def __init__(self, width: int, heads: int, hidden: int, layers: int, vocab: int = 49408):
        super().__init__()
        self.embeddings = Embeddings(vocab, width)
        self.encoder = Encoder(width, heads, hidden, layers)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(self.encoder(self.embeddings(ids)))
