"""Whole training epochs on the device; twin of ``kernels.training``, stage
for stage: each minibatch is gathered (``gather_rows``), its gradients
computed (``batch_gradients``: forward, loss, backward), checked
(``finite_step``), clipped (``clip_grad_norm``) and applied (``update``).

The sample order is drawn on the host with ``kernels.random_permutation``
(the CPU's splitmix64 stream, so both devices visit the samples in the same
order) and copied to the device; every stage runs there, and the host reads
back the loss sum and where the epoch stopped once per call.

A step whose loss or gradient is NaN or infinite sets ``status``, a flag on
the device that every later stage changing state reads (the loss sum,
clipping, the update): that step and the rest of the call are not taken, as
the CPU epoch returns before that update, without a read from the device per
step. The later batches' forward and backward passes still run, and write
``grads``; so once the host learns of a stop it computes the offending
batch's gradients again, from the parameters left unchanged, to leave them
in ``grads`` as the CPU epoch does.
"""
import math

import numpy as np
from numba import cuda, float64

from kernels.layers import EVALUATION
from kernels.losses import mean_scale
from kernels.network import N_OUT
from kernels.cuda.config import THREADS, blocks_for, block_sum, no_stop
from kernels.cuda.losses import loss_value_and_grad
from kernels.cuda.network import (
    fits_fused, fused_network_backward, fused_network_forward, fused_tables, layer_units, network_backward,
    network_forward, scratch_view,
)
from kernels.cuda.optimizers import optimizer_step


