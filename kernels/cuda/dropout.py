"""Dropout on the device; twin of ``kernels.layers.dropout``, whose mask
function it compiles for the device: the same (seed, step, layer, element)
gives the same mask on either."""
from numba import cuda

from kernels.layers import dropout as _cpu
from kernels.cuda.config import THREADS, blocks_for, device_twin

_mix = device_twin(_cpu._mix)
_layer_key = device_twin(_cpu.layer_key, _mix=_mix)
_drop_threshold = device_twin(_cpu.drop_threshold)
_mask_at = device_twin(_cpu.mask_at, _mix=_mix)
_mask_value = device_twin(_cpu.mask_value, layer_key=_layer_key, drop_threshold=_drop_threshold, mask_at=_mask_at)


@cuda.jit
def _forward(out, mask, x, p, seed, step, layer, first_row):
    n = x.shape[1]
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        r, j = index // n, index % n
        keep = _mask_value(seed, step, layer, (first_row + r) * n + j, p)
        mask[r, j] = keep
        out[r, j] = x[r, j] * mask[r, j]  # as stored: the backward's factor


@cuda.jit
def _backward(dx, dout, mask):
    n = mask.shape[1]
    for index in range(cuda.grid(1), mask.size, cuda.gridsize(1)):
        r, j = index // n, index % n
        dx[r, j] = dout[r, j] * mask[r, j]


def dropout_forward(out, mask, x, p, seed, step, layer, first_row=0):
    """Twin of ``kernels.layers.dropout.dropout_forward`` (device arrays)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_forward: p must be in [0, 1) (the probability of dropping an element), got {p}")
    _forward[blocks_for(x.size), THREADS](out, mask, x, float(p), int(seed), int(step), int(layer), int(first_row))


def dropout_backward(dx, dout, mask):
    """Twin of ``kernels.layers.dropout.dropout_backward`` (device arrays)."""
    _backward[blocks_for(mask.size), THREADS](dx, dout, mask)
