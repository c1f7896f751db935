"""Layer normalisation over the features (as torch.nn.LayerNorm over the
last dimension), forward and backward side by side:

``out = (x - mean) * rstd * weight + bias``, with ``mean`` and
``rstd = 1 / sqrt(var + eps)`` per row, ``var`` the biased variance.

The statistics of a row are summed in float64 in one pass over it
(``moments``), and kept for the backward.
"""
import math

from kernels.checks import check_dtype, check_same_shape, check_size
from kernels.config import inline_jit, jit


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): ``weight`` and ``bias``
    (n,) each; the row's mean and rstd (the backward recomputes the
    normalised inputs from them and the layer's inputs)."""
    return 2 * n_out, 2


@jit
def layernorm_forward(out, mean, rstd, x, weight, bias, eps):
    """``out = (x - mean) * rstd * weight + bias`` per row.

    Parameters
    ----------
    out : (batch, n) array, written
    mean, rstd : (batch,) float64 arrays, written with each row's mean and
        1 / sqrt(variance + eps)
    x : (batch, n) array
    weight, bias : (n,) arrays
    eps : float > 0

    ``out``, ``x``, ``weight`` and ``bias`` share one dtype (TypeError) and
    their shapes agree (ValueError); ``eps`` must be > 0 (ValueError).
    """
    kernel = "layernorm_forward"
    check_layernorm(kernel, out, x, weight, bias)
    check_size(kernel, "mean", mean, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "rstd", rstd, 0, x.shape[0], "x.shape[0] (batch)")
    if not eps > 0.0:
        raise ValueError("layernorm_forward: eps must be > 0, got " + str(eps))
    for r in range(x.shape[0]):
        forward_row(out, mean, rstd, x, weight, bias, eps, r)


@inline_jit
def forward_row(out, mean, rstd, x, weight, bias, eps, r):
    """Row ``r`` of ``layernorm_forward`` (the CUDA twin runs this very code, a row per thread)."""
    row_mean, variance = moments(x[r])
    mean[r] = row_mean
    rstd[r] = 1.0 / math.sqrt(variance + eps)
    for j in range(x.shape[1]):
        out[r, j] = (float(x[r, j]) - mean[r]) * rstd[r] * weight[j] + bias[j]


@inline_jit
def moments(values):
    """(mean, biased variance) of the 1-D ``values``, summed in float64 in
    one pass, shifted by the first value so that a large common offset
    cancels before squaring (batch normalisation's statistics too)."""
    n = values.shape[0]
    shift = float(values[0])
    total, squares = 0.0, 0.0
    for i in range(n):
        d = float(values[i]) - shift
        total += d
        squares += d * d
    centred_mean = total / n
    return shift + centred_mean, max(squares / n - centred_mean * centred_mean, 0.0)


@jit
def layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd):
    """Gradients of ``layernorm_forward``; ``dweight`` and ``dbias``
    accumulate, ``dx`` is written.

    Parameters
    ----------
    dx : (batch, n) array, written
    dweight, dbias : (n,) arrays, added to
    dout : (batch, n) array, d(loss)/d(out)
    x, weight : the forward's inputs
    mean, rstd : (batch,) float64 arrays, the forward's statistics
    """
    kernel = "layernorm_backward"
    check_layernorm(kernel, dout, x, weight, dweight)
    check_same_shape(kernel, "dx", dx, "x", x)
    check_same_shape(kernel, "dbias", dbias, "weight", weight)
    check_dtype(kernel, "dx", dx, "x", x)
    check_dtype(kernel, "dbias", dbias, "x", x)
    check_size(kernel, "mean", mean, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "rstd", rstd, 0, x.shape[0], "x.shape[0] (batch)")
    for r in range(x.shape[0]):
        backward_row(dx, dout, x, weight, mean, rstd, r)
    for j in range(x.shape[1]):
        backward_column(dweight, dbias, dout, x, mean, rstd, j)


@inline_jit
def backward_row(dx, dout, x, weight, mean, rstd, r):
    """Row ``r`` of ``layernorm_backward``'s ``dx`` (a row per thread on the device)."""
    # in the forward pass this was: out = norm * weight + bias, norm = (x - mean) * rstd
    # so d(norm) = dout * weight, and through the row's statistics
    # dx = rstd * (d(norm) - mean_j(d(norm)) - norm * mean_j(d(norm) * norm))
    n = x.shape[1]
    dnorm_mean, dnorm_norm_mean = 0.0, 0.0
    for j in range(n):
        norm = (float(x[r, j]) - mean[r]) * rstd[r]
        dnorm = float(dout[r, j]) * weight[j]
        dnorm_mean += dnorm
        dnorm_norm_mean += dnorm * norm
    dnorm_mean /= n
    dnorm_norm_mean /= n
    for j in range(n):
        norm = (float(x[r, j]) - mean[r]) * rstd[r]
        dx[r, j] = (float(dout[r, j]) * weight[j] - dnorm_mean - norm * dnorm_norm_mean) * rstd[r]


@inline_jit
def backward_column(dweight, dbias, dout, x, mean, rstd, j):
    """Column ``j`` of ``layernorm_backward``'s ``dweight`` and ``dbias``,
    summed over the rows in order (a column per thread on the device)."""
    # in the forward pass this was: out[r, j] = norm[r, j] * weight[j] + bias[j]
    dw, db = 0.0, 0.0
    for r in range(x.shape[0]):
        dw += float(dout[r, j]) * (float(x[r, j]) - mean[r]) * rstd[r]
        db += float(dout[r, j])
    dweight[j] += dw
    dbias[j] += db


@jit
def check_layernorm(kernel, rows, x, weight, vector):
    """``rows`` and ``x`` (batch, n), ``weight`` and ``vector`` (n,), one dtype."""
    check_same_shape(kernel, "out" if kernel == "layernorm_forward" else "dout", rows, "x", x)
    check_size(kernel, "weight", weight, 0, x.shape[1], "x.shape[1] (n)")
    check_size(kernel, "bias" if kernel == "layernorm_forward" else "dweight", vector, 0, x.shape[1],
               "x.shape[1] (n)")
    check_dtype(kernel, "weight", weight, "x", x)
    check_dtype(kernel, "out" if kernel == "layernorm_forward" else "dout", rows, "x", x)
    check_dtype(kernel, "bias" if kernel == "layernorm_forward" else "dweight", vector, "x", x)
