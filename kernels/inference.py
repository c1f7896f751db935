"""A network's predictions: the forward pass alone, over blocks of rows.

Training's forward keeps every layer's outputs for the whole batch, for the
backward. A prediction needs none of them once the next layer has read
them, so it runs the whole network on one block of rows at a time: the
block's activations stay in the core's cache from one layer to the next,
and each block's input is checked for NaN and infinity just before it is
read. A large batch splits its blocks between threads, each running whole
blocks with single-threaded products: one synchronisation per call instead
of one inside every layer's product. With tiles each output row is summed
as the training forward sums it, bit for bit; through BLAS the two can
differ by rounding, as BLAS's own blocking depends on the batch.

One or two rows go through the dense layers as dot products with the rows
of W instead, summed in any order so that they vectorise (equal to the
forward to rounding): the tiles would first pack every weight matrix,
which for a row or two costs more than the arithmetic.
"""
import numba
import numpy as np
from numba import prange

from kernels.checks import check_at_least, check_dtype, check_size, checked_dtype
from kernels.activations import _activation_forward
from kernels.views import matrix_view
from kernels.config import JIT_OPTIONS, TILED, inline_jit, jit, parallel_jit, set_thread_count, thread_count
from kernels.layers import DENSE, EVALUATION
from kernels.layers.table import ACTIVATION, BIAS_OFFSET, KIND, N_IN, N_OUT, WEIGHT_OFFSET, layer_units
from kernels.network import _network_forward, check_network

# rows per block: a block's activations, for the widest networks fastbp
# trains, fit the 1-2 MB of a core's L2 cache
BLOCK_VALUES = 1 << 17


# Up to this many rows a prediction of dense layers runs as one dot
# product per output: the products' tiles would first pack every weight
# matrix, which for a single row costs more than the arithmetic.
DOT_ROWS = 2

# From this many weights a layer's dot products are split between threads
PARALLEL_ROWS = 1 << 17

# the dot products alone may be summed in any order, so that they vectorise
_dot_jit = numba.njit(**{**JIT_OPTIONS, "fastmath": {"reassoc", "contract"}})

# From this many multiply-adds a prediction is split between threads.
PARALLEL_PREDICT = 1 << 21
# rows per thread at least
PART_ROWS = 16


