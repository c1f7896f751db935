"""A whole multi-layer perceptron on the device, forward and backward; twins
of ``kernels.network`` over the same flat-buffer layout and layer table. The
table stays on the host: it drives the launches, one per layer and pass.
"""
import numpy as np
from numba import cuda, float64

from kernels.network import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET
from kernels.cuda.activations import activate, derivative
from kernels.cuda.config import FUSED_ROWS, FUSED_WIDTH, TILE
from kernels.cuda.dense import dense_backward, dense_forward


def layer_weights(params, layers, i):
    """(W, b) views of layer ``i`` in a flat device buffer; ``b`` is empty without bias."""
    n_in, n_out, start, bias_start = (int(v) for v in layers[i, [N_IN, N_OUT, WEIGHT_OFFSET, BIAS_OFFSET]])
    W = params[start:start + n_out * n_in].reshape(n_out, n_in)
    if bias_start < 0:
        return W, params[start:start]
    return W, params[bias_start:bias_start + n_out]


def layer_units(store, layers, i, batch):
    """The (batch, n_out) view of layer ``i`` in a flat device activation buffer."""
    n_out, start = int(layers[i, N_OUT]), batch * int(layers[i, UNIT_OFFSET])
    return store[start:start + batch * n_out].reshape(batch, n_out)


def scratch_view(scratch, parity, batch, width):
    """A (batch, width) view of one of the two rows of the backward scratch."""
    return scratch[parity, :batch * width].reshape(batch, width)


def network_forward(z_store, a_store, x, params, layers, activation_params):
    """Twin of ``kernels.network_forward``: every argument but the host
    ``layers`` and ``activation_params`` on the device."""
    batch = x.shape[0]
    inputs = x
    for i in range(layers.shape[0]):
        W, b = layer_weights(params, layers, i)
        z = layer_units(z_store, layers, i, batch)
        a = layer_units(a_store, layers, i, batch)
        dense_forward(a, inputs, W, b, z, int(layers[i, ACTIVATION]), *activation_params[i])
        inputs = a


def network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, need_dx):
    """Twin of ``kernels.network_backward``; each layer's activation derivative
    is fused into its dense backward, so ``scratch`` row ``parity`` holds
    d(loss)/d(a) of the layer and never d(loss)/d(z)."""
    batch = x.shape[0]
    n_layers = layers.shape[0]
    for i in range(n_layers - 1, -1, -1):
        parity = (n_layers - 1 - i) % 2
        n_in, n_out = int(layers[i, N_IN]), int(layers[i, N_OUT])
        dout = scratch_view(scratch, parity, batch, n_out)
        W, b = layer_weights(params, layers, i)
        dW, db = layer_weights(grads, layers, i)
        inputs = layer_units(a_store, layers, i - 1, batch) if i > 0 else x
        rows = batch if i > 0 or need_dx else 0
        dinputs = scratch_view(scratch, 1 - parity, rows, n_in)
        dense_backward(dinputs, dW, db, dout, inputs, W, layer_units(z_store, layers, i, batch),
                       layer_units(a_store, layers, i, batch), int(layers[i, ACTIVATION]), *activation_params[i])


# The fused path: for networks no wider than FUSED_WIDTH, the forward pass,
# the backward pass and the weight gradients are one launch each, instead of
# one to three per layer. A block takes FUSED_ROWS samples and
# walks every layer, thread j computing unit j, with the layer's input (or
# gradient) held in shared memory, so the units of a layer meet each other's
# results without a trip through global memory or a launch. Sums run in the
# order and precision of the tiled kernels (float64, k ascending), and every
# value the tiled path rounds to the array's dtype (a, d(loss)/d(a)) is
# rounded here too, by a store to and load from the global buffer it has.


def fits_fused(layers):
    """Whether every layer's output is at most FUSED_WIDTH wide."""
    return int(layers[:, N_OUT].max()) <= FUSED_WIDTH


