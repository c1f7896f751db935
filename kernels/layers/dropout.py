"""Dropout (inverted, as torch.nn.Dropout), forward and backward side by
side: in training ``out = x * mask``, each element of ``mask`` ``0`` with
probability ``p`` and ``1 / (1 - p)`` otherwise; in evaluation ``out = x``.

The mask is no stream of random numbers but a function of its element's
coordinates: ``keep(seed, step, layer, element)`` hashes the four integers
(splitmix64's finaliser, applied once per coordinate), so the same step of
the same run draws the same mask whatever the thread count, the device, the
way a batch is split into parts (``first_row`` numbers a part's rows within
its batch) or where a run was stopped and resumed. ``element`` is
``row * n + unit`` over the (batch, n) inputs.
"""
import numpy as np

from kernels.checks import check_same_shape
from kernels.config import inline_jit, jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# 2**-53: the top 53 bits of a hash as a float in [0, 1)
_UNIT = 1.0 / 9007199254740992.0


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): none, and the mask."""
    return 0, n_out


@inline_jit
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@inline_jit
def uniform(seed, step, layer, element):
    """A float in [0, 1) that is a function of the four coordinates alone."""
    h = _mix(np.uint64(seed) + _GOLDEN)
    h = _mix(h ^ (np.uint64(step) + _GOLDEN))
    h = _mix(h ^ (np.uint64(layer) + _GOLDEN))
    h = _mix(h ^ (np.uint64(element) + _GOLDEN))
    return float(h >> np.uint64(11)) * _UNIT


@inline_jit
def mask_value(seed, step, layer, element, p):
    """The mask's element: 0 (dropped, with probability ``p``) or ``1 / (1 - p)``."""
    return 0.0 if uniform(seed, step, layer, element) < p else 1.0 / (1.0 - p)


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
    for r in range(x.shape[0]):
        for j in range(n):
            keep = mask_value(seed, step, layer, (first_row + r) * n + j, p)
            mask[r, j] = keep
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
