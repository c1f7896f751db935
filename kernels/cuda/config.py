"""Launch geometry of every CUDA kernel, decided in one place.

``TILE`` is the side of the square tiles the matrix products stage in shared
memory, ``THREADS`` the block size of the reductions and elementwise kernels.
The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs every thread of a block
as a Python thread, so there the blocks are small; the arithmetic and the
order of every sum are the same whatever the sizes.

Sums run in float64 whatever the arrays' dtype (shared memory included) and
are rounded once when stored, as the CPU kernels' scalar arithmetic does.
"""
import types

import numpy as np

from numba import cuda
from numba.cuda.core import config as _cuda_config

SIMULATED = bool(_cuda_config.ENABLE_CUDASIM)

TILE = 4 if SIMULATED else 16
THREADS = 8 if SIMULATED else 256
# the fused path (kernels.cuda.network): networks whose every layer is at
# most FUSED_WIDTH units wide run each pass as one launch, a block of
# FUSED_WIDTH threads (one per unit) over FUSED_ROWS samples held in shared
# memory (2 x FUSED_ROWS x FUSED_WIDTH float64: 32 KiB)
FUSED_WIDTH = 8 if SIMULATED else 128
FUSED_ROWS = 3 if SIMULATED else 16


def blocks_for(n, threads=THREADS):
    """Blocks of ``threads`` that cover ``n`` elements (at least one)."""
    return max(1, (n + threads - 1) // threads)


def device_twin(dispatcher, **helpers):
    """The Python function of a CPU kernel (``@jit`` dispatcher) compiled as a
    CUDA device function, with the named globals rebound to device functions:
    one definition of a scalar formula serves both targets."""
    function = dispatcher.py_func
    namespace = dict(function.__globals__, **helpers)
    rebound = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__)
    return cuda.jit(device=True)(rebound)


@cuda.jit(device=True)
def block_sum(partial):
    """The sum of ``partial`` (THREADS,), a shared array holding one value per
    thread, by a tree over the block; every thread of the block must call it."""
    thread = cuda.threadIdx.x
    cuda.syncthreads()
    width = THREADS // 2
    while width > 0:
        if thread < width:
            partial[thread] += partial[thread + width]
        cuda.syncthreads()
        width //= 2
    return partial[0]


def no_stop():
    """A (2,) int64 device array ``[0, 0]``: the ``status`` of
    ``kernels.cuda.finite_step`` for a caller outside an epoch, whose
    updates are never stopped."""
    return cuda.to_device(np.zeros(2, dtype=np.int64))
