"""One training step, in stages: gather a minibatch, its gradients, then
the finite check, the clip and the update (``take_step``).

Every epoch is these stages in a loop: the serial and data-parallel epochs
of ``kernels.training`` and the distributed one of fastbp differ only in
how they get and reduce the gradients, and ``kernels.cuda.step`` holds the
device's twins of the same names.
"""
import numpy as np
from numba import prange

from kernels.blas import all_finite
from kernels.config import inline_jit, jit, parallel_jit
from kernels.layers import EVALUATION
from kernels.losses import scaled_loss_value_and_grad
from kernels.network import N_OUT, UNIT_OFFSET, _network_backward, _network_forward, _small_network_backward, \
    _small_network_forward, layer_units, scratch_view
from kernels.optimizers import _optimizer_step
from kernels.views import rows_view, unchecked_view


@inline_jit
def gather_batch(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows):
    """The samples ``data.order[start:start + rows]`` as (x, targets,
    labels, weights) of ``rows`` rows (targets, labels or weights empty, as
    in the data): copied to the front of the gather buffers, or, when they
    are consecutive rows of the data (an unshuffled epoch), views of the
    data itself, with nothing to copy."""
    X, targets, labels, order, weights = data
    first = order[start]
    consecutive = True
    for r in range(1, rows):
        consecutive &= order[start + r] == first + r
    if consecutive:
        # order's entries are in range (checked at entry, or built so by a caller that
        # turned the checks off), so these slices are whole
        return (rows_view(X, first, rows, batch_x), rows_view(targets, first, rows, batch_targets),
                rows_view(labels, first, rows, batch_labels), rows_view(weights, first, rows, batch_weights))
    gather_rows(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows)
    n_in, n_out = X.shape[1], targets.shape[1]
    # unchecked: the copy has just written these rows, so the caller had
    # made sure they fit (and nothing inlined may raise: see batch_gradients)
    return (unchecked_view(batch_x, 0, rows, n_in),
            unchecked_view(batch_targets, 0, rows if targets.shape[0] > 0 else 0, n_out),
            batch_labels[:rows if labels.shape[0] > 0 else 0], batch_weights[:rows if weights.shape[0] > 0 else 0])


@inline_jit
def gather_rows(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows):
    """``gather_batch``'s copy alone, for a caller that reads the flat buffers."""
    X, targets, labels, order, weights = data
    n_in, n_out = X.shape[1], targets.shape[1]
    for r in range(rows):
        sample = order[start + r]
        for j in range(n_in):
            batch_x[r * n_in + j] = X[sample, j]
        for j in range(n_out):
            batch_targets[r * n_out + j] = targets[sample, j]
        if labels.shape[0] > 0:
            batch_labels[r] = labels[sample]
        if weights.shape[0] > 0:
            batch_weights[r] = weights[sample]


# Inlined, with batch_loss: as functions of their own between the epoch and
# the network, they would have all of the network's code linked, optimized
# and emitted twice more. Nothing inlined here may raise: in the parallel
# loop of the data-parallel epoch, a raise is a second exit from the loop,
# which then runs on one thread.
@inline_jit
def batch_gradients(grads, z_store, a_store, scratch, x, target, labels, weights, network, loss, loss_scale, mode):
    """Forward, loss and backward over a minibatch, or a part of one.

    ``grads`` is written (not accumulated); ``z_store``, ``a_store`` and
    ``scratch`` are the part's buffers; ``x``, ``target``, ``labels``,
    ``weights`` the gathered rows; ``loss_scale`` the whole minibatch's
    ``kernels.losses.mean_scale``; ``mode`` (step, first_row), the update
    this is the step of and the part's first row within its minibatch
    (``kernels.layers.layer_forward``). Returns this part's share of the
    minibatch loss, and whether every gradient it wrote is finite.
    """
    value = batch_loss(z_store, a_store, scratch, x, target, labels, weights, network, loss, loss_scale, mode)
    params, _, layers, layer_params = network
    finite = _network_backward(grads, scratch, x, params, layers, layer_params, z_store, a_store, x.shape[0], False,
                               False, 0, -1)
    return value, finite


@inline_jit
def batch_loss(z_store, a_store, scratch, x, target, labels, weights, network, loss, loss_scale, mode):
    """The forward pass and loss of ``batch_gradients``: returns the loss
    share and leaves d(loss)/d(prediction) in ``scratch`` row 0, where the
    backward starts."""
    params, _, layers, layer_params = network
    rows = x.shape[0]
    last = layers.shape[0] - 1
    _network_forward(z_store, a_store, x, params, layers, layer_params, rows, mode)
    prediction = layer_units(a_store, layers, last, rows)
    dprediction = scratch_view(scratch, np.int64(0), rows, layers[last, N_OUT])
    return scaled_loss_value_and_grad(dprediction, prediction, target, labels, weights, loss.class_weights, loss.code,
                                      loss.param, loss_scale)


