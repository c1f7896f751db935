"""The fused training path: no allocation per step."""
import os
import subprocess
import sys

_ALLOCATIONS = """
import numpy as np, fastbp
from numba.core.runtime import rtsys
model = fastbp.MLP([20, 16, 16, 3], seed=0)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model), max_grad_norm=1.0)
X = np.random.default_rng(0).standard_normal((1000, 20)); y = np.arange(1000) % 3
trainer.fit(X, y, epochs=1, batch_size=10)  # compile, and start Numba's runtime (and its counters)
def allocations(samples):
    before = rtsys.get_allocation_stats()
    trainer.fit(X[:samples], y[:samples], epochs=1, batch_size=10)
    after = rtsys.get_allocation_stats()
    return after.alloc - before.alloc, after.free - before.free
one_step, hundred_steps = allocations(10), allocations(1000)
print(one_step[0], hundred_steps[0], hundred_steps[1])
"""


def test_training_steps_allocate_nothing():
    """Entering a kernel wraps each argument array once (a per-call cost); the
    steps inside allocate nothing, so 100 steps cost what 1 step costs."""
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    result = subprocess.run([sys.executable, "-c", _ALLOCATIONS], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    one_step, hundred_steps, freed = map(int, result.stdout.split())
    assert hundred_steps == one_step
    assert freed == hundred_steps  # and everything wrapped is released
