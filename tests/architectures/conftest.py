"""Architecture tests run single-threaded (tiny models; the machine is shared)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield
