"""Whole training epochs in compiled code: shuffle, gather each minibatch,
forward, loss, backward and the optimizer update, over the flat buffers of
``kernels.network``. The per-step kernels are the very ones the Python API
calls one at a time, so a fused epoch computes what the step-by-step loop
computes.
"""
import numpy as np

from kernels.checks import check_at_least, check_dtype, check_indices, check_size
from numba import prange

from kernels.blas import all_finite
from kernels.config import inline_jit, jit, parallel_jit, split_passes, thread_count
from kernels.losses import CROSS_ENTROPY, N_LOSSES, mean_scale, scaled_loss_value_and_grad
from kernels.network import (
    N_IN, N_OUT, UNIT_OFFSET, _network_backward, _network_forward, _small_network_backward, _small_network_forward,
    all_small, check_network, check_units, layer_units, scratch_view,
)
from kernels.optimizers import _optimizer_step, check_optimizer
from kernels.views import borrowed, rows_view, unchecked_view

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@jit
def next_random(rng_state):
    """splitmix64: the next 64-bit value from the 1-element uint64 ``rng_state``.

    The generator's whole state is that one integer, so a checkpoint that
    stores it resumes the same sequence exactly.
    """
    rng_state[0] += _GOLDEN
    z = rng_state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@jit
def random_permutation(order, rng_state):
    """Write a random permutation of 0..n-1 into ``order`` (n,), drawn from
    ``rng_state`` (inside-out Fisher-Yates). The result depends on the stream
    alone, not on what ``order`` held, so a run resumed from a saved stream
    visits the samples in the same order.

    ``next_random % (i + 1)`` is biased by at most ``n / 2**64``, far below
    anything a training run can notice.
    """
    check_size("random_permutation", "rng_state", rng_state, 0, 1, "one (the generator's state)")
    for i in range(order.shape[0]):
        j = np.int64(next_random(rng_state) % np.uint64(i + 1))
        order[i] = order[j]
        order[j] = i


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


