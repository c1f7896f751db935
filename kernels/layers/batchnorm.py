"""Batch normalisation over the batch (as torch.nn.BatchNorm1d on
(batch, n) inputs), forward and backward side by side.

In training, each feature ``j`` is normalised by the batch's statistics,
``out = (x - mean_j) * rstd_j * weight_j + bias_j`` with the biased
variance, and the running statistics move towards the batch's as torch's
do: ``running = (1 - momentum) * running + momentum * batch``, the running
variance taking the unbiased variance. In evaluation the running
statistics normalise instead. A feature's statistics are summed as a layer
norm's row's are (``kernels.layers.layernorm.moments``).
"""
import math

from kernels.checks import check_dtype, check_same_shape, check_size
from kernels.config import inline_jit, jit
from kernels.layers.layernorm import moments


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): ``weight`` and ``bias`` (n,)
    each; nothing per sample (the batch's mean and rstd, (n,) each, are
    per layer)."""
    return 2 * n_out, 0


@jit
def batchnorm_forward(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum):
    """The training forward: ``out`` normalised by the batch's statistics,
    which are written to ``mean`` and ``rstd`` and folded into the running ones.

    Parameters
    ----------
    out : (batch, n) array, written
    mean, rstd : (n,) float64 arrays, written: each feature's batch mean
        and 1 / sqrt(biased variance + eps)
    running_mean, running_var : (n,) float64 arrays, updated
    x : (batch, n) array, at least two rows (ValueError, as torch)
    weight, bias : (n,) arrays
    eps : float > 0; momentum : float in [0, 1]
    """
    kernel = "batchnorm_forward"
    check_batchnorm(kernel, out, x, weight, bias, running_mean, running_var)
    check_size(kernel, "mean", mean, 0, x.shape[1], "x.shape[1] (n)")
    check_size(kernel, "rstd", rstd, 0, x.shape[1], "x.shape[1] (n)")
    if x.shape[0] < 2:
        raise ValueError("batchnorm_forward: training needs more than 1 row per batch to estimate a variance, "
                         "got " + str(x.shape[0]) + " (as torch's BatchNorm1d)")
    if not (eps > 0.0 and momentum >= 0.0 and momentum <= 1.0):
        raise ValueError("batchnorm_forward: eps must be > 0 and momentum in [0, 1], got eps = " + str(eps)
                         + ", momentum = " + str(momentum))
    for j in range(x.shape[1]):
        forward_column(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum, j)


@inline_jit
def forward_column(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum, j):
    """Feature ``j`` of ``batchnorm_forward`` (a column per thread on the device)."""
    batch = x.shape[0]
    column_mean, variance = moments(x[:, j])
    mean[j] = column_mean
    rstd[j] = 1.0 / math.sqrt(variance + eps)
    running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
    running_var[j] = (1.0 - momentum) * running_var[j] + momentum * variance * batch / (batch - 1)
    for r in range(batch):
        out[r, j] = (float(x[r, j]) - mean[j]) * rstd[j] * weight[j] + bias[j]


@jit
def batchnorm_inference(out, x, weight, bias, running_mean, running_var, eps):
    """The evaluation forward: ``out = (x - running_mean) / sqrt(running_var
    + eps) * weight + bias``; arguments as in ``batchnorm_forward``."""
    kernel = "batchnorm_inference"
    check_batchnorm(kernel, out, x, weight, bias, running_mean, running_var)
    if not eps > 0.0:
        raise ValueError("batchnorm_inference: eps must be > 0, got " + str(eps))
    for r in range(x.shape[0]):
        inference_row(out, x, weight, bias, running_mean, running_var, eps, r)


@inline_jit
def inference_row(out, x, weight, bias, running_mean, running_var, eps, r):
    """Row ``r`` of ``batchnorm_inference`` (a row per thread on the device)."""
    for j in range(x.shape[1]):
        out[r, j] = (float(x[r, j]) - running_mean[j]) / math.sqrt(running_var[j] + eps) * weight[j] + bias[j]


@jit
def batchnorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd):
    """Gradients of the training forward: the arguments of
    ``kernels.layers.layernorm.layernorm_backward`` (``dweight`` and
    ``dbias`` accumulate, ``dx`` is written), with ``mean`` and ``rstd``
    the (n,) batch statistics of each feature."""
    kernel = "batchnorm_backward"
    check_same_shape(kernel, "dout", dout, "x", x)
    check_same_shape(kernel, "dx", dx, "x", x)
    check_vector(kernel, "weight", weight, x)
    check_vector(kernel, "dweight", dweight, x)
    check_vector(kernel, "dbias", dbias, x)
    check_dtype(kernel, "dout", dout, "x", x)
    check_dtype(kernel, "dx", dx, "x", x)
    check_size(kernel, "mean", mean, 0, x.shape[1], "x.shape[1] (n)")
    check_size(kernel, "rstd", rstd, 0, x.shape[1], "x.shape[1] (n)")
    for j in range(x.shape[1]):
        backward_column(dx, dweight, dbias, dout, x, weight, mean, rstd, j)


@inline_jit
def backward_column(dx, dweight, dbias, dout, x, weight, mean, rstd, j):
    """Feature ``j`` of ``batchnorm_backward`` (a column per thread on the device)."""
    # in the forward pass this was: out = norm * weight + bias, norm = (x - mean) * rstd over the batch
    # so dx = rstd * (d(norm) - mean_r(d(norm)) - norm * mean_r(d(norm) * norm)), d(norm) = dout * weight
    batch = x.shape[0]
    dw, db = 0.0, 0.0
    for r in range(batch):
        norm = (float(x[r, j]) - mean[j]) * rstd[j]
        dw += float(dout[r, j]) * norm
        db += float(dout[r, j])
    dweight[j] += dw
    dbias[j] += db
    # mean_r(d(norm)) = weight * db / batch, mean_r(d(norm) * norm) = weight * dw / batch
    for r in range(batch):
        norm = (float(x[r, j]) - mean[j]) * rstd[j]
        dx[r, j] = weight[j] * (float(dout[r, j]) - db / batch - norm * dw / batch) * rstd[j]


@jit
def check_batchnorm(kernel, out, x, weight, bias, running_mean, running_var):
    """``out`` and ``x`` (batch, n), the vectors (n,), the parameters of ``x``'s dtype."""
    check_same_shape(kernel, "out", out, "x", x)
    check_dtype(kernel, "out", out, "x", x)
    check_vector(kernel, "weight", weight, x)
    check_vector(kernel, "bias", bias, x)
    check_size(kernel, "running_mean", running_mean, 0, x.shape[1], "x.shape[1] (n)")
    check_size(kernel, "running_var", running_var, 0, x.shape[1], "x.shape[1] (n)")


@inline_jit
def check_vector(kernel, name, vector, x):
    """``vector`` holds one ``x.dtype`` value per feature of ``x``."""
    check_size(kernel, name, vector, 0, x.shape[1], "x.shape[1] (n)")
    check_dtype(kernel, name, vector, "x", x)
