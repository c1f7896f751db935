"""Categorical embeddings on the device; twin of ``kernels.layers.embedding``,
whose row and column functions it compiles for the device: a thread per row
in the forward, a thread per column in the backward (each vector's gradient
summed over the rows in order, as on the CPU, without atomic adds)."""
from numba import cuda

from kernels.layers import embedding as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin

_forward_row = device_twin(_cpu.forward_row)
_backward_column = device_twin(_cpu.backward_column)


@cuda.jit
def _forward(out, codes, table, offsets):
    for r in range(cuda.grid(1), codes.shape[0], cuda.gridsize(1)):
        _forward_row(out, codes, table, offsets, r)


@cuda.jit
def _backward(dtable, dout, codes, offsets):
    for c in range(cuda.grid(1), codes.shape[1], cuda.gridsize(1)):
        _backward_column(dtable, dout, codes, offsets, c)


def embedding_forward(out, codes, table, offsets):
    """Twin of ``kernels.layers.embedding.embedding_forward`` (device arrays;
    the codes are the caller's to have checked, as the CPU kernel checks them)."""
    _forward[blocks_for(codes.shape[0]), THREADS](out, codes, table, offsets)


def embedding_backward(dtable, dout, codes, offsets):
    """Twin of ``kernels.layers.embedding.embedding_backward`` (device arrays)."""
    _backward[blocks_for(codes.shape[1]), THREADS](dtable, dout, codes, offsets)