@jit
def train_epoch(params, grads, optimizer_code, optimizer_hyper, state0, state1, state2, step, loss_sum,
                X, targets, labels, order, batch_size, max_grad_norm,
                layers, activation_params, loss_code, loss_param, loss_mean,
                batch_x, batch_targets, batch_labels, z_store, a_store, scratch, threaded_update=True,
                small_steps=True, check_arguments=True):
    """Train over the samples ``order`` names, in minibatches taken in that
    order: a whole epoch, or any stretch of one.

    A step whose loss or gradient is NaN or infinite is not taken: the epoch
    stops before its update, so the parameters and optimizer state stay those
    of the last finite step, and ``grads`` holds the offending gradients.

    Parameters
    ----------
    params, grads : (n_params,) arrays; params updated, grads left holding
        the last step's gradients
    optimizer_code, optimizer_hyper, state0, state1, state2 : as in
        ``kernels.optimizers.optimizer_step``
    step : int, updates taken before this call
    loss_sum : float, the epoch's loss sum before this call (0.0 at its start;
        carried in so that an epoch trained in several calls sums its batch
        losses in the order one call would)
    X : (n, n_in) array
    targets : (n, n_out) array for the pointwise losses, else (0, 0)
    labels : (n,) int64 array for cross-entropy, else (0,)
    order : (m,) int64 array, the rows of X to train on, in order (any
        number of them, each in 0..n-1)
    batch_size : int; the last batch may be smaller
    max_grad_norm : float, clip the global gradient norm to it (0: no clipping)
    layers, activation_params : the layer table of ``kernels.network``
    loss_code, loss_param, loss_mean : as in ``kernels.losses.loss_value_and_grad``
    batch_x : (>= batch_size * n_in,) gather buffer
    batch_targets : (>= batch_size * n_out,) gather buffer
    batch_labels : (>= batch_size,) int64 gather buffer
    z_store, a_store, scratch : the buffers of ``kernels.network``
    threaded_update : bool or None, True (the default) to split each
        step's finite check and optimizer update between threads where
        ``kernels.config.split_passes`` says so; False or None to keep them
        on one thread at any size
    small_steps : bool or None, True (the default) to run the steps of a
        network that is ``kernels.network.all_small`` as plain loops over
        the flat buffers; False or None to run every step through the
        general path
    Either way the numbers are the same. None, unlike False, is a constant
    to the compiler: the code it turns off is left out of the compiled
    epoch (a second or more of compilation each). fastbp passes None for
    what a model does not run.
    check_arguments : True (the default) to check the arguments against
        each other; None for a caller that built and checked every one
        itself (fastbp's Trainer), which leaves the checks, some 3 s of a
        first compilation and a pass over ``order`` and ``labels`` per
        call, out of the compiled epoch

    Returns
    -------
    (loss_sum, step, done) : ``loss_sum`` plus, over the samples trained on,
        each sample's share of its batch loss (batch loss times batch size for
        ``mean``), the number
        of updates taken so far, and how many entries of ``order`` were
        trained on: ``m``, or the start of the batch that went non-finite

    Arguments that disagree (shapes, dtypes, an order or labels out of
    range, buffers too small) raise ValueError or TypeError before any
    update.
    """
    if check_arguments is not None:
        check_epoch("train_epoch", params, grads, optimizer_code, optimizer_hyper, state0, state1, state2,
                    X, targets, labels, order, batch_size, max_grad_norm, layers, activation_params, loss_code,
                    batch_x, batch_targets, batch_labels, z_store, a_store, scratch)
    # Every kernel below is handed these arrays dozens of times per step;
    # without their reference counts, those hand-overs cost nothing.
    params, grads, optimizer_hyper = borrowed(params), borrowed(grads), borrowed(optimizer_hyper)
    state0, state1, state2 = borrowed(state0), borrowed(state1), borrowed(state2)
    X, targets, labels, order = borrowed(X), borrowed(targets), borrowed(labels), borrowed(order)
    layers, activation_params = borrowed(layers), borrowed(activation_params)
    batch_x, batch_targets, batch_labels = borrowed(batch_x), borrowed(batch_targets), borrowed(batch_labels)
    z_store, a_store, scratch = borrowed(z_store), borrowed(a_store), borrowed(scratch)
    n = order.shape[0]
    n_out = layers[layers.shape[0] - 1, N_OUT]
    # A None small_steps or threaded_update drops the branches that test it
    # before compilation; small_steps is tested again where the small steps
    # are taken, which drops them before they are even inlined.
    small = small_steps is not None and small_steps and all_small(layers, min(batch_size, n))
    # passes over the flat buffers split between threads where that pays
    parts = (thread_count() if threaded_update is not None and threaded_update and
             split_passes(params.shape[0], min(batch_size, n)) else 1)
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        scale = mean_scale(loss_code, rows, n_out, loss_mean)
        if small_steps is not None and small:
            gather_rows(batch_x, batch_targets, batch_labels, X, targets, labels, order, start, rows)
            value = small_batch_gradients(grads, z_store, a_store, scratch, batch_x, batch_targets, batch_labels,
                                          params, layers, activation_params, loss_code, loss_param, scale, rows)
        else:
            xb, tb, lb = gather_batch(batch_x, batch_targets, batch_labels, X, targets, labels, order, start, rows)
            value, checked = batch_gradients(grads, z_store, a_store, scratch, xb, tb, lb, params, layers,
                                             activation_params, loss_code, loss_param, scale)
            # the backward checked the gradients as it wrote them
            if not checked:
                return loss_sum, step, start
        if not finite_step(value, grads, parts, optimizer_hyper, small_steps is not None and small):
            return loss_sum, step, start
        loss_sum += value * rows if loss_mean else value
        if max_grad_norm > 0.0:
            clip_grad_norm(grads, max_grad_norm)
        step += 1
        if small_steps is not None and small:
            _optimizer_step(optimizer_code, params, grads, state0, state1, state2, optimizer_hyper, step, True)
        else:
            update(optimizer_code, params, grads, state0, state1, state2, optimizer_hyper, step, parts)
    return loss_sum, step, n


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
    return split_pass(bool(False), np.int64(0), empty, grads, empty, empty, empty, hyper, np.int64(0), parts)


