"""Elementwise activations on the device, forward and backward side by side.

The scalar functions are the CPU ones, ``kernels.activations.activate`` and
``derivative``, compiled for the device from their Python source: one
definition of every formula serves both targets. Their globals are rebound so
that the helpers they call (``_sigmoid``) are device functions too.
"""
from numba import cuda

from kernels import activations as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin

sigmoid = device_twin(_cpu._sigmoid)
activate = device_twin(_cpu.activate, _sigmoid=sigmoid)
derivative = device_twin(_cpu.derivative, _sigmoid=sigmoid)


@cuda.jit
def _forward(out, x, code, p1, p2):
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i, j = index // x.shape[1], index % x.shape[1]
        out[i, j] = activate(float(x[i, j]), code, p1, p2)


@cuda.jit
def _backward(dx, dout, x, out, code, p1, p2):
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i, j = index // x.shape[1], index % x.shape[1]
        dx[i, j] = dout[i, j] * derivative(float(x[i, j]), float(out[i, j]), code, p1, p2)


def activation_forward(out, x, code, p1, p2):
    """``out = f(x)`` elementwise; twin of ``kernels.activation_forward``.

    Parameters
    ----------
    out : (batch, n) device array, written; may be ``x`` itself
    x : (batch, n) device array
    code : int, an activation code of ``kernels.activations``
    p1, p2 : float, the activation's parameters
    """
    _forward[blocks_for(x.size), THREADS](out, x, code, float(p1), float(p2))


def activation_backward(dx, dout, x, out, code, p1, p2):
    """``dx = dout * f'(x)`` elementwise; twin of ``kernels.activation_backward``.

    Parameters
    ----------
    dx : (batch, n) device array, written; may be ``dout`` itself
    dout : (batch, n) device array, gradient w.r.t. the activation output
    x, out : (batch, n) device arrays, the forward input and output
    code, p1, p2 : as in ``activation_forward``
    """
    # in the forward pass this was: out = f(x)
    _backward[blocks_for(x.size), THREADS](dx, dout, x, out, code, float(p1), float(p2))
