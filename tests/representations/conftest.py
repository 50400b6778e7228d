import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test (the machine is shared); restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
