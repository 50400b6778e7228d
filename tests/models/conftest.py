import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is faster and immune to a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def digits():
    from sparsecraft.data import load_digits

    return load_digits(seed=0)
