"""Shared fixtures: correlated calibration inputs, a tiny random BERT and a tiny causal TinyTransformer."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """These tests run tiny tensor ops, which one thread does fastest (and without OpenMP spinning
    when other processes share the 2 cores); the previous thread count is restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``(n, d)`` inputs with strongly correlated features and uneven, shuffled scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    scale = torch.linspace(0.1, 3.0, d)[torch.randperm(d, generator=g)]
    return (torch.randn(n, d, generator=g) @ mix) * scale


@pytest.fixture
def tiny_bert():
    """A randomly initialised 2-layer BERT (hidden 16) with MiniLM's tokenizer, no download."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return BertModel(cfg).eval()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from sparsecraft.models.hf import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture
def tiny_decoder():
    from sparsecraft.models import TinyTransformer

    torch.manual_seed(0)
    return TinyTransformer(256, vocab_size=256, d_model=16, num_heads=2, num_layers=2, max_len=32, causal=True).eval()
