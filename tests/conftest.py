"""Fixtures shared by every test area."""
import pytest
import torch


@pytest.fixture
def torch_one_thread():
    """One torch intra-op thread for the test, the previous count restored afterwards.

    The test models are tiny: one thread is the fastest, and on a busy 2-core machine several
    threads spin against each other (a 100-step Adam loop took 60 s instead of 4 s). An area opts
    in with an autouse fixture in its conftest that requests this one.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
