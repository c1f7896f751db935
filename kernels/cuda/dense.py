"""Dense layer on the device, forward and backward side by side, with the
layer's activation fused in: the forward pass applies it in the epilogue of
the matrix product, the backward pass multiplies ``dout`` by its derivative
as each tile of ``dout`` is loaded.

Weights follow torch.nn.Linear, as in ``kernels.dense``: ``W`` is (n_out, n_in).

The layer has two schedules, with the same sums in the same order (float64,
k ascending): tiled products, a launch each (``dense_forward``,
``dense_backward``), and row blocks, device functions that the fused network
kernels of ``kernels.cuda.network`` call layer after layer within one launch
(``dense_rows_forward``, ``dense_rows_backward``, ``dense_tile_gradients``).
"""
from numba import cuda, float64

from kernels.activations import IDENTITY
from kernels.network import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET
from kernels.cuda.activations import activate, derivative
from kernels.cuda.config import FUSED_ROWS, THREADS, TILE, block_sum


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


# The row-block schedule. A block holds FUSED_ROWS samples of a layer's
# input (or gradient) in ``held`` (2, FUSED_ROWS, FUSED_WIDTH), shared,
# thread j computing unit j, so the units of a layer meet each other's
# results without a trip through global memory or a launch. Every value the
# tiled schedule rounds to the array's dtype (a, d(loss)/d(a)) is rounded
# here too, by a store to and load from the global buffer it has. Layer
# ``i``'s sizes and offsets come from the device copy of the layer table.


@cuda.jit(device=True)
def dense_rows_forward(held, i, z_store, a_store, x, params, layers, activation_params):
    """Layer ``i`` forward over the block's rows: ``a = f(inputs @ W.T + b)``
    into ``z_store`` and ``a_store`` and ``held[i % 2]``, the inputs ``x``
    (i == 0) or ``held[(i - 1) % 2]``; every thread of the block calls it."""
    unit, first, batch = cuda.threadIdx.x, cuda.blockIdx.x * FUSED_ROWS, x.shape[0]
    n_in, n_out = layers[i, N_IN], layers[i, N_OUT]
    weights, bias, units = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET], batch * layers[i, UNIT_OFFSET]
    code, p1, p2 = layers[i, ACTIVATION], activation_params[i, 0], activation_params[i, 1]
    if unit < n_out:
        for r in range(FUSED_ROWS):
            row = first + r
            if row < batch:
                total = 0.0
                for k in range(n_in):
                    value = float(x[row, k]) if i == 0 else held[(i - 1) % 2, r, k]
                    total += value * float(params[weights + unit * n_in + k])
                if bias >= 0:
                    total += float(params[bias + unit])
                at = units + row * n_out + unit
                z_store[at] = total
                a_store[at] = activate(float(z_store[at]), code, p1, p2)
                held[i % 2, r, unit] = a_store[at]
    cuda.syncthreads()


@cuda.jit(device=True)
def dense_rows_backward(held, parity, i, z_store, rounding, params, layers, activation_params, a_store, batch):
    """Layer ``i`` backward over the block's rows: ``held[parity]`` holds
    d(loss)/d(a), which becomes d(loss)/d(z) (written over ``z_store`` too,
    for ``dense_tile_gradients``), then ``held[1 - parity]`` d(loss)/d(inputs)
    (through ``rounding``), unless ``i`` is the first layer; ``batch`` rows
    in all. Every thread of the block calls it."""
    # in the forward pass this was: a = f(z), z = inputs @ W.T + b
    unit, first = cuda.threadIdx.x, cuda.blockIdx.x * FUSED_ROWS
    n_in, n_out = layers[i, N_IN], layers[i, N_OUT]
    weights, units = layers[i, WEIGHT_OFFSET], batch * layers[i, UNIT_OFFSET]
    code, p1, p2 = layers[i, ACTIVATION], activation_params[i, 0], activation_params[i, 1]
    if unit < n_out:
        for r in range(FUSED_ROWS):
            row = first + r
            if row < batch:
                at = units + row * n_out + unit
                delta = held[parity, r, unit] * derivative(float(z_store[at]), float(a_store[at]), code, p1, p2)
                held[parity, r, unit] = delta
                z_store[at] = delta
    cuda.syncthreads()
    if i > 0 and unit < n_in:
        for r in range(FUSED_ROWS):
            row = first + r
            if row < batch:
                total = 0.0
                for j in range(n_out):
                    total += held[parity, r, j] * float(params[weights + j * n_in + unit])
                rounding[row * n_in + unit] = total
                held[1 - parity, r, unit] = rounding[row * n_in + unit]
    cuda.syncthreads()


@cuda.jit(device=True)
def dense_tile_gradients(grads, tile_delta, tile_input, deltas, a_store, x, layers, i, first_unit, first_input):
    """One TILE x TILE tile of layer ``i``'s [dW | db] = d(loss)/d(z).T @
    [inputs | 1], from unit ``first_unit`` and input ``first_input``, summed
    over the batch in TILE-row slices in row order, as the tiled product
    sums; written, not added: the tiles of a layer cover its gradients once.
    ``deltas`` is the ``z_store`` that ``dense_rows_backward`` wrote;
    ``tile_delta`` and ``tile_input`` (TILE, TILE) are the block's shared
    staging tiles."""
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n_in, n_out, bias, batch = layers[i, N_IN], layers[i, N_OUT], layers[i, BIAS_OFFSET], x.shape[0]
    units = batch * layers[i, UNIT_OFFSET]
    inputs = batch * layers[i - 1, UNIT_OFFSET] if i > 0 else 0
    unit, k = first_unit + ty, first_input + tx
    total = 0.0
    for r0 in range(0, batch, TILE):
        row, value = r0 + tx, 0.0
        if row < batch and first_unit + ty < n_out:
            value = float(deltas[units + row * n_out + first_unit + ty])
        tile_delta[ty, tx] = value
        row, value = r0 + ty, 0.0
        if row < batch and k < n_in:
            value = float(x[row, k]) if i == 0 else float(a_store[inputs + row * n_in + k])
        elif row < batch and k == n_in:
            value = 1.0
        tile_input[ty, tx] = value
        cuda.syncthreads()
        for t in range(TILE):
            total += tile_delta[ty, t] * tile_input[t, tx]
        cuda.syncthreads()
    if unit < n_out and k < n_in:
        grads[layers[i, WEIGHT_OFFSET] + unit * n_in + k] = total
    elif unit < n_out and k == n_in and bias >= 0:
        grads[bias + unit] = total
