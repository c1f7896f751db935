"""Long runs leak nothing and drift nowhere: resident memory and Numba's
runtime allocations stay flat over 10,000 training steps, and trainers in
threads compute what they compute one after the other."""
import os
import subprocess
import sys
import threading
import time

import numpy as np

import fastbp

_LONG_RUN = """
import gc, os
import numpy as np, fastbp
from numba.core.runtime import rtsys

PAGE = os.sysconf("SC_PAGE_SIZE")

def resident():
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE

def live():
    stats = rtsys.get_allocation_stats()
    return stats.alloc, stats.alloc - stats.free

rng = np.random.default_rng(0)
X, y = rng.standard_normal((1000, 20)), rng.integers(0, 3, size=1000)
model = fastbp.MLP([20, 32, 16, 3], seed=0)
optimizer = fastbp.Adam(model, lr=1e-3)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer, max_grad_norm=1.0,
                         schedule=fastbp.CosineAnnealingLR(optimizer, T_max=1000))
loss = fastbp.CrossEntropyLoss()

def steps(fits):
    # each fit: 100 fused steps (batch 10), then predict and evaluate; and
    # 100 steps through the step-by-step API
    for _ in range(fits):
        trainer.fit(X, y, epochs=1, batch_size=10)
        trainer.predict(X)
        trainer.evaluate(X, y)
        for start in range(0, 1000, 10):
            optimizer.zero_grad()
            loss(model.forward(X[start:start + 10]), y[start:start + 10])
            model.backward(loss.backward())
            optimizer.step()

steps(10)  # warm-up: compile, and let the allocators settle
before = resident(), live()
steps(100)  # 10,000 fused steps and 10,000 step-by-step steps
after = resident(), live()
print(after[0] - before[0], after[1][0] - before[1][0], before[1][1], after[1][1])
"""


def test_10000_steps_keep_memory_and_numba_allocations_flat():
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    result = subprocess.run([sys.executable, "-c", _LONG_RUN], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    drift, allocations, live_before, live_after = map(int, result.stdout.split())
    print(f"resident memory drift over 10,000 + 10,000 steps: {drift / 1024:.0f} KiB; Numba allocations: "
          f"{allocations} made, {live_before} alive before, {live_after} after")
    assert allocations > 0, "NUMBA_NRT_STATS had no effect: nothing was counted"
    assert abs(drift) <= 1024 * 1024
    assert live_after == live_before


def _run(seed, results, index):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((1000, 32)), rng.integers(0, 10, size=1000)
    model = fastbp.MLP([32, 128, 64, 10], seed=seed)
    optimizer = fastbp.Adam(model, lr=1e-3)
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer)
    history = trainer.fit(X, y, epochs=2, batch_size=32, seed=seed, validation_split=0.1)
    results[index] = (model._params.copy(), optimizer._state[0].copy(), history.loss, history.val_loss)


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


def test_two_trainers_in_two_threads_match_one_after_the_other():
    sequential, parallel = [None, None], [None, None]
    _run(2, [None] * 3, 2)  # warm up, so that neither timing pays for first calls
    start = time.perf_counter()
    for index in range(2):
        _run(index, sequential, index)
    one_after_the_other = time.perf_counter() - start
    threads = [threading.Thread(target=_run, args=(index, parallel, index)) for index in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    at_once = time.perf_counter() - start
    print(f"two trainers: {one_after_the_other:.2f} s one after the other, {at_once:.2f} s in two threads")
    for a, b in zip(sequential, parallel):
        _assert_same(a, b)
