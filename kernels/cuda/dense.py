"""Dense layer on the device, forward and backward side by side, with the
layer's activation fused in: the forward pass applies it in the epilogue of
the matrix product, the backward pass multiplies ``dout`` by its derivative
as each tile of ``dout`` is loaded.

Weights follow torch.nn.Linear, as in ``kernels.dense``: ``W`` is (n_out, n_in).
"""
from numba import cuda, float64

from kernels.activations import IDENTITY
from kernels.cuda.activations import activate, derivative
from kernels.cuda.config import THREADS, TILE, block_sum


@cuda.jit
def _product(out, pre, a, b, transpose_a, transpose_b, accumulate, bias, code, p1, p2,
             gate_x, gate_out, gate_code, gate_p1, gate_p2):
    """``out (M, N) = f(op(a) @ op(b) + bias)``, or ``+=`` the product when
    ``accumulate``, in TILE x TILE blocks staged through shared memory.

    op(a) is (M, K): ``a`` or its transpose; op(b) is (K, N) likewise. Each
    element of ``a`` is multiplied by ``derivative(gate_x, gate_out)`` at the
    same index unless ``gate_code`` is IDENTITY. ``pre`` (M, N), when it has
    rows, keeps the value before ``f``; ``bias`` (N,) may be empty.
    """
    tile_a = cuda.shared.array((TILE, TILE), float64)
    tile_b = cuda.shared.array((TILE, TILE), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    M, N = out.shape
    K = a.shape[0] if transpose_a else a.shape[1]
    total = 0.0
    for k0 in range(0, K, TILE):
        # a thread whose row or column falls outside still loads and syncs:
        # the tile is shared by the whole block
        k = k0 + tx
        value = 0.0
        if row < M and k < K:
            i, j = (k, row) if transpose_a else (row, k)
            value = float(a[i, j])
            if gate_code != IDENTITY:
                value *= derivative(float(gate_x[i, j]), float(gate_out[i, j]), gate_code, gate_p1, gate_p2)
        tile_a[ty, tx] = value
        k = k0 + ty
        value = 0.0
        if k < K and col < N:
            value = float(b[col, k]) if transpose_b else float(b[k, col])
        tile_b[ty, tx] = value
        cuda.syncthreads()
        for t in range(TILE):
            total += tile_a[ty, t] * tile_b[t, tx]
        cuda.syncthreads()
    if row < M and col < N:
        if bias.shape[0] > 0:
            total += bias[col]
        if accumulate:
            out[row, col] += total
        elif pre.shape[0] > 0:
            pre[row, col] = total
            # the stored (rounded) value, as the CPU kernels activate it
            out[row, col] = activate(float(pre[row, col]), code, p1, p2)
        else:
            out[row, col] = activate(total, code, p1, p2)


@cuda.jit
def _column_sums(sums, matrix, gate_x, gate_out, gate_code, gate_p1, gate_p2):
    """``sums[j] += sum_i matrix[i, j] * derivative(...)``: one block per column."""
    partial = cuda.shared.array(THREADS, float64)
    column, thread = cuda.blockIdx.x, cuda.threadIdx.x
    total = 0.0
    for i in range(thread, matrix.shape[0], THREADS):
        value = float(matrix[i, column])
        if gate_code != IDENTITY:
            value *= derivative(float(gate_x[i, column]), float(gate_out[i, column]), gate_code, gate_p1, gate_p2)
        total += value
    partial[thread] = total
    total = block_sum(partial)
    if thread == 0:
        sums[column] += total


def _grid(out):
    rows, cols = out.shape
    return ((cols + TILE - 1) // TILE, (rows + TILE - 1) // TILE), (TILE, TILE)


def _empty(array):
    """A zero-length 1-D view of ``array``: an argument a kernel will not read."""
    return array.reshape(array.size)[:0]


def dense_forward(out, x, W, b, z=None, code=IDENTITY, p1=0.0, p2=0.0):
    """``out = f(x @ W.T + b)``; twin of ``kernels.dense_forward`` (``f`` the
    identity by default).

    Parameters
    ----------
    out : (batch, n_out) device array, written
    x : (batch, n_in) device array
    W : (n_out, n_in) device array
    b : (n_out,) device array; None or empty for a layer without bias
    z : (batch, n_out) device array written with ``x @ W.T + b``, what the
        backward pass needs; None when ``f`` is the identity
    code, p1, p2 : the activation ``f`` (see ``kernels.activations``)
    """
    blocks, threads = _grid(out)
    bias = _empty(W) if b is None else b
    pre = out[:0] if z is None else z
    _product[blocks, threads](out, pre, x, W, False, True, False, bias, code, float(p1), float(p2),
                              x, x, IDENTITY, 0.0, 0.0)


def dense_backward(dx, dW, db, dout, x, W, z=None, out=None, code=IDENTITY, p1=0.0, p2=0.0):
    """Gradients of ``out = f(x @ W.T + b)``; parameter gradients accumulate,
    dx is written. Twin of ``kernels.dense_backward`` (``f`` the identity by
    default).

    Parameters
    ----------
    dx : (batch, n_in) device array, written with ``(dout * f'(z)) @ W``;
        None or empty to skip it
    dW : (n_out, n_in) device array, ``(dout * f'(z)).T @ x`` is added to it
    db : (n_out,) device array, the column sums of ``dout * f'(z)`` are added
        to it; None or empty for a layer without bias
    dout : (batch, n_out) device array, gradient of the loss w.r.t. ``out``
    x : (batch, n_in) device array, the forward input
    W : (n_out, n_in) device array
    z, out : (batch, n_out) device arrays the forward pass wrote; None when
        ``f`` is the identity
    code, p1, p2 : the activation ``f``
    """
    # in the forward pass this was: out = f(z), z = x @ W.T + b
    if code == IDENTITY:
        z = out = dout  # not read
    p1, p2 = float(p1), float(p2)
    nothing = _empty(W)
    blocks, threads = _grid(dW)
    _product[blocks, threads](dW, dW[:0], dout, x, True, False, True, nothing, IDENTITY, 0.0, 0.0,
                              z, out, code, p1, p2)
    if db is not None and db.shape[0] > 0:
        _column_sums[db.shape[0], THREADS](db, dout, z, out, code, p1, p2)
    if dx is not None and dx.shape[0] > 0:
        blocks, threads = _grid(dx)
        _product[blocks, threads](dx, dx[:0], dout, W, False, False, False, nothing, IDENTITY, 0.0, 0.0,
                                  z, out, code, p1, p2)


def column_sums(sums, matrix):
    """``sums += matrix.sum(axis=0)`` as a block reduction per column.

    Parameters
    ----------
    sums : (n,) device array, added to
    matrix : (rows, n) device array
    """
    _column_sums[matrix.shape[1], THREADS](sums, matrix, matrix, matrix, IDENTITY, 0.0, 0.0)
