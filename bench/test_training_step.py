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

from fastbp.cli.bench import harness


@pytest.mark.parametrize("optimizer", harness.OPTIMIZERS)
@pytest.mark.parametrize("name", list(harness.CONFIGS))
def test_training_step(benchmark, name, optimizer, threads, ceiling):
    frameworks = ["fastbp"] + harness.peers()
    row = benchmark.pedantic(
        harness.measure, args=(harness.CONFIGS[name], optimizer, frameworks),
        kwargs={"rounds": 3, "threads": threads, "ceiling_gflops": ceiling["gflops"]}, rounds=1, iterations=1)
    benchmark.extra_info.update(row, ceiling=ceiling)
    print()
    print(harness.format_table([row]))
