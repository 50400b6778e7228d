import pytest


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""
