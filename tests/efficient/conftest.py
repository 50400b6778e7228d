
import pytest
import torch
import torch.nn.functional as F

from sparsecraft.models import TinyTransformer


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """One torch thread (the shared fixture in tests/conftest.py)."""


@pytest.fixture
def lm():
    """A tiny causal LM (d=32, 4 heads of 8, FFN 128, 2 blocks) and a batch of ids (4, 16)."""
    torch.manual_seed(0)
    model = TinyTransformer(32, vocab_size=32, d_model=32, num_heads=4, num_layers=2, max_len=16, causal=True)
    return model, torch.randint(0, 32, (4, 16))


def _lm_loss(model, x):
    return F.cross_entropy(model(x).flatten(0, 1), x.flatten())


def _train(adapter, x, steps=5, lr=1e-2):
    """A few Adam steps of next-token-style loss on ``x`` through the adapter's interface."""
    opt = torch.optim.Adam(adapter.trainable_parameters(), lr=lr)
    adapter.attach(opt)
    for s in range(1, steps + 1):
        loss = _lm_loss(adapter.model, x) + adapter.regularizer()
        loss.backward()
        opt.step()
        opt.zero_grad()
        adapter.step(s, steps)
    return opt


@pytest.fixture
def train():
    """``train(adapter, x, steps=5, lr=1e-2)``: Adam steps through the adapter interface; returns the optimizer."""
    return _train


@pytest.fixture
def lm_loss():
    return _lm_loss
