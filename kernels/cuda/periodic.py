"""Periodic (PLR) embeddings on the device; twin of
``kernels.layers.periodic``, whose per-feature functions it compiles for the
device: a thread per (row, feature) in the forward, a thread per feature in
the backward (its gradients summed over the rows in order, as on the CPU)."""
from numba import cuda

from kernels.layers import periodic as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin

_forward_feature = device_twin(_cpu.forward_feature)
_backward_feature = device_twin(_cpu.backward_feature)


@cuda.jit
def _forward(out, z, x, frequencies, weight, bias):
    n_features = x.shape[1]
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        _forward_feature(out, z, x, frequencies, weight, bias, index // n_features, index % n_features)


@cuda.jit
def _backward(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z):
    for i in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        _backward_feature(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z, i)


def periodic_forward(out, z, x, frequencies, weight, bias):
    """Twin of ``kernels.layers.periodic.periodic_forward`` (device arrays)."""
    _forward[blocks_for(x.size), THREADS](out, z, x, frequencies, weight, bias)


def periodic_backward(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z):
    """Twin of ``kernels.layers.periodic.periodic_backward`` (device arrays)."""
    _backward[blocks_for(x.shape[1]), THREADS](dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z)
