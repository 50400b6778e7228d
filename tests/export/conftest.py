"""Shared fixtures: a tiny random BERT (MiniLM's vocabulary, no download), pruned, and bit-exact comparison."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import sparsecraft

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


def tiny_bert(hidden: int = 32) -> nn.Module:
    """A randomly initialised 2-layer BERT (hidden 32, 2 heads, FFN 64), eval mode."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    return BertModel(cfg).eval()


def encoder_linears(model: nn.Module) -> list[str]:
    return [t.module_name for t in sparsecraft.find_targets(model, types=(nn.Linear,), within="encoder")]


def pruned_bert(pattern: str = "unstructured", sparsity: float = 0.6) -> nn.Module:
    """:func:`tiny_bert` with its encoder Linears pruned by magnitude (pooler left dense), finalized."""
    model = tiny_bert()
    sparsecraft.prune(model, sparsity, pattern, allocation="uniform", layers=encoder_linears(model)).finalize()
    return model


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (so -0.0 and +0.0 differ, NaN payloads count)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)))


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(same_bits(a[k], b[k]) for k in a)
