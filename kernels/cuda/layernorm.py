"""Layer normalisation on the device; twin of ``kernels.layers.layernorm``,
whose row and column functions it compiles for the device: a thread per row
for the forward and ``dx``, a thread per column for ``dweight`` and
``dbias`` (each summed over the rows in order, as on the CPU)."""
from numba import cuda

from kernels.layers import layernorm as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin

_moments = device_twin(_cpu.moments)
_forward_row = device_twin(_cpu.forward_row, moments=_moments)
_backward_row = device_twin(_cpu.backward_row)
_backward_column = device_twin(_cpu.backward_column)


@cuda.jit
def _forward(out, mean, rstd, x, weight, bias, eps):
    for r in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        _forward_row(out, mean, rstd, x, weight, bias, eps, r)


@cuda.jit
def _backward_dx(dx, dout, x, weight, mean, rstd):
    for r in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        _backward_row(dx, dout, x, weight, mean, rstd, r)


@cuda.jit
def _backward_parameters(dweight, dbias, dout, x, mean, rstd):
    for j in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        _backward_column(dweight, dbias, dout, x, mean, rstd, j)


def layernorm_forward(out, mean, rstd, x, weight, bias, eps):
    """Twin of ``kernels.layers.layernorm.layernorm_forward`` (device arrays)."""
    if not eps > 0.0:
        raise ValueError(f"layernorm_forward: eps must be > 0, got {eps}")
    _forward[blocks_for(x.shape[0]), THREADS](out, mean, rstd, x, weight, bias, float(eps))


def layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd):
    """Twin of ``kernels.layers.layernorm.layernorm_backward`` (device arrays)."""
    _backward_dx[blocks_for(x.shape[0]), THREADS](dx, dout, x, weight, mean, rstd)
    _backward_parameters[blocks_for(x.shape[1]), THREADS](dweight, dbias, dout, x, mean, rstd)