def inference_parts(batch, multiply_adds):
    """How many threads predict ``batch`` rows of a network of
    ``multiply_adds`` per row. One without tiles: the products then run on
    BLAS's own threads, and a second pool beside them would fight it."""
    if not TILED or batch * multiply_adds < PARALLEL_PREDICT:
        return 1
    return max(1, min(numba.get_num_threads(), batch // PART_ROWS))


def block_rows(total_units, batch):
    """Rows per block of a prediction (at least a few tiles' worth)."""
    return max(1, min(batch, max(48, BLOCK_VALUES // max(1, total_units))))


def work_size(total_units, block, parts):
    """Length of the ``work`` buffer of ``network_predict``."""
    return 2 * parts * block * total_units


@jit
def network_predict(out, x, params, layers, layer_params, work, block, parts):
    """``out`` = the network's output for ``x``, ``block`` rows at a time,
    the blocks split between ``parts`` threads (1: this thread alone).

    Parameters
    ----------
    out : (batch, n_out) array, written
    x : (batch, n_in) array
    params, layers, layer_params : as in ``kernels.network.network_forward``
    work : (>= 2 * parts * block * total_units,) array, scratch
    block, parts : int >= 1

    Returns
    -------
    int : -1, or the flat index in ``x`` of its first NaN or infinite
        value, in which case ``out`` is not written past that row's block.
    """
    kernel = "network_predict"
    total_units, _ = check_network(kernel, x, params, layers, layer_params)
    n_layers = layers.shape[0]
    check_size(kernel, "out", out, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "out", out, 1, layers[n_layers - 1, N_OUT], "the last layer's n_out")
    check_dtype(kernel, "out", out, "params", params)
    check_dtype(kernel, "work", work, "params", params)
    if block < 1 or parts < 1:
        raise ValueError(kernel + ": block and parts must be >= 1, got " + str(block) + " and " + str(parts))
    check_at_least(kernel, "work", work, 0, 2 * parts * block * total_units, "2 * parts * block * total units")
    x = checked_dtype(x, params)
    if x.shape[0] <= DOT_ROWS and _all_dense(layers):
        return _predict_rows(out, x, params, layers, layer_params, work)
    if parts == 1:
        return _predict_blocks(out, x, params, layers, layer_params, work, block, total_units, 0, 1)
    return _predict_parallel(out, x, params, layers, layer_params, work, block, total_units, parts)


@parallel_jit
def _predict_parallel(out, x, params, layers, layer_params, work, block, total_units, parts):
    threads = thread_count()
    bad = np.full(parts, -1, np.int64)
    for t in prange(parts):
        set_thread_count(1)  # each part's products run on its own thread
        bad[t] = _predict_blocks(out, x, params, layers, layer_params, work[2 * t * block * total_units:], block,
                                 total_units, t, parts)
    set_thread_count(threads)
    for t in range(parts):
        if bad[t] >= 0:
            return bad[t]
    return -1


@jit
def _predict_blocks(out, x, params, layers, layer_params, work, block, total_units, part, parts):
    # part ``part`` of ``parts``: a contiguous run of the blocks
    batch, n_in = x.shape
    n_blocks = (batch + block - 1) // block
    z_store, a_store = work[:block * total_units], work[block * total_units:2 * block * total_units]
    last = layers.shape[0] - 1
    for k in range(n_blocks * part // parts, n_blocks * (part + 1) // parts):
        first = k * block
        rows = min(block, batch - first)
        for r in range(first, first + rows):
            for c in range(n_in):
                if not np.isfinite(x[r, c]):
                    return r * n_in + c
        _network_forward(z_store, a_store, x[first:first + rows], params, layers, layer_params, rows, EVALUATION)
        out[first:first + rows] = layer_units(a_store, layers, last, rows)
    return -1


@jit
def _all_dense(layers):
    for i in range(layers.shape[0]):
        if layers[i, KIND] != DENSE:
            return False
    return True


@_dot_jit
def _dot(w, values):
    # summed in the arrays' precision: in float64 the float32 sums would
    # take twice the vectors, and the tiles sum in the arrays' precision too
    total = w.dtype.type(0.0)
    for k in range(w.shape[0]):
        total += w[k] * values[k]
    return total


@jit
def _predict_rows(out, x, params, layers, layer_params, work):
    # the rows through the dense layers as dot products with the rows of W,
    # into the two halves of ``work`` in turn
    batch, n_in = x.shape
    for r in range(batch):
        for c in range(n_in):
            if not np.isfinite(x[r, c]):
                return r * n_in + c
    half = work.shape[0] // 2
    source = matrix_view(work, 0, batch, 0)
    for i in range(layers.shape[0]):
        target = matrix_view(work, half if i % 2 == 0 else 0, batch, layers[i, N_OUT])
        split = TILED and layers[i, N_IN] * layers[i, N_OUT] >= PARALLEL_ROWS and thread_count() > 1
        if i == 0:
            _dense_rows_parallel(target, x, params, layers, i) if split else _dense_rows(target, x, params, layers, i)
        elif split:
            _dense_rows_parallel(target, source, params, layers, i)
        else:
            _dense_rows(target, source, params, layers, i)
        _activation_forward(target, target, layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1])
        source = target
    out[...] = source
    return -1


@jit
def _dense_rows(target, source, params, layers, i):
    for o in range(layers[i, N_OUT]):
        _dense_output(target, source, params, layers, i, o)


@parallel_jit
def _dense_rows_parallel(target, source, params, layers, i):
    # a layer whose weights outgrow a core's cache: each thread reads its share
    for o in prange(layers[i, N_OUT]):
        _dense_output(target, source, params, layers, i, o)


@inline_jit
def _dense_output(target, source, params, layers, i, o):
    n_in, w, b = layers[i, N_IN], layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    for r in range(target.shape[0]):
        total = _dot(params[w + o * n_in:w + (o + 1) * n_in], source[r])
        target[r, o] = total + params[b + o] if b >= 0 else total