@inline_jit
def small_batch_gradients(work, network, loss, loss_scale, rows, weighted):
    """``batch_gradients`` for a network that is ``kernels.network.all_small``,
    over the first ``rows`` rows of the flat gather buffers, with the
    network's loops written into the step; ``weighted``: the rows have
    gathered weights."""
    batch_x, batch_targets, batch_labels, z_store, a_store, scratch, batch_weights = work
    params, grads, layers, layer_params = network
    last = layers.shape[0] - 1
    n_out = layers[last, N_OUT]
    # dense layers alone (all_small), so no mode but evaluation's
    _small_network_forward(z_store, a_store, batch_x, params, layers, layer_params, rows, EVALUATION)
    prediction = unchecked_view(a_store, rows * layers[last, UNIT_OFFSET], rows, n_out)
    dprediction = unchecked_view(scratch[0], 0, rows, n_out)
    target = unchecked_view(batch_targets, 0, rows if batch_targets.shape[0] > 0 else 0, n_out)
    value = scaled_loss_value_and_grad(dprediction, prediction, target, batch_labels[:rows],
                                       batch_weights[:rows if weighted else 0], loss.class_weights, loss.code,
                                       loss.param, loss_scale)
    finite = _small_network_backward(grads, scratch, batch_x, params, layers, layer_params, z_store, a_store, rows,
                                     False, False, 0, -1)
    return value, finite


@inline_jit
def take_step(network, optimizer, loss_value, step, max_grad_norm, parts, check_grads, small):
    """The rest of a step once its gradients are in ``network.grads``: the
    finite check, the clip and the update, which is update ``step + 1``.
    Returns whether the step was taken: a step whose loss or gradients are
    not finite is not, and leaves the parameters and state as they were.

    ``parts`` : the slices the passes over the flat buffers are split into,
        one per thread (1: on this thread)
    ``check_grads`` : False when the backward has checked the gradients as
        it wrote them
    ``small`` : the update of a tiny network, inlined (``_optimizer_step``)
    """
    _, grads, _, _ = network
    if not finite_step(loss_value, grads, parts, optimizer.hyper, check_grads):
        return False
    if max_grad_norm > 0.0:
        clip_grad_norm(grads, max_grad_norm)
    update(network, optimizer, step + 1, parts, small)
    return True


@jit
def clip_grad_norm(grads, max_norm):
    """Scale ``grads`` so that their global L2 norm is at most ``max_norm``
    (torch.nn.utils.clip_grad_norm_'s rule); returns the norm before scaling."""
    total = 0.0
    for i in range(grads.shape[0]):
        total += float(grads[i]) * float(grads[i])
    norm = np.sqrt(total)
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for i in range(grads.shape[0]):
            grads[i] = grads[i] * scale
    return norm


@inline_jit
def finite_step(loss_value, grads, parts, hyper, check_grads=True):
    """Whether a step may be taken: its loss and every gradient finite (the
    gradients checked in ``parts`` slices on as many threads, unless not
    ``check_grads``; ``hyper``, the optimizer's, only gives ``split_pass``
    the argument types of the update)."""
    if not loss_value - loss_value == 0.0:
        return False
    if not check_grads:
        return True
    if parts == 1:
        return all_finite(grads)
    empty = grads[:0]
    return split_pass(bool(False), np.int64(0), empty, grads, empty.reshape((1, 0)), hyper, np.int64(0), parts)


@inline_jit
def update(network, optimizer, step, parts, small=False):
    """A step's optimizer update (update number ``step``), split into
    ``parts`` slices on as many threads (``split_pass``) or on this one;
    ``small`` inlines it, for a tiny network."""
    params, grads, _, _ = network
    code, hyper, state = optimizer
    if small:
        _optimizer_step(code, params, grads, state, hyper, step, np.int64(0), params.shape[0], True)
    elif parts > 1:
        split_pass(bool(True), code, params, grads, state, hyper, step, parts)
    else:
        update_slice(code, params, grads, state, hyper, step, np.int64(0), params.shape[0])


@jit
def update_slice(code, params, grads, state, hyper, step, first, end):
    """The optimizer update of the elements ``first:end`` of the flat buffers
    (a thread's share of ``split_pass``, or all of a serial step's): one
    compiled copy of the optimizers' loops for both."""
    _optimizer_step(code, params, grads, state, hyper, step, first, end)


@parallel_jit
def split_pass(update, code, params, grads, state, hyper, step, parts):
    """One of a step's passes over the flat buffers, cut into ``parts``
    slices on as many threads: the optimizer update (``update``; arguments
    as in ``kernels.optimizers.optimizer_step``), else the finite check of
    ``grads``. Returns whether every gradient checked was finite. One
    function serves both because each parallel function costs about half a
    second of compilation of its own."""
    n = grads.shape[0]
    bad = 0
    for c in prange(parts):
        first, end = n * c // parts, n * (c + 1) // parts
        if update:
            update_slice(code, params, grads, state, hyper, step, first, end)
        elif not all_finite(grads[first:end]):
            bad += 1
    return bad == 0


@parallel_jit
def all_finite_parallel(values, parts):
    """``all_finite`` over ``parts`` slices of ``values`` on as many threads."""
    n = values.shape[0]
    bad = 0
    for c in prange(parts):
        if not all_finite(values[n * c // parts:n * (c + 1) // parts]):
            bad += 1
    return bad == 0
