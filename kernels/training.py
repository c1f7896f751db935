"""Whole training epochs in compiled code: shuffle, then for each
minibatch the stages of ``kernels.step`` (gather, gradients, finite check,
clip, update), over the flat buffers of ``kernels.network``. The per-step
kernels are the very ones the Python API calls one at a time, so a fused
epoch computes what the step-by-step loop computes.
"""
import numpy as np

from kernels.checks import check_at_least, check_dtype, check_indices, check_size
from kernels.bundles import Data, Network, Optimizer, Work
from kernels.config import PARALLEL_UPDATE, jit, split_passes, thread_count
from kernels.data_parallel import parallel_gradients
from kernels.losses import CROSS_ENTROPY, N_LOSSES, batch_weight, mean_scale
from kernels.network import N_IN, N_OUT, all_small, check_network, check_units
from kernels.optimizers import check_optimizer
from kernels.step import batch_gradients, gather_batch, gather_rows, small_batch_gradients, take_step
from kernels.views import borrowed

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
def train_epoch(network, optimizer, loss, data, work, step, loss_sum, batch_size, max_grad_norm, n_chunks=None,
                threaded_update=True, small_steps=True, check_arguments=True):
    """Train over the samples ``data.order`` names, in minibatches taken in
    that order: a whole epoch, or any stretch of one.

    A step whose loss or gradient is NaN or infinite is not taken: the epoch
    stops before its update, so the parameters and optimizer state stay those
    of the last finite step, and ``network.grads`` holds the offending
    gradients.

    Parameters
    ----------
    network, optimizer, loss, data, work : the bundles of ``kernels.bundles``;
        ``network.params`` and ``optimizer.state`` are updated,
        ``network.grads`` is left holding the last step's gradients
    step : int, updates taken before this call
    loss_sum : float, the epoch's loss sum before this call (0.0 at its start;
        carried in so that an epoch trained in several calls sums its batch
        losses in the order one call would)
    batch_size : int; the last batch may be smaller
    max_grad_norm : float, clip the global gradient norm to it (0: no clipping)
    n_chunks : None, or the number of parts each minibatch is split into,
        run in parallel (``kernels.data_parallel``; the gradients then
        match the serial epoch's up to float rounding). BLAS, where it is
        used, must run single-threaded inside (the caller's job).
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
        ``mean``; with weights, the batch's weighted mean times its rows),
        the number of updates taken so far, and how many entries
        of ``order`` were trained on: ``m``, or the start of the batch that
        went non-finite

    Arguments that disagree (shapes, dtypes, an order or labels out of
    range, buffers too small) raise ValueError or TypeError before any
    update.
    """
    if check_arguments is not None:
        check_epoch("train_epoch", network, optimizer, loss, data, work, batch_size, max_grad_norm, n_chunks)
    # Every kernel below is handed these arrays dozens of times per step;
    # without their reference counts, those hand-overs cost nothing.
    network = Network(borrowed(network.params), borrowed(network.grads), borrowed(network.layers),
                      borrowed(network.layer_params))
    optimizer = Optimizer(optimizer.code, borrowed(optimizer.hyper), borrowed(optimizer.state))
    data = Data(borrowed(data.X), borrowed(data.targets), borrowed(data.labels), borrowed(data.order),
                borrowed(data.weights))
    work = Work(borrowed(work.batch_x), borrowed(work.batch_targets), borrowed(work.batch_labels),
                borrowed(work.z_store), borrowed(work.a_store), borrowed(work.scratch), borrowed(work.batch_weights))
    batch_x, batch_targets, batch_labels, z_store, a_store, scratch, batch_weights = work
    layers, n_params = network.layers, network.params.shape[0]
    n = data.order.shape[0]
    n_out = layers[layers.shape[0] - 1, N_OUT]
    # A None small_steps, threaded_update or n_chunks drops the branches
    # that test it before compilation; small_steps is tested again where the
    # small steps are taken, which drops them before they are even inlined.
    small = (n_chunks is None and small_steps is not None and small_steps and
             all_small(layers, min(batch_size, n)))
    # passes over the flat buffers split between threads where that pays:
    # the sum of a data-parallel step's parts and its update are memory
    # passes, and on small models a parallel launch costs more than it saves
    if n_chunks is not None:
        parts = n_chunks if n_params >= PARALLEL_UPDATE else 1
        chunk_grads = np.empty((n_chunks - 1, n_params), dtype=network.grads.dtype)
        values = np.zeros(n_chunks)
    else:
        parts = (thread_count() if threaded_update is not None and threaded_update and
                 split_passes(n_params, min(batch_size, n)) else 1)
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        # the batch's rows, or the sum of their weights: the mean's divisor
        divisor = batch_weight(data.weights, data.labels, loss.class_weights, data.order, start, rows)
        scale = mean_scale(loss.code, divisor, n_out, loss.mean)
        # the gradients, checked as they are written (checked) or by take_step
        checked = False
        if n_chunks is not None:
            value = parallel_gradients(chunk_grads, values, network, loss, data, work, start, rows, scale, parts, step)
        else:
            if small_steps is not None and small:
                gather_rows(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows)
                value, checked = small_batch_gradients(work, network, loss, scale, rows, data.weights.shape[0] > 0)
            else:
                xb, tb, lb, wb = gather_batch(batch_x, batch_targets, batch_labels, batch_weights, data, start, rows)
                value, checked = batch_gradients(network.grads, z_store, a_store, scratch, xb, tb, lb, wb, network,
                                                 loss, scale, (step, np.int64(0)))
            if not checked:
                return loss_sum, step, start
        if not take_step(network, optimizer, value, step, max_grad_norm, parts, not checked,
                         small_steps is not None and small):
            return loss_sum, step, start
        # with weights, each batch's weighted mean counted by its rows (as scikit-learn's loss_)
        loss_sum += value * rows if loss.mean else value
        step += 1
    return loss_sum, step, n