@cuda.jit
def _gather(batch_x, batch_targets, batch_labels, batch_weights, X, targets, labels, weights, order, start, rows):
    n_in, n_out = X.shape[1], targets.shape[1]
    for index in range(cuda.grid(1), rows * n_in, cuda.gridsize(1)):
        batch_x[index] = X[order[start + index // n_in], index % n_in]
    for index in range(cuda.grid(1), rows * n_out, cuda.gridsize(1)):
        batch_targets[index] = targets[order[start + index // n_out], index % n_out]
    if labels.shape[0] > 0:
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            batch_labels[r] = labels[order[start + r]]
    if weights.shape[0] > 0:
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            batch_weights[r] = weights[order[start + r]]


def gather_rows(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows):
    """Twin of ``kernels.step.gather_rows``: copy the samples
    ``data.order[start:start + rows]`` to the front of the flat gather
    buffers (targets, labels or weights skipped where the data has none).
    All arrays on the device."""
    X, targets, labels, order, weights = data
    _gather[blocks_for(rows * X.shape[1]), THREADS](batch_x, batch_targets, batch_labels, batch_weights, X,
                                                     targets, labels, weights, order, start, rows)


def batch_views(batch_x, batch_targets, batch_labels, batch_weights, data, rows):
    """The first ``rows`` gathered samples as (x, targets, labels, weights);
    a loss without targets (labels, weights) gets the data's empty array itself."""
    X, targets, labels, weights = data.X, data.targets, data.labels, data.weights
    n_in, n_out = X.shape[1], targets.shape[1]
    return (batch_x[:rows * n_in].reshape(rows, n_in),
            batch_targets[:rows * n_out].reshape(rows, n_out) if targets.shape[0] > 0 else targets,
            batch_labels[:rows] if labels.shape[0] > 0 else labels,
            batch_weights[:rows] if weights.shape[0] > 0 else weights)


@cuda.jit
def _fill(values, value):
    for i in range(cuda.grid(1), values.shape[0], cuda.gridsize(1)):
        values[i] = value


def batch_gradients(grads, z_store, a_store, scratch, x, target, labels, network, loss, loss_value, tables=None,
                    weights=None, scale=None, mode=EVALUATION):
    """Twin of ``kernels.step.batch_gradients``: forward, loss and backward
    over a gathered minibatch, ``grads`` written (not accumulated).

    The loss goes into the (1,) float64 device array ``loss_value`` (added to
    it) instead of being returned; ``tables`` are the network's
    ``fused_tables`` where it ``fits_fused``, else None for the layer by
    layer passes; ``weights`` the rows' weights (None: none) and ``scale``
    the batch's ``kernels.losses.mean_scale`` (None: of its rows);
    ``loss.class_weights`` a device array; ``mode`` (step, first_row), as
    in ``kernels.step.batch_gradients``. The other arguments are as in
    ``train_epoch``.
    """
    params, _, layers, activation_params = network
    loss_code, loss_param, loss_mean = loss.code, loss.param, loss.mean
    rows = x.shape[0]
    if tables is not None:
        fused_network_forward(z_store, a_store, x, params, tables)
    else:
        network_forward(z_store, a_store, x, params, layers, activation_params, mode)
    prediction = layer_units(a_store, layers, layers.shape[0] - 1, rows)
    dprediction = scratch_view(scratch, 0, rows, int(layers[-1, N_OUT]))
    class_weights = loss.class_weights if loss.class_weights.shape[0] > 0 else None
    loss_value_and_grad(dprediction, prediction, target, labels, loss_code, loss_param, loss_mean, loss_value,
                        weights=weights, class_weights=class_weights, scale=scale)
    if tables is not None:
        fused_network_backward(grads, scratch, x, params, layers, z_store, a_store, tables)
    else:
        _fill[blocks_for(grads.shape[0]), THREADS](grads, 0.0)
        network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, False)


@cuda.jit
def _finite_step(loss_value, grads, status, start):
    partial = cuda.shared.array(THREADS, float64)
    thread = cuda.threadIdx.x
    bad = 0.0
    for i in range(thread, grads.shape[0], THREADS):
        if not grads[i] - grads[i] == 0.0:
            bad += 1.0
    partial[thread] = bad
    bad = block_sum(partial)
    if thread == 0 and status[0] == 0 and (bad > 0.0 or not loss_value[0] - loss_value[0] == 0.0):
        status[0] = 1
        status[1] = start


def finite_step(loss_value, grads, status, start):
    """Twin of ``kernels.training.finite_step``: unless the step's loss
    ``loss_value`` (1,) and every gradient are finite, set ``status`` (2,)
    int64, ``[stopped, done]``, to ``[1, start]``, once: a later step leaves
    the first stop's entry. All arrays on the device."""
    _finite_step[1, THREADS](loss_value, grads, status, start)


@cuda.jit
def _add_loss(loss_sum, loss_value, weight, status):
    if status[0] == 0:
        loss_sum[0] += loss_value[0] * weight
    loss_value[0] = 0.0


def add_loss(loss_sum, loss_value, weight, status):
    """``loss_sum += loss_value * weight`` (the CPU epoch's ``loss_sum +=
    value * rows`` for a mean loss) unless ``status`` is set, and
    ``loss_value`` zeroed for the next step; (1,) float64 device arrays."""
    _add_loss[1, 1](loss_sum, loss_value, float(weight), status)


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
def _clip(grads, norm, max_norm, status):
    scale = max_norm / (norm[0] + 1e-6)
    if scale < 1.0 and status[0] == 0:
        for i in range(cuda.grid(1), grads.shape[0], cuda.gridsize(1)):
            grads[i] = grads[i] * scale


def clip_grad_norm(grads, max_norm, norm, status=None):
    """Twin of ``kernels.clip_grad_norm``; the norm before scaling is written
    to the (1,) float64 device array ``norm`` instead of returned, and
    ``grads`` are left as they are where ``status`` (see ``finite_step``;
    None: never) is set."""
    _squared_norm[1, THREADS](norm, grads)
    _clip[blocks_for(grads.shape[0]), THREADS](grads, norm, float(max_norm), no_stop() if status is None else status)


def update(network, optimizer, step, status):
    """Twin of ``kernels.step.update``: the step's optimizer update
    (``kernels.cuda.optimizer_step``), not taken where ``status`` is set."""
    code, hyper, state = optimizer
    optimizer_step(code, network.params, network.grads, state, hyper, step, status)


def train_epoch(network, optimizer, loss, data, work, step, loss_sum, batch_size, max_grad_norm, divisors=None):
    """Twin of ``kernels.train_epoch``, over the same bundles: the arrays are
    device arrays, except ``optimizer.hyper``, ``network.layers`` and
    ``network.layer_params``, which drive the launches from the host. Trains
    over the samples ``data.order`` names (a whole epoch or any stretch of
    one) and returns (loss_sum, step, done) as the CPU kernel does: a step
    that went non-finite is not taken, nor any after it, ``done`` is the
    start of its batch, and ``grads`` hold its gradients.

    ``data.weights`` (empty: none) weighs the rows and ``loss.class_weights``
    (a device array, empty: none) the classes; ``divisors`` (host) then
    holds each batch's ``kernels.losses.batch_weight``, which the host knows
    from the order it drew.
    """
    batch_x, batch_targets, batch_labels, z_store, a_store, scratch, batch_weights = work
    n = data.order.shape[0]
    # [loss sum, this step's loss, gradient norm]
    scalars = cuda.to_device(np.array([loss_sum, 0.0, 0.0]))
    loss_sum, loss_value, norm = scalars[0:1], scalars[1:2], scalars[2:3]
    # [whether a step went non-finite, the start of its batch in order]
    status = cuda.to_device(np.array([0, n], dtype=np.int64))
    tables = fused_tables(network.layers, network.layer_params) if fits_fused(network.layers) else None
    first_step = step
    n_out = int(network.layers[-1, N_OUT])

    def gradients(start, rows, step):
        # the batch from order[start] gathered, and its gradients, of update step + 1
        gather_rows(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows)
        xb, tb, lb, wb = batch_views(batch_x, batch_targets, batch_labels, batch_weights, data, rows)
        scale = None if divisors is None else mean_scale(loss.code, divisors[start // batch_size], n_out, loss.mean)
        batch_gradients(network.grads, z_store, a_store, scratch, xb, tb, lb, network, loss, loss_value, tables,
                        wb if wb.shape[0] > 0 else None, scale, (step, 0))

    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        gradients(start, rows, step)
        # take_step's stages, each skipped on the device once a step went non-finite
        finite_step(loss_value, network.grads, status, start)
        add_loss(loss_sum, loss_value, rows if loss.mean else 1.0, status)
        if max_grad_norm > 0.0:
            clip_grad_norm(network.grads, max_grad_norm, norm, status)
        step += 1
        update(network, optimizer, step, status)
    stopped, done = (int(v) for v in status.copy_to_host())
    if stopped:
        step = first_step + done // batch_size
        gradients(done, min(batch_size, n - done), step)
    return float(loss_sum.copy_to_host()[0]), step, done