@inline_jit
def update(code, params, grads, state0, state1, state2, hyper, step, parts):
    """A step's optimizer update, split into ``parts`` slices on as many
    threads (``split_pass``) or on this one."""
    if parts > 1:
        split_pass(bool(True), code, params, grads, state0, state1, state2, hyper, step, parts)
    else:
        update_slice(code, params, grads, state0, state1, state2, hyper, step, np.int64(0), params.shape[0])


@jit
def update_slice(code, params, grads, state0, state1, state2, hyper, step, first, end):
    """The optimizer update of the elements ``first:end`` of the flat buffers
    (a thread's share of ``split_pass``, or all of a serial step's): one
    compiled copy of the optimizers' loops for both."""
    _optimizer_step(code, params[first:end], grads[first:end], state0[first:end], state1[first:end],
                    state2[first:end], hyper, step)


@parallel_jit
def split_pass(update, code, params, grads, state0, state1, state2, hyper, step, parts):
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
            update_slice(code, params, grads, state0, state1, state2, hyper, step, first, end)
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


@jit
def check_epoch(kernel, params, grads, optimizer_code, optimizer_hyper, state0, state1, state2,
                X, targets, labels, order, batch_size, max_grad_norm, layers, activation_params, loss_code,
                batch_x, batch_targets, batch_labels, z_store, a_store, scratch):
    """The arguments of ``train_epoch`` agree with each other."""
    check_optimizer(kernel, optimizer_code, params, grads, state0, state1, state2, optimizer_hyper)
    total_units, max_width = check_network(kernel, X, params, layers, activation_params)
    n, n_in, n_out = order.shape[0], layers[0, N_IN], layers[layers.shape[0] - 1, N_OUT]
    if batch_size < 1 or not max_grad_norm >= 0.0:
        raise ValueError(kernel + ": batch_size must be at least 1 and max_grad_norm at least 0 (0: no clipping), "
                         "got batch_size = " + str(batch_size))
    if loss_code < 0 or loss_code >= N_LOSSES:
        raise ValueError(kernel + ": loss_code must be one of kernels.MSE ... BCE_WITH_LOGITS, got " + str(loss_code))
    rows = min(batch_size, n)  # the largest batch gathered
    check_indices(kernel, "order", order, X.shape[0], "X.shape[0] (n)")
    if loss_code == CROSS_ENTROPY:
        check_size(kernel, "labels", labels, 0, X.shape[0], "X.shape[0] (n) for cross-entropy")
        check_indices(kernel, "labels", labels, n_out, "the last layer's n_out")
        check_at_least(kernel, "batch_labels", batch_labels, 0, rows, "min(batch_size, n)")
    else:
        check_size(kernel, "targets", targets, 0, X.shape[0], "X.shape[0] (n)")
        check_size(kernel, "targets", targets, 1, n_out, "the last layer's n_out")
        check_dtype(kernel, "targets", targets, "params", params)
        check_at_least(kernel, "batch_targets", batch_targets, 0, rows * n_out, "min(batch_size, n) * n_out")
        check_dtype(kernel, "batch_targets", batch_targets, "params", params)
    check_at_least(kernel, "batch_x", batch_x, 0, rows * n_in, "min(batch_size, n) * n_in")
    check_dtype(kernel, "batch_x", batch_x, "params", params)
    check_units(kernel, z_store, a_store, params, rows, total_units)
    check_size(kernel, "scratch", scratch, 0, 2, "two")
    check_at_least(kernel, "scratch", scratch, 1, rows * max_width, "min(batch_size, n) * the widest layer")
    check_dtype(kernel, "scratch", scratch, "params", params)


