"""Whole training epochs on the device; twin of ``kernels.training``.

The sample order is drawn on the host with ``kernels.random_permutation``
(the CPU's splitmix64 stream, so both devices visit the samples in the same
order) and copied to the device once per epoch; gathering, forward, loss,
backward, clipping and the update all run there, and the loss is read back
once, at the end of the epoch.
"""
import math

import numpy as np
from numba import cuda, float64

from kernels.network import N_IN, N_OUT
from kernels.cuda.config import THREADS, blocks_for, block_sum
from kernels.cuda.losses import loss_value_and_grad
from kernels.cuda.network import (
    fits_fused, fused_network_backward, fused_network_forward, fused_tables, layer_units, network_backward,
    network_forward, scratch_view,
)
from kernels.cuda.optimizers import optimizer_step


@cuda.jit
def _gather(batch_x, batch_targets, batch_labels, X, targets, labels, order, start):
    rows, n_in = batch_x.shape
    for index in range(cuda.grid(1), rows * n_in, cuda.gridsize(1)):
        r, j = index // n_in, index % n_in
        batch_x[r, j] = X[order[start + r], j]
    if batch_targets.shape[0] > 0:
        n_out = batch_targets.shape[1]
        for index in range(cuda.grid(1), rows * n_out, cuda.gridsize(1)):
            r, j = index // n_out, index % n_out
            batch_targets[r, j] = targets[order[start + r], j]
    for r in range(cuda.grid(1), batch_labels.shape[0], cuda.gridsize(1)):
        batch_labels[r] = labels[order[start + r]]


def gather_rows(batch_x, batch_targets, batch_labels, X, targets, labels, order, start):
    """Copy rows ``order[start:start + rows]`` of X, targets and labels into
    the batch buffers (rows = ``batch_x.shape[0]``); an empty batch buffer
    skips its source. All arguments but ``start`` on the device."""
    _gather[blocks_for(batch_x.size), THREADS](batch_x, batch_targets, batch_labels, X, targets, labels,
                                               order, start)


@cuda.jit
def _squared_norm(norm, grads):
    partial = cuda.shared.array(THREADS, float64)
    thread = cuda.threadIdx.x
    total = 0.0
    for i in range(thread, grads.shape[0], THREADS):
        total += float(grads[i]) * float(grads[i])
    partial[thread] = total
    total = block_sum(partial)
    if thread == 0:
        norm[0] = math.sqrt(total)


@cuda.jit
def _clip(grads, norm, max_norm):
    scale = max_norm / (norm[0] + 1e-6)
    if scale < 1.0:
        for i in range(cuda.grid(1), grads.shape[0], cuda.gridsize(1)):
            grads[i] = grads[i] * scale


@cuda.jit
def _fill(values, value):
    for i in range(cuda.grid(1), values.shape[0], cuda.gridsize(1)):
        values[i] = value


def clip_grad_norm(grads, max_norm, norm):
    """Twin of ``kernels.clip_grad_norm``; the norm before scaling is written
    to the (1,) float64 device array ``norm`` instead of returned."""
    _squared_norm[1, THREADS](norm, grads)
    _clip[blocks_for(grads.shape[0]), THREADS](grads, norm, float(max_norm))


def train_epoch(params, grads, optimizer_code, optimizer_hyper, state0, state1, state2, step, loss_sum,
                X, targets, labels, order, batch_size, max_grad_norm,
                layers, activation_params, loss_code, loss_param, loss_mean,
                batch_x, batch_targets, batch_labels, z_store, a_store, scratch):
    """Twin of ``kernels.train_epoch``: the arrays are device arrays, except
    ``optimizer_hyper``, ``layers`` and ``activation_params``, which drive the
    launches from the host. Returns (loss_sum, step, done) as the CPU kernel
    does, except that every step is taken (``done`` is ``order``'s length):
    the loss is the one number read from the device, so a non-finite step
    shows only in the epoch's loss.
    """
    n = order.shape[0]
    n_in = int(layers[0, N_IN])
    n_out = int(layers[-1, N_OUT])
    n_layers = layers.shape[0]
    # [loss sum, gradient norm]
    scalars = cuda.to_device(np.array([loss_sum, 0.0]))
    fused = fits_fused(layers)
    tables = fused_tables(layers, activation_params) if fused else None
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        xb = batch_x[:rows * n_in].reshape(rows, n_in)
        # a loss without targets (or labels) gets the empty array itself
        tb = batch_targets[:rows * n_out].reshape(rows, n_out) if targets.shape[0] > 0 else targets
        lb = batch_labels[:rows] if labels.shape[0] > 0 else labels
        gather_rows(xb, tb, lb, X, targets, labels, order, start)
        if fused:
            fused_network_forward(z_store, a_store, xb, params, tables)
        else:
            network_forward(z_store, a_store, xb, params, layers, activation_params)
        prediction = layer_units(a_store, layers, n_layers - 1, rows)
        dprediction = scratch_view(scratch, 0, rows, n_out)
        loss_value_and_grad(dprediction, prediction, tb, lb, loss_code, loss_param, loss_mean,
                            scalars[0:1], rows if loss_mean else 1.0)
        if fused:
            fused_network_backward(grads, scratch, xb, params, layers, z_store, a_store, tables)
        else:
            _fill[blocks_for(grads.shape[0]), THREADS](grads, 0.0)
            network_backward(grads, scratch, xb, params, layers, activation_params, z_store, a_store, False)
        if max_grad_norm > 0.0:
            clip_grad_norm(grads, max_grad_norm, scalars[1:2])
        step += 1
        optimizer_step(optimizer_code, params, grads, state0, state1, state2, optimizer_hyper, step)
    return float(scalars.copy_to_host()[0]), step, n