@jit
def train_epoch_data_parallel(network, optimizer, loss, data, work, step, loss_sum, batch_size, max_grad_norm,
                              n_chunks):
    """``train_epoch`` with each minibatch split into ``n_chunks`` parts run
    in parallel; same arguments, same results up to rounding."""
    return train_epoch(network, optimizer, loss, data, work, step, loss_sum, batch_size, max_grad_norm, n_chunks)


@jit
def check_epoch(kernel, network, optimizer, loss, data, work, batch_size, max_grad_norm, n_chunks=None):
    """The arguments of ``train_epoch`` agree with each other."""
    loss_code = loss.code
    params, grads, layers, layer_params = network
    X, targets, labels, order, weights = data
    batch_x, batch_targets, batch_labels, z_store, a_store, scratch, batch_weights = work
    check_optimizer(kernel, optimizer.code, params, grads, optimizer.state, optimizer.hyper)
    total_units, max_width = check_network(kernel, X, params, layers, layer_params)
    n, n_in, n_out = order.shape[0], layers[0, N_IN], layers[layers.shape[0] - 1, N_OUT]
    if batch_size < 1 or not max_grad_norm >= 0.0:
        raise ValueError(kernel + ": batch_size must be at least 1 and max_grad_norm at least 0 (0: no clipping), "
                         "got batch_size = " + str(batch_size))
    if n_chunks is not None and n_chunks < 1:
        raise ValueError(kernel + ": n_chunks must be at least 1, got " + str(n_chunks))
    if loss_code < 0 or loss_code >= N_LOSSES:
        raise ValueError(kernel + ": loss_code must be one of kernels.MSE ... POISSON_NLL, got " + str(loss_code))
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
    if weights.shape[0] > 0:
        check_size(kernel, "weights", weights, 0, X.shape[0], "X.shape[0] (n), or none")
        check_at_least(kernel, "batch_weights", batch_weights, 0, rows, "min(batch_size, n)")
    if loss.class_weights.shape[0] > 0:
        if loss_code != CROSS_ENTROPY:
            raise ValueError(kernel + ": class_weights are cross-entropy's; give none for another loss")
        check_size(kernel, "class_weights", loss.class_weights, 0, n_out, "the last layer's n_out (n_classes)")
    check_at_least(kernel, "batch_x", batch_x, 0, rows * n_in, "min(batch_size, n) * n_in")
    check_dtype(kernel, "batch_x", batch_x, "params", params)
    check_units(kernel, z_store, a_store, params, rows, total_units)
    check_size(kernel, "scratch", scratch, 0, 2, "two")
    check_at_least(kernel, "scratch", scratch, 1, rows * max_width, "min(batch_size, n) * the widest layer")
    check_dtype(kernel, "scratch", scratch, "params", params)
