"""Prediction speed: fastbp's ``MLP.predict`` at the configs and batches of
``fastbp bench --inference``, float32. Run with
``pytest bench/test_inference.py --benchmark-only`` (FASTBP_BENCH_THREADS
sets the threads; default all cores).

pytest-benchmark times ``model.predict(x)`` in this process, after a first
call whose time (compilation or cache loading) goes to extra_info as
``first_call_s``. The peers (ONNX Runtime, torch eager) are never loaded
here: the ratios in extra_info come from the same measurement ``fastbp
bench --inference`` makes, every framework fastbp included in fresh
processes of its own, rounds interleaved, so both sides of a ratio are
timed alike.
"""
import time

import numba
import numpy as np
import pytest

import fastbp
from fastbp.cli.bench import inference, runners


@pytest.mark.parametrize("batch", inference.BATCHES)
@pytest.mark.parametrize("sizes", inference.CONFIGS, ids=lambda sizes: "-".join(map(str, sizes)))
def test_predict(benchmark, sizes, batch, threads, ceiling):
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    runners.limit_threads(threads)
    model = fastbp.MLP(sizes, activation="relu")
    for (W, b), (W0, b0) in zip(model.params, runners.initial_parameters(sizes, np.float32)):
        W[...], b[...] = W0, b0
    x = np.random.default_rng(1).standard_normal((batch, sizes[0])).astype(np.float32)
    start = time.perf_counter()
    model.predict(x)
    first_call = time.perf_counter() - start
    benchmark(model.predict, x)
    row = inference.measure(sizes, batch, ["fastbp"] + inference.peers(), rounds=3, threads=threads,
                            ceiling_gflops=ceiling["gflops"])
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(row, first_call_s=first_call, ceiling=ceiling,
                                in_process_gflops=inference.flops_per_call(sizes, batch) / median / 1e9)
    print()
    print(inference.format_table([row]))
