"""Training-step speed per named config, fastbp against its peers in the
same run. Run with ``pytest bench/ --benchmark-only`` (FASTBP_BENCH_THREADS
sets the threads of every framework; default all cores).

Every framework runs in a fresh process of its own per round, rounds
interleaved, exactly as ``fastbp bench`` does; this pytest process imports
none of the peers. pytest-benchmark's own columns are the wall time of the
whole comparison (process start-up included), so they are not step times:
the step times (median, min and max of the rounds, every round's blocks),
the ratio to the best peer, GFLOP/s and the fraction of the sgemm ceiling
are in each benchmark's extra_info, which --benchmark-json saves.
"""
import pytest

from fastbp import benchmark


@pytest.mark.parametrize("optimizer", benchmark.OPTIMIZERS)
@pytest.mark.parametrize("name", list(benchmark.CONFIGS))
def test_training_step(benchmark_fixture, name, optimizer, threads, ceiling):
    frameworks = ["fastbp"] + benchmark.peers()
    row = benchmark_fixture.pedantic(
        benchmark.measure, args=(benchmark.CONFIGS[name], optimizer, frameworks),
        kwargs={"rounds": 3, "threads": threads, "ceiling_gflops": ceiling["gflops"]}, rounds=1, iterations=1)
    benchmark_fixture.extra_info.update(row, ceiling=ceiling)
    print()
    print(benchmark.format_table([row]))


@pytest.fixture
def benchmark_fixture(benchmark):
    # pytest-benchmark's fixture is named ``benchmark``, like our module
    return benchmark
