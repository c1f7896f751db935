"""Layer normalisation over the features (as torch.nn.LayerNorm over the
last dimension), forward and backward side by side:

``out = (x - mean) * rstd * weight + bias``, with ``mean`` and
``rstd = 1 / sqrt(var + eps)`` per row, ``var`` the biased variance.

The statistics of a row are summed in float64 in one pass over it
(``moments``), and kept for the backward.
"""
import math

from kernels.blas import all_finite
from kernels.checks import check_dtype, check_same_shape, check_size
from kernels.config import inline_jit, jit
from kernels.layers.dense import input_rows
from kernels.layers.table import BIAS_OFFSET, CACHE_OFFSET, N_OUT, WEIGHT_OFFSET, layer_units
from kernels.views import unchecked_view


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): ``weight`` and ``bias``
    (n,) each; the row's mean and rstd (the backward recomputes the
    normalised inputs from them and the layer's inputs)."""
    return 2 * n_out, 2


# The layer in the network's loops (kernels.layers.layer_forward and
# layer_backward): ``weight`` and ``bias`` at its offsets, ``eps`` in
# ``layer_params[i, 0]``, each row's mean then rstd in its cache.
@inline_jit
def _layer_views(store, params, layers, i, batch):
    n, cache_at = layers[i, N_OUT], batch * layers[i, CACHE_OFFSET]
    w, b = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    return (store[cache_at:cache_at + batch], store[cache_at + batch:cache_at + 2 * batch], params[w:w + n],
            params[b:b + n])


@inline_jit
def forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    mean, rstd, weight, bias = _layer_views(z_store, params, layers, i, batch)
    x = input_rows(inputs, start, batch, layers[i, N_OUT])
    out = layer_units(a_store, layers, i, batch)
    for r in range(batch):
        forward_row(out, mean, rstd, x, weight, bias, layer_params[i, 0], r)


@inline_jit
def backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
             need_dinputs, accumulate):
    n = layers[i, N_OUT]
    mean, rstd, weight, _ = _layer_views(z_store, params, layers, i, batch)
    _, _, dweight, dbias = _layer_views(z_store, grads, layers, i, batch)
    x = input_rows(inputs, start, batch, n)
    dout = unchecked_view(delta, 0, batch, n)
    if need_dinputs:
        dx = unchecked_view(dinputs, 0, batch, n)
        for r in range(batch):
            backward_row(dx, dout, x, weight, mean, rstd, r)
    if not accumulate:
        dweight[:] = 0.0
        dbias[:] = 0.0
    parameter_gradients(dweight, dbias, dout, x, mean, rstd)
    return all_finite(dweight) and all_finite(dbias)


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
    # as stored (rounded to the cache's dtype), as the backward reads them
    m, s = float(mean[r]), float(rstd[r])
    for j in range(x.shape[1]):
        out[r, j] = (float(x[r, j]) - m) * s * weight[j] + bias[j]


@inline_jit
def moments(values):
    """(mean, biased variance) of the 1-D ``values``, summed in float64 in
    one pass, shifted by the first value so that a large common offset
    cancels before squaring (batch normalisation's statistics too)."""
    n = values.shape[0]
    shift = float(values[0])
    # four partial sums, added in a fixed order at the end: the adds of one
    # sum wait on each other, four of them overlap
    t0, t1, t2, t3, s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    body = n - n % 4
    for i in range(0, body, 4):
        d0, d1 = float(values[i]) - shift, float(values[i + 1]) - shift
        d2, d3 = float(values[i + 2]) - shift, float(values[i + 3]) - shift
        t0, t1, t2, t3 = t0 + d0, t1 + d1, t2 + d2, t3 + d3
        s0, s1, s2, s3 = s0 + d0 * d0, s1 + d1 * d1, s2 + d2 * d2, s3 + d3 * d3
    for i in range(body, n):
        d = float(values[i]) - shift
        t0 += d
        s0 += d * d
    total, squares = (t0 + t1) + (t2 + t3), (s0 + s1) + (s2 + s3)
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
    parameter_gradients(dweight, dbias, dout, x, mean, rstd)


@inline_jit
def parameter_gradients(dweight, dbias, dout, x, mean, rstd):
    """Every column of ``backward_column``, four at a time where it can (a
    row's four values read together); each column summed as
    ``backward_column`` sums it, so the numbers are its own."""
    n = x.shape[1]
    body = n - n % 4
    for j in range(0, body, 4):
        w0, w1, w2, w3, b0, b1, b2, b3 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for r in range(x.shape[0]):
            m, s = mean[r], rstd[r]
            g0, g1, g2, g3 = float(dout[r, j]), float(dout[r, j + 1]), float(dout[r, j + 2]), float(dout[r, j + 3])
            w0 += g0 * (float(x[r, j]) - m) * s
            w1 += g1 * (float(x[r, j + 1]) - m) * s
            w2 += g2 * (float(x[r, j + 2]) - m) * s
            w3 += g3 * (float(x[r, j + 3]) - m) * s
            b0, b1, b2, b3 = b0 + g0, b1 + g1, b2 + g2, b3 + g3
        dweight[j] += w0
        dweight[j + 1] += w1
        dweight[j + 2] += w2
        dweight[j + 3] += w3
        dbias[j] += b0
        dbias[j + 1] += b1
        dbias[j + 2] += b2
        dbias[j + 3] += b3
    for j in range(body, n):
        backward_column(dweight, dbias, dout, x, mean, rstd, j)


@inline_jit
def backward_row(dx, dout, x, weight, mean, rstd, r):
    """Row ``r`` of ``layernorm_backward``'s ``dx`` (a row per thread on the device)."""
    # in the forward pass this was: out = norm * weight + bias, norm = (x - mean) * rstd
    # so d(norm) = dout * weight, and through the row's statistics
    # dx = rstd * (d(norm) - mean_j(d(norm)) - norm * mean_j(d(norm) * norm))
    n = x.shape[1]
    m, s = float(mean[r]), float(rstd[r])
    # two sums, each in two partial sums added at the end (as moments does)
    a0, a1, b0, b1 = 0.0, 0.0, 0.0, 0.0
    body = n - n % 2
    for j in range(0, body, 2):
        dnorm0, dnorm1 = float(dout[r, j]) * weight[j], float(dout[r, j + 1]) * weight[j + 1]
        a0, a1 = a0 + dnorm0, a1 + dnorm1
        b0, b1 = b0 + dnorm0 * ((float(x[r, j]) - m) * s), b1 + dnorm1 * ((float(x[r, j + 1]) - m) * s)
    for j in range(body, n):
        dnorm = float(dout[r, j]) * weight[j]
        a0 += dnorm
        b0 += dnorm * ((float(x[r, j]) - m) * s)
    dnorm_mean, dnorm_norm_mean = (a0 + a1) / n, (b0 + b1) / n
    for j in range(n):
        norm = (float(x[r, j]) - m) * s
        dx[r, j] = (float(dout[r, j]) * weight[j] - dnorm_mean - norm * dnorm_norm_mean) * s


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
