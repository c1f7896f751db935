import pytest

from fastbp import benchmark


@pytest.fixture(scope="session")
def ceiling():
    """The sgemm rate measured once per run, shared by every row."""
    return benchmark.sgemm_ceiling()
