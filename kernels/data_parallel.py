"""The gradients of a minibatch split between threads: the data-parallel
epoch's gradient stage (``kernels.training.train_epoch`` with ``n_chunks``).

Each thread gathers its rows, runs forward, loss and backward on them into a
gradient buffer of its own, with its own stretch of the activation buffers;
the buffers are then added in a fixed order (so a run is the same at a given
thread count), each thread adding its own slice of the parameters. Each
part's matrix products run on its own thread; BLAS, where it is used, must
run single-threaded inside (the caller's job). The sum over the parts rounds
differently from one pass over the whole minibatch, so the numbers match the
serial epoch's up to float rounding.
"""
from numba import prange

from kernels.config import jit, parallel_jit, set_thread_count, thread_count
from kernels.network import N_IN, N_OUT, buffer_sizes
from kernels.step import batch_gradients, gather_batch
from kernels.views import matrix_view


@parallel_jit
def parallel_gradients(chunk_grads, values, network, loss, data, work, start, rows, loss_scale, parts, step):
    """The gradients of the minibatch ``data.order[start:start + rows]`` in
    ``network.grads``, its ``values.shape[0]`` parts computed on as many
    threads and added up (in ``parts`` slices on as many threads); returns
    the minibatch's loss.

    ``chunk_grads`` : (n_chunks - 1, n_params) array, the gradients of the
        parts after the first (the first writes into ``network.grads``)
    ``values`` : (n_chunks,) float64 array, the parts' loss shares
    ``step`` : the update this is the step of (dropout's mask key)
    The rest as in ``kernels.step.batch_gradients`` and ``train_epoch``.
    """
    batch_x, batch_targets, batch_labels, z_store, a_store, scratch, batch_weights = work
    layers = network.layers
    n_chunks = values.shape[0]
    n_in, n_out = layers[0, N_IN], layers[layers.shape[0] - 1, N_OUT]
    _, total_units, max_width = buffer_sizes(layers)
    has_targets, has_labels, has_weights = data.targets.shape[0] > 0, data.labels.shape[0] > 0, data.weights.shape[0] > 0
    flat_scratch = scratch.reshape(scratch.size)
    threads = thread_count()
    for c in prange(n_chunks):
        set_thread_count(1)  # each part's products run on its own thread
        first, end = rows * c // n_chunks, rows * (c + 1) // n_chunks
        xb, tb, lb, wb = gather_batch(batch_x[first * n_in:], batch_targets[first * n_out * has_targets:],
                                      batch_labels[first * has_labels:], batch_weights[first * has_weights:], data,
                                      start + first, end - first)
        chunk_scratch = matrix_view(flat_scratch, 2 * first * max_width, 2, (end - first) * max_width)
        grads = network.grads if c == 0 else chunk_grads[c - 1]
        # the parts' gradients are checked once added up, by take_step
        values[c] = batch_gradients(grads, z_store[first * total_units:], a_store[first * total_units:],
                                    chunk_scratch, xb, tb, lb, wb, network, loss, loss_scale, (step, first))[0]
    set_thread_count(threads)
    if parts > 1:
        add_rows_parallel(network.grads, chunk_grads, parts)
    else:
        add_rows(network.grads, chunk_grads)
    value = 0.0
    for c in range(n_chunks):
        value += values[c]
    return value


@jit
def add_rows(total, rows):
    """``total += rows[0] + rows[1] + ...``, added in that order."""
    for k in range(rows.shape[0]):
        for i in range(total.shape[0]):
            total[i] += rows[k, i]


@parallel_jit
def add_rows_parallel(total, rows, parts):
    """``add_rows`` over ``parts`` slices on as many threads: each element
    is summed in the same order, so the numbers are the serial ones."""
    n = total.shape[0]
    for c in prange(parts):
        first, end = n * c // parts, n * (c + 1) // parts
        add_rows(total[first:end], rows[:, first:end])
