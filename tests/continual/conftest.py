import pytest
import torch
from torch import nn


def tiny_mlp(seed: int = 0, sizes=(20, 32, 16, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def blobs(n: int = 96, d: int = 20, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, d, generator=g) * 2
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""
