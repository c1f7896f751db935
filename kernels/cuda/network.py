"""A whole multi-layer perceptron on the device, forward and backward; twins
of ``kernels.network`` over the same flat-buffer layout and layer table. The
table stays on the host: it drives the launches, one per layer and pass.
"""
import numpy as np
from numba import cuda, float64

from kernels.layers import ACTIVATION as ACTIVATION_KIND, DENSE, DROPOUT, EVALUATION, LAYERNORM, RESIDUAL_ADD, \
    RESIDUAL_START
from kernels.layers.table import CACHE_OFFSET, KIND
from kernels.network import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET
from kernels.cuda.activations import activation_backward, activation_forward
from kernels.cuda.config import FUSED_ROWS, FUSED_WIDTH, TILE
from kernels.cuda.dropout import dropout_backward, dropout_forward
from kernels.cuda.layernorm import layernorm_backward, layernorm_forward
from kernels.cuda.residual import add_backward, add_forward, start_backward, start_forward
from kernels.cuda.dense import (
    dense_backward, dense_forward, dense_rows_backward, dense_rows_forward, dense_tile_gradients,
)


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


def layer_cache(store, layers, i, batch, width):
    """The (batch, width) view of layer ``i``'s cache in a flat device buffer."""
    start = batch * int(layers[i, CACHE_OFFSET])
    return store[start:start + batch * width].reshape(batch, width)


def _norm_views(store, params, layers, i, batch):
    # a layer norm's (mean, rstd) in its cache and (weight, bias) in params
    n, start = int(layers[i, N_OUT]), batch * int(layers[i, CACHE_OFFSET])
    w, b = int(layers[i, WEIGHT_OFFSET]), int(layers[i, BIAS_OFFSET])
    return store[start:start + batch], store[start + batch:start + 2 * batch], params[w:w + n], params[b:b + n]


def network_forward(z_store, a_store, x, params, layers, activation_params, mode=EVALUATION):
    """Twin of ``kernels.network_forward``: every argument but the host
    ``layers``, ``activation_params`` and ``mode`` on the device; each
    layer by its kind."""
    batch = x.shape[0]
    step, first_row = mode
    for i in range(layers.shape[0]):
        kind, n_out, code = int(layers[i, KIND]), int(layers[i, N_OUT]), int(layers[i, ACTIVATION])
        p1, p2 = activation_params[i]
        inputs = x if i == 0 else layer_units(a_store, layers, i - 1, batch)
        a = layer_units(a_store, layers, i, batch)
        if kind == DENSE:
            W, b = layer_weights(params, layers, i)
            dense_forward(a, inputs, W, b, layer_cache(z_store, layers, i, batch, n_out), code, p1, p2)
        elif kind == DROPOUT:
            # in evaluation, a rate of 0: a mask of ones
            training = step >= 0 and p1 > 0.0
            dropout_forward(a, layer_cache(z_store, layers, i, batch, n_out), inputs, p1 if training else 0.0,
                            int(p2), max(step, 0), i, first_row)
        elif kind == LAYERNORM:
            mean, rstd, weight, bias = _norm_views(z_store, params, layers, i, batch)
            layernorm_forward(a, mean, rstd, inputs, weight, bias, p1)
        elif kind == ACTIVATION_KIND:
            activation_forward(a, inputs, code, p1, p2)
        elif kind == RESIDUAL_START:
            start_forward(a, inputs)
        else:
            add_forward(a, inputs, layer_units(a_store, layers, int(p1), batch))


def network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, need_dx):
    """Twin of ``kernels.network_backward`` (accumulating into ``grads``);
    a dense layer's activation derivative is fused into its backward, so
    ``scratch`` row ``parity`` holds d(loss)/d(a) of the layer and never
    d(loss)/d(z)."""
    batch = x.shape[0]
    n_layers = layers.shape[0]
    for i in range(n_layers - 1, -1, -1):
        parity = (n_layers - 1 - i) % 2
        kind, n_in, n_out = int(layers[i, KIND]), int(layers[i, N_IN]), int(layers[i, N_OUT])
        code, (p1, p2) = int(layers[i, ACTIVATION]), activation_params[i]
        dout = scratch_view(scratch, parity, batch, n_out)
        inputs = layer_units(a_store, layers, i - 1, batch) if i > 0 else x
        # the other kinds write dx whether or not it is needed: the scratch has the room
        dinputs = scratch_view(scratch, 1 - parity, batch if i > 0 or need_dx or kind != DENSE else 0, n_in)
        if kind == DENSE:
            W, b = layer_weights(params, layers, i)
            dW, db = layer_weights(grads, layers, i)
            dense_backward(dinputs, dW, db, dout, inputs, W, layer_cache(z_store, layers, i, batch, n_out),
                           layer_units(a_store, layers, i, batch), code, p1, p2)
        elif kind == DROPOUT:
            dropout_backward(dinputs, dout, layer_cache(z_store, layers, i, batch, n_out))
        elif kind == LAYERNORM:
            mean, rstd, weight, _ = _norm_views(z_store, params, layers, i, batch)
            _, _, dweight, dbias = _norm_views(z_store, grads, layers, i, batch)
            layernorm_backward(dinputs, dweight, dbias, dout, inputs, weight, mean, rstd)
        elif kind == ACTIVATION_KIND:
            activation_backward(dinputs, dout, inputs, layer_units(a_store, layers, i, batch), code, p1, p2)
        elif kind == RESIDUAL_ADD:
            add_backward(dinputs, layer_cache(z_store, layers, i, batch, n_out), dout)
        else:
            start_backward(dinputs, dout, layer_cache(z_store, layers, int(p1), batch, n_out))


# The fused path: for networks no wider than FUSED_WIDTH, the forward pass,
# the backward pass and the weight gradients are one launch each, instead of
# one to three per layer. A block takes FUSED_ROWS samples and walks every
# layer, each layer the row-block schedule of kernels.cuda.dense (the same
# dense layer as the tiled launches, computed a block of rows at a time).


def fits_fused(layers):
    """Whether every layer is dense, its output at most FUSED_WIDTH wide."""
    return bool((layers[:, KIND] == DENSE).all()) and int(layers[:, N_OUT].max()) <= FUSED_WIDTH


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
    for i in range(layers.shape[0]):
        dense_rows_forward(held, i, z_store, a_store, x, params, layers, activation_params)


@cuda.jit
def _fused_gradients(grads, deltas, a_store, x, layers, tiles):
    tile_delta = cuda.shared.array((TILE, TILE), float64)
    tile_input = cuda.shared.array((TILE, TILE), float64)
    tile = cuda.blockIdx.x
    dense_tile_gradients(grads, tile_delta, tile_input, deltas, a_store, x, layers, tiles[tile, 0], tiles[tile, 1],
                         tiles[tile, 2])


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
        dense_rows_backward(held, (last - i) % 2, i, z_store, rounding, params, layers, activation_params, a_store,
                            batch)


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