def fused_tables(layers, activation_params):
    """What the fused kernels read on the device: the layer table, the
    activation parameters, and the TILE x TILE tiles of every layer's
    gradient as (layer, first unit, first input), its inputs followed by a
    column of ones for the bias. Made once per epoch."""
    tiles = [(i, unit, k) for i in range(layers.shape[0])
             for unit in range(0, int(layers[i, N_OUT]), TILE)
             for k in range(0, int(layers[i, N_IN]) + (layers[i, BIAS_OFFSET] >= 0), TILE)]
    return tuple(cuda.to_device(np.ascontiguousarray(table))
                 for table in (layers, activation_params, np.array(tiles, dtype=np.int64)))


@cuda.jit
def _fused_forward(z_store, a_store, x, params, layers, activation_params):
    held = cuda.shared.array((2, FUSED_ROWS, FUSED_WIDTH), float64)
    unit, first, batch = cuda.threadIdx.x, cuda.blockIdx.x * FUSED_ROWS, x.shape[0]
    for i in range(layers.shape[0]):
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


@cuda.jit
def _fused_gradients(grads, deltas, a_store, x, layers, tiles):
    """Each block one tile of one layer's [dW | db] = d(loss)/d(z).T @ [inputs | 1],
    summed over the batch in TILE-row slices in row order, as the tiled
    product sums; written, not added: the tiles cover every gradient once."""
    tile_delta = cuda.shared.array((TILE, TILE), float64)
    tile_input = cuda.shared.array((TILE, TILE), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    i, first_unit, first_input = tiles[cuda.blockIdx.x, 0], tiles[cuda.blockIdx.x, 1], tiles[cuda.blockIdx.x, 2]
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


@cuda.jit
def _fused_deltas(z_store, rounding, dprediction, params, layers, activation_params, a_store):
    held = cuda.shared.array((2, FUSED_ROWS, FUSED_WIDTH), float64)
    unit, first, batch = cuda.threadIdx.x, cuda.blockIdx.x * FUSED_ROWS, dprediction.shape[0]
    last = layers.shape[0] - 1
    for r in range(FUSED_ROWS):
        if unit < dprediction.shape[1] and first + r < batch:
            held[0, r, unit] = dprediction[first + r, unit]
    cuda.syncthreads()
    for i in range(last, -1, -1):
        parity = (last - i) % 2
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


def fused_network_forward(z_store, a_store, x, params, tables):
    """``network_forward`` in one launch, for a network that ``fits_fused``;
    ``tables`` from ``fused_tables``."""
    blocks = (x.shape[0] + FUSED_ROWS - 1) // FUSED_ROWS
    _fused_forward[blocks, FUSED_WIDTH](z_store, a_store, x, params, tables[0], tables[1])


def fused_network_backward(grads, scratch, x, params, layers, z_store, a_store, tables):
    """``network_backward`` (without dx) for a network that ``fits_fused``,
    in two launches: one carries d(loss)/d(z) back through every layer into
    ``z_store`` (which it overwrites), one computes every layer's weight and
    bias gradients over the whole batch and writes them into ``grads`` (not
    added: ``grads`` need not be zeroed first). ``scratch`` row 0 holds
    d(loss)/d(prediction), as for ``network_backward``; ``layers`` is the
    host table, ``tables`` from ``fused_tables``."""
    device_layers, device_activation_params, tiles = tables
    batch = x.shape[0]
    dprediction = scratch_view(scratch, 0, batch, int(layers[layers.shape[0] - 1, N_OUT]))
    blocks = (batch + FUSED_ROWS - 1) // FUSED_ROWS
    _fused_deltas[blocks, FUSED_WIDTH](z_store, scratch[1], dprediction, params, device_layers,
                                       device_activation_params, a_store)
    _fused_gradients[tiles.shape[0], (TILE, TILE)](grads, z_store, a_store, x, device_layers, tiles)
