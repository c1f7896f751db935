"""Training-step speed per named config, fastbp against torch eager in the
same run. Run with ``pytest bench/ --benchmark-only``.

pytest-benchmark times fastbp's fused ``fit`` over a block of steps; the
side-by-side comparison (torch eager, the ratio, GFLOP/s, the fraction of the
sgemm ceiling) comes from ``fastbp.benchmark.measure`` in the same process
and is stored in the benchmark's extra_info, which --benchmark-json saves.
"""
import pytest

from fastbp import benchmark


@pytest.mark.parametrize("optimizer", benchmark.OPTIMIZERS)
@pytest.mark.parametrize("name", list(benchmark.CONFIGS))
def test_training_step(benchmark_fixture, name, optimizer, ceiling):
    config = benchmark.CONFIGS[name]
    row = benchmark.measure(config, optimizer, repeats=3, ceiling=ceiling)
    _, run = benchmark._fastbp_run(config, optimizer)
    steps = max(2, int(benchmark._TARGET_SECONDS / row["fastbp_step_s"]))
    X, y = benchmark._data(config, steps)
    run(X[:config.batch], y[:config.batch])  # compile outside the timing
    benchmark_fixture.extra_info.update(row)
    benchmark_fixture.extra_info["steps_per_round"] = steps
    benchmark_fixture.pedantic(run, args=(X, y), rounds=3, iterations=1)
    print()
    print(benchmark.format_table([row]))


@pytest.fixture
def benchmark_fixture(benchmark):
    # pytest-benchmark's fixture is named ``benchmark``, like our module
    return benchmark