@inline_jit
def gather_batch(batch_x, batch_targets, batch_labels, X, targets, labels, order, start, rows):
    """The samples ``order[start:start + rows]`` as (x, targets, labels) of
    ``rows`` rows (targets or labels empty, as in the data): copied to the
    front of the gather buffers, or, when they are consecutive rows of the
    data (an unshuffled epoch), views of the data itself, with nothing to
    copy."""
    first = order[start]
    consecutive = True
    for r in range(1, rows):
        consecutive &= order[start + r] == first + r
    if consecutive:
        # order's entries are in range (checked at entry, or built so by a caller that
        # turned the checks off), so these slices are whole
        return (rows_view(X, first, rows, batch_x), rows_view(targets, first, rows, batch_targets),
                rows_view(labels, first, rows, batch_labels))
    gather_rows(batch_x, batch_targets, batch_labels, X, targets, labels, order, start, rows)
    n_in, n_out = X.shape[1], targets.shape[1]
    # unchecked: the copy has just written these rows, so the caller had
    # made sure they fit (and nothing inlined may raise: see batch_gradients)
    return (unchecked_view(batch_x, 0, rows, n_in),
            unchecked_view(batch_targets, 0, rows if targets.shape[0] > 0 else 0, n_out),
            batch_labels[:rows if labels.shape[0] > 0 else 0])


@inline_jit
def gather_rows(batch_x, batch_targets, batch_labels, X, targets, labels, order, start, rows):
    """``gather_batch``'s copy alone, for a caller that reads the flat buffers."""
    n_in, n_out = X.shape[1], targets.shape[1]
    for r in range(rows):
        sample = order[start + r]
        for j in range(n_in):
            batch_x[r * n_in + j] = X[sample, j]
        for j in range(n_out):
            batch_targets[r * n_out + j] = targets[sample, j]
        if labels.shape[0] > 0:
            batch_labels[r] = labels[sample]


# Inlined, with batch_loss: as functions of their own between the epoch and
# the network, they would have all of the network's code linked, optimized
# and emitted twice more. Nothing inlined here may raise: in the parallel
# loop of the data-parallel epoch, a raise is a second exit from the loop,
# which then runs on one thread.
@inline_jit
def batch_gradients(grads, z_store, a_store, scratch, x, target, labels, params, layers, activation_params,
                    loss_code, loss_param, loss_scale):
    """Forward, loss and backward over a minibatch, or a part of one.

    ``grads`` is written (not accumulated); ``loss_scale`` is the whole
    minibatch's ``kernels.losses.mean_scale``. The other arguments are as in
    ``train_epoch``, with ``x``, ``target``, ``labels`` the gathered rows.
    Returns this part's share of the minibatch loss, and whether every
    gradient it wrote is finite.
    """
    value = batch_loss(z_store, a_store, scratch, x, target, labels, params, layers, activation_params,
                       loss_code, loss_param, loss_scale)
    finite = _network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, False, False)
    return value, finite


@inline_jit
def batch_loss(z_store, a_store, scratch, x, target, labels, params, layers, activation_params,
               loss_code, loss_param, loss_scale):
    """The forward pass and loss of ``batch_gradients``: returns the loss
    share and leaves d(loss)/d(prediction) in ``scratch`` row 0, where the
    backward starts."""
    rows = x.shape[0]
    last = layers.shape[0] - 1
    _network_forward(z_store, a_store, x, params, layers, activation_params)
    prediction = layer_units(a_store, layers, last, rows)
    dprediction = scratch_view(scratch, np.int64(0), rows, layers[last, N_OUT])
    return scaled_loss_value_and_grad(dprediction, prediction, target, labels, loss_code, loss_param, loss_scale)


@inline_jit
def small_batch_gradients(grads, z_store, a_store, scratch, batch_x, batch_targets, batch_labels, params, layers,
                          activation_params, loss_code, loss_param, loss_scale, rows):
    """``batch_gradients`` for a network that is ``kernels.network.all_small``,
    over the first ``rows`` rows of the flat gather buffers."""
    last = layers.shape[0] - 1
    n_out = layers[last, N_OUT]
    _small_network_forward(z_store, a_store, batch_x, params, layers, activation_params, rows)
    prediction = unchecked_view(a_store, rows * layers[last, UNIT_OFFSET], rows, n_out)
    dprediction = unchecked_view(scratch[0], 0, rows, n_out)
    target = unchecked_view(batch_targets, 0, rows if batch_targets.shape[0] > 0 else 0, n_out)
    value = scaled_loss_value_and_grad(dprediction, prediction, target, batch_labels[:rows], loss_code, loss_param,
                                       loss_scale)
    _small_network_backward(grads, scratch, batch_x, params, layers, activation_params, z_store, a_store, rows)
    return value
