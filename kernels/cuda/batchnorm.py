"""Batch normalisation on the device; twin of ``kernels.layers.batchnorm``,
whose column and row functions it compiles for the device: a thread per
feature in training (its statistics, its running statistics and its
gradients summed over the batch in order, as on the CPU), a thread per row
in evaluation."""
from numba import cuda

from kernels.layers import batchnorm as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin
from kernels.cuda.layernorm import _moments

_forward_column = device_twin(_cpu.forward_column, moments=_moments)
_inference_row = device_twin(_cpu.inference_row)
_backward_column = device_twin(_cpu.backward_column)


@cuda.jit
def _forward(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum):
    for j in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        _forward_column(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum, j)


@cuda.jit
def _inference(out, x, weight, bias, running_mean, running_var, eps):
    for r in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        _inference_row(out, x, weight, bias, running_mean, running_var, eps, r)


@cuda.jit
def _backward(dx, dweight, dbias, dout, x, weight, mean, rstd):
    for j in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        _backward_column(dx, dweight, dbias, dout, x, weight, mean, rstd, j)


def batchnorm_forward(out, mean, rstd, running_mean, running_var, x, weight, bias, eps, momentum):
    """Twin of ``kernels.layers.batchnorm.batchnorm_forward`` (device arrays)."""
    if x.shape[0] < 2:
        raise ValueError(f"batchnorm_forward: training needs more than 1 row per batch to estimate a variance, "
                         f"got {x.shape[0]} (as torch's BatchNorm1d)")
    if not (eps > 0.0 and 0.0 <= momentum <= 1.0):
        raise ValueError(f"batchnorm_forward: eps must be > 0 and momentum in [0, 1], got eps = {eps}, "
                         f"momentum = {momentum}")
    _forward[blocks_for(x.shape[1]), THREADS](out, mean, rstd, running_mean, running_var, x, weight, bias,
                                              float(eps), float(momentum))


def batchnorm_inference(out, x, weight, bias, running_mean, running_var, eps):
    """Twin of ``kernels.layers.batchnorm.batchnorm_inference`` (device arrays)."""
    if not eps > 0.0:
        raise ValueError(f"batchnorm_inference: eps must be > 0, got {eps}")
    _inference[blocks_for(x.shape[0]), THREADS](out, x, weight, bias, running_mean, running_var, float(eps))


def batchnorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd):
    """Twin of ``kernels.layers.batchnorm.batchnorm_backward`` (device arrays)."""
    _backward[blocks_for(x.shape[1]), THREADS](dx, dweight, dbias, dout, x, weight, mean, rstd)
