"""The ends of a residual connection on the device; twin of
``kernels.layers.residual``, elementwise over (batch, n) arrays."""
from numba import cuda

from kernels.cuda.config import THREADS, blocks_for


@cuda.jit
def _sum(out, a, b, scale_b):
    n = out.shape[1]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r, j = index // n, index % n
        out[r, j] = a[r, j] + b[r, j] * scale_b


@cuda.jit
def _keep_and_pass(kept, out, x):
    n = out.shape[1]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r, j = index // n, index % n
        kept[r, j] = x[r, j]
        out[r, j] = x[r, j]


def start_forward(out, x):
    """``out = x``: the start passes its inputs on."""
    _sum[blocks_for(x.size), THREADS](out, x, x, 0.0)


def add_forward(out, x, skip):
    """``out = x + skip``, ``skip`` the start's outputs."""
    _sum[blocks_for(x.size), THREADS](out, x, skip, 1.0)


def add_backward(dx, around, dout):
    """``dx = dout`` into the branch, and ``around = dout`` kept for the start."""
    _keep_and_pass[blocks_for(dout.size), THREADS](around, dx, dout)


def start_backward(dx, dout, around):
    """``dx = dout + around``: the branch's gradient and the one around it."""
    _sum[blocks_for(dout.size), THREADS](dx, dout, around, 1.0)
