import os

import pytest

from fastbp.cli.bench import harness


@pytest.fixture(scope="session")
def threads():
    return int(os.environ.get("FASTBP_BENCH_THREADS", os.cpu_count() or 1))


@pytest.fixture(scope="session")
def ceiling(threads):
    """The sgemm rate, measured once per run in its own process."""
    return harness.sgemm_ceiling(threads)
