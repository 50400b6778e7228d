import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )


@pytest.fixture
def make_cnn():
    return small_cnn


@pytest.fixture
def cnn() -> nn.Module:
    return small_cnn()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
