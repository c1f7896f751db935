"""A whole multi-layer perceptron, forward and backward, over flat buffers.

The network is described by a layer table (``kernels.layers.table``), so
one compiled function serves every depth, width and kind of layer: the
loops here run the layers in order and backwards, each by its kind
(``kernels.layers``).

Layer ``i`` owns a stretch of the flat parameter buffer (a dense layer
``W = params[w:w + n_out*n_in]`` viewed as (n_out, n_in) and
``b = params[b:b + n_out]``); ``grads`` has the same layout. For a batch of
``batch`` rows, layer ``i``'s outputs are the (batch, n_out) view
``a_store[batch*u : batch*(u + n_out)]``, ``u`` its unit offset, and its
cache (a dense layer's pre-activations) the same stretch of ``z_store`` at
its cache offset. ``buffer_sizes`` gives the sizes of every buffer.
"""
from kernels.activations import IDENTITY, N_ACTIVATIONS
from kernels.checks import check_at_least, check_dtype, check_size, checked_dtype
from kernels.config import inline_jit, jit
from kernels.layers import ACTIVATION as ACTIVATION_KIND, DENSE, EVALUATION, N_KINDS, RESIDUAL_ADD, RESIDUAL_START, \
    layer_backward, layer_forward, sizes
from kernels.layers.dense import is_small
from kernels.layers.table import (
    ACTIVATION, BIAS_OFFSET, CACHE_OFFSET, KIND, N_COLUMNS, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET, layer_units,
    scratch_view,
)


@jit
def network_forward(z_store, a_store, x, params, layers, activation_params, mode=EVALUATION):
    """Run every layer; the output is ``layer_units(a_store, layers, -1, batch)``.

    Parameters
    ----------
    z_store, a_store : (>= batch * total_units,) arrays, written
    x : (batch, n_in) C-contiguous array
    params : (n_params,) array
    layers, activation_params : the layer table (see the module docstring)
    mode : (step, first_row), see ``kernels.layers.layer_forward``; in
        evaluation by default (dropout passes its inputs through)

    Arrays of one dtype (TypeError), a layer table that fits ``params`` and
    chains each layer's ``n_out`` to the next ``n_in``, and buffers large
    enough (ValueError).
    """
    kernel = "network_forward"
    total_units, _ = check_network(kernel, x, params, layers, activation_params)
    check_units(kernel, z_store, a_store, params, x.shape[0], total_units)
    _network_forward(z_store, a_store, checked_dtype(x, params), params, layers, activation_params, x.shape[0],
                     mode)


@jit
def check_network(kernel, x, params, layers, activation_params):
    """Check a layer table against ``params`` and the input ``x``; returns
    (total_units, max_width), the widest of the inputs and layer outputs."""
    check_dtype(kernel, "x", x, "params", params)
    check_size(kernel, "layers", layers, 1, N_COLUMNS, "the layer table's width")
    n_layers = layers.shape[0]
    if n_layers == 0:
        raise ValueError(kernel + ": layers must have one row per layer, got none")
    check_size(kernel, "activation_params", activation_params, 0, n_layers, "layers.shape[0] (n_layers)")
    check_size(kernel, "activation_params", activation_params, 1, 2, "p1, p2")
    check_size(kernel, "x", x, 1, layers[0, N_IN], "layers[0, N_IN] (n_in)")
    units, cache, max_width = 0, 0, x.shape[1]
    for i in range(n_layers):
        n_in, n_out = layers[i, N_IN], layers[i, N_OUT]
        if n_out < 1 or (i > 0 and n_in != layers[i - 1, N_OUT]):
            raise ValueError(kernel + ": layer " + str(i) + " must have n_out >= 1 and n_in equal to the previous layer's n_out, got n_in = "
                             + str(n_in) + ", n_out = " + str(n_out))
        weights, bias, kind = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET], layers[i, KIND]
        if kind < 0 or kind >= N_KINDS:
            raise ValueError(kernel + ": layer " + str(i) + " has an unknown kind " + str(kind))
        # a dense layer's weights, another's parameters (its bias among them)
        owned = n_out * n_in if kind == DENSE else sizes(kind, n_in, n_out, bias >= 0)[0]
        if weights < 0 or weights + owned > params.shape[0] or bias < -1 or bias + n_out > params.shape[0]:
            raise ValueError(kernel + ": layer " + str(i) + " has weights or bias outside params (" + str(params.shape[0])
                             + " elements); build the table with the model that owns params")
        if kind != DENSE and (n_in != n_out or (kind != ACTIVATION_KIND and layers[i, ACTIVATION] != IDENTITY)):
            raise ValueError(kernel + ": layer " + str(i) + " is not dense, so it must keep its width (n_in == n_out) "
                             "and, unless an activation layer, have the identity activation")
        if kind == RESIDUAL_START or kind == RESIDUAL_ADD:
            check_residual(kernel, layers, activation_params, i)
        if layers[i, UNIT_OFFSET] != units:
            raise ValueError(kernel + ": layer " + str(i) + " must have unit_offset " + str(units) + " (the n_out of the layers before), got "
                             + str(layers[i, UNIT_OFFSET]))
        if layers[i, ACTIVATION] < 0 or layers[i, ACTIVATION] >= N_ACTIVATIONS:
            raise ValueError(kernel + ": layer " + str(i) + " has an unknown activation code " + str(layers[i, ACTIVATION]))
        if layers[i, CACHE_OFFSET] != cache:
            raise ValueError(kernel + ": layer " + str(i) + " must have cache_offset " + str(cache) + " (the caches of the layers before), got "
                             + str(layers[i, CACHE_OFFSET]))
        units += n_out
        cache += sizes(layers[i, KIND], n_in, n_out, bias >= 0)[1]
        max_width = max(max_width, n_out)
    return max(units, cache), max_width


@jit
def check_residual(kernel, layers, layer_params, i):
    """Layer ``i``, an end of a residual connection, names its other end
    (``layer_params[i, 0]``): the matching kind, after a start or before an
    add, of its width, naming it back."""
    n_layers, kind = layers.shape[0], layers[i, KIND]
    other = layer_params[i, 0]
    j = int(other) if other >= 0 and other < n_layers else -1
    matching = (j >= 0 and other == j and layers[j, KIND] == (RESIDUAL_ADD if kind == RESIDUAL_START else RESIDUAL_START)
                and (j > i) == (kind == RESIDUAL_START) and layers[j, N_OUT] == layers[i, N_OUT]
                and layer_params[j, 0] == i)
    if not matching:
        raise ValueError(kernel + ": layer " + str(i) + " is an end of a residual connection, whose layer_params[i, 0] "
                         "must be the index of its other end (a start before an add, of one width, each naming the "
                         "other), got " + str(other))


@jit
def check_units(kernel, z_store, a_store, params, batch, total_units):
    """The activation buffers hold ``batch * total_units`` values of ``params``'s dtype."""
    check_at_least(kernel, "z_store", z_store, 0, batch * total_units, "batch * total units")
    check_at_least(kernel, "a_store", a_store, 0, batch * total_units, "batch * total units")
    check_dtype(kernel, "z_store", z_store, "params", params)
    check_dtype(kernel, "a_store", a_store, "params", params)


def _forward_layers(z_store, a_store, x, params, layers, layer_params, batch, mode):
    # every layer in order, each by its kind; x is (batch, n_in), or a flat
    # buffer of those rows (a tiny network's gathered batch)
    layer_forward(z_store, a_store, x, 0, params, layers, layer_params, 0, batch, mode)
    for i in range(1, layers.shape[0]):
        layer_forward(z_store, a_store, a_store, batch * layers[i - 1, UNIT_OFFSET], params, layers, layer_params,
                      i, batch, mode)


def _backward_layers(grads, scratch, x, params, layers, layer_params, z_store, a_store, batch, need_dx, accumulate,
                     first, end):
    # layers end - 1 down to first (end -1: n_layers), each by its kind; d(loss)/d(a) arrives in one row of the
    # scratch and the layer's d(loss)/d(inputs) leaves in the other. Returns whether every gradient written is
    # finite (kernels.layers.layer_backward)
    n_layers = layers.shape[0]
    finite = True
    for i in range((n_layers if end < 0 else end) - 1, max(first, 1) - 1, -1):
        parity = (n_layers - 1 - i) % 2
        finite &= layer_backward(scratch[1 - parity], grads, scratch[parity], a_store,
                                 batch * layers[i - 1, UNIT_OFFSET], params, layers, layer_params, z_store, a_store,
                                 i, batch, True, accumulate)
    if first == 0:
        parity = (n_layers - 1) % 2
        finite &= layer_backward(scratch[1 - parity], grads, scratch[parity], x, 0, params, layers, layer_params,
                                 z_store, a_store, 0, batch, need_dx, accumulate)
    return finite


# One definition of the network's loops, compiled twice: called, and written
# into the step of a tiny network (kernels.step.small_batch_gradients), where
# a call and the arrays handed to it are much of the step.
_network_forward = jit(_forward_layers)
_network_backward = jit(_backward_layers)
_small_network_forward = inline_jit(_forward_layers)
_small_network_backward = inline_jit(_backward_layers)


@jit
def network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, need_dx,
                     accumulate=True):
    """Backpropagate from d(loss)/d(output) into ``grads``.

    Parameters
    ----------
    grads : (n_params,) array, parameter gradients are added to it (written
        over when not ``accumulate``, which spares zeroing it first)
    scratch : (2, >= batch * max_width) array; on entry its row 0 holds
        d(loss)/d(output) as (batch, n_out_last); on exit, when ``need_dx``,
        row ``n_layers % 2`` holds d(loss)/d(x) as (batch, n_in)
    x : (batch, n_in) array, the forward input
    params, layers, activation_params : as in ``network_forward``
    z_store, a_store : the buffers the forward pass filled
    need_dx : bool, compute the gradient w.r.t. ``x``
    accumulate : bool

    Checked as in ``network_forward``; ``grads`` has the length and dtype of
    ``params``.

    Returns
    -------
    bool : whether every element of ``grads`` is finite, checked as it is
        written (see ``kernels.layers.layer_backward``)
    """
    check_backward("network_backward", grads, scratch, x, params, layers, activation_params, z_store, a_store)
    return _network_backward(grads, scratch, checked_dtype(x, params), params, layers, activation_params, z_store,
                             a_store, x.shape[0], need_dx, accumulate, 0, -1)


@jit
def network_backward_layers(grads, scratch, x, params, layers, activation_params, z_store, a_store, first, end):
    """``network_backward`` (not accumulating, no d(loss)/d(x)) through
    layers ``end - 1`` down to ``first`` only, so a caller can use the
    gradients of the last layers while the earlier ones are still to come.

    Parameters
    ----------
    first, end : int, 0 <= first < end <= n_layers; on entry ``scratch`` row
        ``(n_layers - end) % 2`` holds d(loss)/d(a) of layer ``end - 1``, as
        the call for layers ``end`` onwards (or the loss, for the last) left it
    The other arguments are as in ``network_backward``, checked as there.
    """
    kernel = "network_backward_layers"
    check_backward(kernel, grads, scratch, x, params, layers, activation_params, z_store, a_store)
    if first < 0 or first >= end or end > layers.shape[0]:
        raise ValueError(kernel + ": first and end must satisfy 0 <= first < end <= n_layers ("
                         + str(layers.shape[0]) + "), got first = " + str(first) + ", end = " + str(end))
    _network_backward(grads, scratch, checked_dtype(x, params), params, layers, activation_params, z_store, a_store,
                      x.shape[0], False, False, first, end)


@jit
def check_backward(kernel, grads, scratch, x, params, layers, activation_params, z_store, a_store):
    """Check the arguments of a backward pass (see ``network_backward``)."""
    total_units, max_width = check_network(kernel, x, params, layers, activation_params)
    check_units(kernel, z_store, a_store, params, x.shape[0], total_units)
    check_size(kernel, "grads", grads, 0, params.shape[0], "params.shape[0] (n_params)")
    check_dtype(kernel, "grads", grads, "params", params)
    check_size(kernel, "scratch", scratch, 0, 2, "two")
    check_at_least(kernel, "scratch", scratch, 1, x.shape[0] * max_width, "batch * the widest layer")
    check_dtype(kernel, "scratch", scratch, "params", params)


@jit
def buffer_sizes(layers):
    """(n_params, total_units, max_width) of a layer table: the length of
    the flat parameter (and gradient) buffer, the units per sample of the
    activation buffers (the layers' outputs in ``a_store``, their caches in
    ``z_store``: the larger of the two sums, so one size serves both), and
    the widest input or output, the backward scratch's width per sample.
    Every buffer of a network is sized from these: ``z_store`` and
    ``a_store`` hold ``batch * total_units`` values, ``scratch`` is
    ``(2, batch * max_width)``."""
    n_params, units, cache, max_width = 0, 0, 0, layers[0, N_IN]
    for i in range(layers.shape[0]):
        n_in, n_out = layers[i, N_IN], layers[i, N_OUT]
        layer_params, layer_cache = sizes(layers[i, KIND], n_in, n_out, layers[i, BIAS_OFFSET] >= 0)
        n_params += layer_params
        units += n_out
        cache += layer_cache
        max_width = max(max_width, n_out)
    return n_params, max(units, cache), max_width


@jit
def all_small(layers, batch):
    """Whether every layer of a ``batch``-row step is dense and runs as
    plain loops (``kernels.layers.dense.is_small``), and so does every
    smaller batch."""
    for i in range(layers.shape[0]):
        if layers[i, KIND] != DENSE or not is_small(batch, layers[i, N_IN], layers[i, N_OUT]):
            return False
    return True
