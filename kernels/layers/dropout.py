"""Dropout (inverted, as torch.nn.Dropout), forward and backward side by
side: in training ``out = x * mask``, each element of ``mask`` ``0`` with
probability ``p`` and ``1 / (1 - p)`` otherwise; in evaluation ``out = x``.

The mask is no stream of random numbers but a function of its element's
coordinates: ``mask_value(seed, step, layer, element, p)`` hashes the four
integers (splitmix64's finaliser, applied once per coordinate) and drops
the element where the hash's top 32 bits fall below ``p * 2**32``, so the same step of
the same run draws the same mask whatever the thread count, the device, the
way a batch is split into parts (``first_row`` numbers a part's rows within
its batch) or where a run was stopped and resumed. ``element`` is
``row * n + unit`` over the (batch, n) inputs.
"""
import numpy as np

from kernels.checks import check_same_shape
from kernels.config import inline_jit, jit
from kernels.layers.dense import input_rows
from kernels.layers.table import CACHE_OFFSET, N_OUT, layer_cache, layer_units
from kernels.views import unchecked_view

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_32 = 4294967296.0


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): none, and the mask."""
    return 0, n_out


# The layer in the network's loops (kernels.layers.layer_forward and
# layer_backward): ``layer_params[i]`` is (p, seed), ``mode`` (step,
# first_row) with a step < 0 in evaluation, where the mask is all ones.
@inline_jit
def forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    n = layers[i, N_OUT]
    mask_start = batch * layers[i, CACHE_OFFSET]
    p, seed = layer_params[i, 0], np.int64(layer_params[i, 1])
    step, first_row = mode
    # the terms of mask_value, once for the layer; in evaluation a rate of 0: all ones
    rate = p if step >= 0 else 0.0
    key, threshold, kept = layer_key(seed, max(step, 0), i), drop_threshold(rate), 1.0 / (1.0 - rate)
    # the mask alone first: a loop of hashes only, which vectorises
    first = first_row * n
    for at in range(batch * n):
        z_store[mask_start + at] = mask_at(key, first + at, threshold, kept)
    # then the product, over views, as dropout_forward's (where it vectorises)
    x, out, mask = input_rows(inputs, start, batch, n), layer_units(a_store, layers, i, batch), \
        layer_cache(z_store, layers, i, batch, n)
    for r in range(batch):
        for j in range(n):
            out[r, j] = x[r, j] * mask[r, j]


@inline_jit
def backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
             need_dinputs, accumulate):
    # in the forward pass this was: out = x * mask
    if need_dinputs:
        n = layers[i, N_OUT]
        dx, dout, mask = unchecked_view(dinputs, 0, batch, n), unchecked_view(delta, 0, batch, n), \
            layer_cache(z_store, layers, i, batch, n)
        for r in range(batch):
            for j in range(n):
                dx[r, j] = dout[r, j] * mask[r, j]
    return True


@inline_jit
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@inline_jit
def layer_key(seed, step, layer):
    """The hash of the first three coordinates, the same for every element
    of a layer's mask in a step (so a loop over the elements hashes once)."""
    h = _mix(np.uint64(seed) + _GOLDEN)
    h = _mix(h ^ (np.uint64(step) + _GOLDEN))
    return _mix(h ^ (np.uint64(layer) + _GOLDEN))


@inline_jit
def drop_threshold(p):
    """The element is dropped where its 32 bits are below this: ``p * 2**32`` rounded down."""
    return np.uint64(p * _TWO_32)


@inline_jit
def mask_at(key, element, threshold, kept):
    """The mask's element from the ``layer_key`` of its first three
    coordinates: 0 where the top 32 bits of the element's hash are below
    ``drop_threshold(p)`` (probability ``p``, to 2**-32), else ``kept``, ``1 / (1 - p)``."""
    return 0.0 if (_mix(key ^ (np.uint64(element) + _GOLDEN)) >> np.uint64(32)) < threshold else kept


@inline_jit
def mask_value(seed, step, layer, element, p):
    """The mask's element: 0 (dropped, with probability ``p``) or ``1 / (1 - p)``."""
    return mask_at(layer_key(seed, step, layer), element, drop_threshold(p), 1.0 / (1.0 - p))


@jit
def dropout_forward(out, mask, x, p, seed, step, layer, first_row=0):
    """``out = x * mask`` with the mask of (seed, step, layer), written to ``mask``.

    Parameters
    ----------
    out, mask : (batch, n) arrays, written (``out`` may be ``x`` itself)
    x : (batch, n) array
    p : float in [0, 1), the probability of dropping an element
    seed, step, layer : int >= 0, the mask's key
    first_row : int >= 0, the number of ``x``'s first row within its batch
        (for a part of one: the mask is the whole batch's)

    Arrays of one shape and dtype (ValueError, TypeError); ``p`` outside
    [0, 1) raises ValueError.
    """
    kernel = "dropout_forward"
    check_same_shape(kernel, "out", out, "x", x)
    check_same_shape(kernel, "mask", mask, "x", x)
    check_rate(kernel, p)
    n = x.shape[1]
    key, threshold, kept = layer_key(seed, step, layer), drop_threshold(p), 1.0 / (1.0 - p)
    for r in range(x.shape[0]):
        for j in range(n):
            mask[r, j] = mask_at(key, (first_row + r) * n + j, threshold, kept)
            out[r, j] = x[r, j] * mask[r, j]  # as stored: the backward's factor


@jit
def dropout_backward(dx, dout, mask):
    """Gradient of ``dropout_forward``: ``dx = dout * mask``.

    Parameters
    ----------
    dx : (batch, n) array, written (may be ``dout`` itself)
    dout : (batch, n) array, d(loss)/d(out)
    mask : (batch, n) array, the forward's mask
    """
    kernel = "dropout_backward"
    check_same_shape(kernel, "dout", dout, "mask", mask)
    check_same_shape(kernel, "dx", dx, "mask", mask)
    # in the forward pass this was: out[r, j] = x[r, j] * mask[r, j]
    for r in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            dx[r, j] = dout[r, j] * mask[r, j]


@inline_jit
def check_rate(kernel, p):
    if not (p >= 0.0 and p < 1.0):
        raise ValueError(kernel + ": p must be in [0, 1) (the probability of dropping an element), got " + str(p))
