"""Periodic embeddings of numeric features (PLR, Gorishniy et al., "On
Embeddings for Numerical Features in Tabular Deep Learning"), forward and
backward side by side: each feature ``x_i`` becomes

``out_i = relu(W_i @ concat(sin(2 pi c_i x_i), cos(2 pi c_i x_i)) + b_i)``

with its own ``k`` learnable frequencies ``c_i`` and its own linear layer
``W_i`` (d, 2k), ``b_i`` (d,); the (batch, n_features * d) output holds
feature ``i``'s embedding at columns ``i * d ... (i + 1) * d - 1``.

Parameter gradients are summed over the rows in order, a feature at a time
(a feature per thread on the device), so either device gives the same sums.
"""
import math

from kernels.checks import check_dtype, check_size
from kernels.config import inline_jit, jit

_TWO_PI = 2.0 * math.pi


@jit
def sizes(n_features, n_frequencies, d):
    """(parameters, cached units per sample): the frequencies (n_features,
    k), weights (n_features, d, 2k) and biases (n_features, d); the
    pre-activations (n_features * d)."""
    return n_features * (n_frequencies + d * 2 * n_frequencies + d), n_features * d


@jit
def periodic_forward(out, z, x, frequencies, weight, bias):
    """The embeddings of every feature of ``x``.

    Parameters
    ----------
    out, z : (batch, n_features * d) arrays, written with the embeddings and
        their pre-activations (kept for the backward)
    x : (batch, n_features) array
    frequencies : (n_features, k) array
    weight : (n_features, d, 2k) array: columns ``0..k-1`` take the sines,
        ``k..2k-1`` the cosines
    bias : (n_features, d) array

    One dtype (TypeError) and shapes that agree (ValueError).
    """
    check_periodic("periodic_forward", out, z, x, frequencies, weight, bias)
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            forward_feature(out, z, x, frequencies, weight, bias, r, i)


@inline_jit
def forward_feature(out, z, x, frequencies, weight, bias, r, i):
    """Feature ``i`` of row ``r`` of ``periodic_forward``."""
    k, d = frequencies.shape[1], weight.shape[1]
    for e in range(d):
        total = float(bias[i, e])
        for f in range(k):
            phase = _TWO_PI * frequencies[i, f] * x[r, i]
            total += weight[i, e, f] * math.sin(phase) + weight[i, e, k + f] * math.cos(phase)
        z[r, i * d + e] = total
        out[r, i * d + e] = max(total, 0.0)


@jit
def periodic_backward(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z):
    """Gradients of ``periodic_forward``: ``dx`` (batch, n_features) is
    written, the parameter gradients (shaped as the parameters) accumulate;
    ``dout`` (batch, n_features * d) is d(loss)/d(out) and ``z`` the
    forward's pre-activations."""
    check_periodic("periodic_backward", dout, z, x, frequencies, weight, dbias)
    check_size("periodic_backward", "dx", dx, 1, x.shape[1], "x.shape[1] (n_features)")
    check_size("periodic_backward", "dx", dx, 0, x.shape[0], "x.shape[0] (batch)")
    check_size("periodic_backward", "dfrequencies", dfrequencies, 1, frequencies.shape[1], "k")
    check_size("periodic_backward", "dweight", dweight, 2, weight.shape[2], "2k")
    for i in range(x.shape[1]):
        backward_feature(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z, i)


@inline_jit
def backward_feature(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z, i):
    """Feature ``i`` of ``periodic_backward``, over every row in order."""
    k, d = frequencies.shape[1], weight.shape[1]
    for r in range(x.shape[0]):
        # in the forward pass this was: out = relu(z), z = W_i @ [sin(phase), cos(phase)] + b_i,
        # phase = 2 pi c_i x_ri
        dx_ri = 0.0
        for f in range(k):
            phase = _TWO_PI * frequencies[i, f] * x[r, i]
            sine, cosine = math.sin(phase), math.cos(phase)
            dsine, dcosine = 0.0, 0.0
            for e in range(d):
                dz = float(dout[r, i * d + e]) if z[r, i * d + e] > 0.0 else 0.0
                dsine += dz * weight[i, e, f]
                dcosine += dz * weight[i, e, k + f]
                dweight[i, e, f] += dz * sine
                dweight[i, e, k + f] += dz * cosine
            dphase = dsine * cosine - dcosine * sine
            dfrequencies[i, f] += dphase * _TWO_PI * x[r, i]
            dx_ri += dphase * _TWO_PI * frequencies[i, f]
        for e in range(d):
            if z[r, i * d + e] > 0.0:
                dbias[i, e] += dout[r, i * d + e]
        dx[r, i] = dx_ri


@jit
def check_periodic(kernel, rows, z, x, frequencies, weight, bias):
    """The shapes and dtype of ``periodic_forward``'s arguments (``rows`` is
    ``out`` or ``dout``)."""
    n_features, k = x.shape[1], frequencies.shape[1]
    check_size(kernel, "frequencies", frequencies, 0, n_features, "x.shape[1] (n_features)")
    check_size(kernel, "weight", weight, 0, n_features, "x.shape[1] (n_features)")
    check_size(kernel, "weight", weight, 2, 2 * k, "2 * frequencies.shape[1] (2k)")
    d = weight.shape[1]
    check_size(kernel, "bias", bias, 0, n_features, "x.shape[1] (n_features)")
    check_size(kernel, "bias", bias, 1, d, "weight.shape[1] (d)")
    check_size(kernel, "out" if kernel == "periodic_forward" else "dout", rows, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "out" if kernel == "periodic_forward" else "dout", rows, 1, n_features * d, "n_features * d")
    check_size(kernel, "z", z, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "z", z, 1, n_features * d, "n_features * d")
    check_dtype(kernel, "frequencies", frequencies, "x", x)
    check_dtype(kernel, "weight", weight, "x", x)
    check_dtype(kernel, "bias", bias, "x", x)
