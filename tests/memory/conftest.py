"""The memory tests use tiny memories: one torch thread is fastest on the shared 2-core box."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield
