"""The fused training epoch with each minibatch split between threads.

Each thread gathers its rows, runs forward, loss and backward on them into a
gradient buffer of its own, with its own stretch of the activation buffers;
the buffers are then added in a fixed order (so a run is the same at a given
thread count), each thread adding and updating its own slice of the
parameters. Each part's matrix products run on its own thread; BLAS,
where it is used, must run single-threaded inside (the caller's job).
The sum over the parts rounds differently from one pass over the whole
minibatch, so the numbers match ``train_epoch``'s up to float rounding.
"""
import numpy as np
from numba import prange

from kernels.config import PARALLEL_UPDATE, jit, parallel_jit, set_thread_count, thread_count
from kernels.losses import mean_scale
from kernels.network import N_IN, N_OUT, UNIT_OFFSET
from kernels.training import (
    batch_gradients, check_epoch, clip_grad_norm, finite_step, gather_batch, update,
)
from kernels.views import borrowed, matrix_view


@parallel_jit
def train_epoch_data_parallel(params, grads, optimizer_code, optimizer_hyper, state0, state1, state2, step,
                              loss_sum, X, targets, labels, order, batch_size, max_grad_norm,
                              layers, activation_params, loss_code, loss_param, loss_mean,
                              batch_x, batch_targets, batch_labels, z_store, a_store, scratch, n_chunks):
    """``kernels.train_epoch`` with each minibatch split into ``n_chunks``
    parts run in parallel; same arguments, same results up to rounding."""
    check_epoch("train_epoch_data_parallel", params, grads, optimizer_code, optimizer_hyper, state0, state1,
                state2, X, targets, labels, order, batch_size, max_grad_norm, layers, activation_params, loss_code,
                batch_x, batch_targets, batch_labels, z_store, a_store, scratch)
    if n_chunks < 1:
        raise ValueError("train_epoch_data_parallel: n_chunks must be at least 1, got " + str(n_chunks))
    params, grads, optimizer_hyper = borrowed(params), borrowed(grads), borrowed(optimizer_hyper)
    state0, state1, state2 = borrowed(state0), borrowed(state1), borrowed(state2)
    X, targets, labels, order = borrowed(X), borrowed(targets), borrowed(labels), borrowed(order)
    layers, activation_params = borrowed(layers), borrowed(activation_params)
    batch_x, batch_targets, batch_labels = borrowed(batch_x), borrowed(batch_targets), borrowed(batch_labels)
    z_store, a_store = borrowed(z_store), borrowed(a_store)
    scratch_rows = scratch.shape[1]
    scratch = borrowed(scratch.reshape(scratch.size))
    n, n_params = order.shape[0], params.shape[0]
    last = layers.shape[0] - 1
    n_in, n_out = layers[0, N_IN], layers[last, N_OUT]
    total_units = layers[last, UNIT_OFFSET] + n_out
    max_width = n_in
    for i in range(last + 1):
        max_width = max(max_width, layers[i, N_OUT])
    has_targets, has_labels = targets.shape[0] > 0, labels.shape[0] > 0
    threads = thread_count()
    # chunk 0 writes into grads itself, the others into their own rows here
    chunk_grads = np.empty((n_chunks - 1, n_params), dtype=grads.dtype)
    values = np.zeros(n_chunks)
    # The sum of the parts' gradients and the update are memory passes: on
    # small models, a parallel launch for each costs more than it saves.
    parts = n_chunks if n_params >= PARALLEL_UPDATE else 1
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        scale = mean_scale(loss_code, rows, n_out, loss_mean)
        for c in prange(n_chunks):
            set_thread_count(1)  # each part's products run on its own thread
            first, end = rows * c // n_chunks, rows * (c + 1) // n_chunks
            xb, tb, lb = gather_batch(batch_x[first * n_in:], batch_targets[first * n_out * has_targets:],
                                      batch_labels[first * has_labels:], X, targets, labels, order,
                                      start + first, end - first)
            chunk_scratch = matrix_view(scratch, 2 * first * max_width, 2, (end - first) * max_width)
            g = grads if c == 0 else chunk_grads[c - 1]
            # the parts' gradients are checked once added up, by finite_step
            values[c] = batch_gradients(g, z_store[first * total_units:], a_store[first * total_units:],
                                        chunk_scratch, xb, tb, lb, params, layers, activation_params,
                                        loss_code, loss_param, scale)[0]
        set_thread_count(threads)
        value = 0.0
        for c in range(n_chunks):
            value += values[c]
        if parts > 1:
            add_rows_parallel(grads, chunk_grads, parts)
        else:
            add_rows(grads, chunk_grads)
        if not finite_step(value, grads, parts, optimizer_hyper):
            return loss_sum, step, start
        loss_sum += value * rows if loss_mean else value
        if max_grad_norm > 0.0:
            clip_grad_norm(grads, max_grad_norm)
        step += 1
        update(optimizer_code, params, grads, state0, state1, state2, optimizer_hyper, step, parts)
    return loss_sum, step, n


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
