"""A whole multi-layer perceptron on the device, forward and backward; twins
of ``kernels.network`` over the same flat-buffer layout and layer table. The
table stays on the host: it drives the launches, one per layer and pass.
"""
from numba import cuda, float64

from kernels.network import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET
from kernels.cuda.activations import activate, derivative
from kernels.cuda.config import FUSED_ROWS, FUSED_WIDTH
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


# The fused path: for networks no wider than FUSED_WIDTH, each pass is one
# launch instead of several per layer. A block takes FUSED_ROWS samples and
# walks every layer, thread j computing unit j, with the layer's input (or
# gradient) held in shared memory, so the units of a layer meet each other's
# results without a trip through global memory or a launch. Sums run in the
# order and precision of the tiled kernels (float64, k ascending), and every
# value the tiled path rounds to the array's dtype (a, d(loss)/d(a)) is
# rounded here too, by a store to and load from the global buffer it has.


def fits_fused(layers):
    """Whether every layer's output is at most FUSED_WIDTH wide."""
    return int(layers[:, N_OUT].max()) <= FUSED_WIDTH


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


def fused_network_forward(z_store, a_store, x, params, layers, activation_params, device_layers,
                          device_activation_params):
    """``network_forward`` in one launch, for a network that ``fits_fused``;
    ``device_layers`` and ``device_activation_params`` are device copies of
    the host tables."""
    blocks = (x.shape[0] + FUSED_ROWS - 1) // FUSED_ROWS
    _fused_forward[blocks, FUSED_WIDTH](z_store, a_store, x, params, device_layers, device_activation_params)


def fused_network_backward(grads, scratch, x, params, layers, activation_params, z_store, a_store, device_layers,
                           device_activation_params):
    """``network_backward`` (without dx) for a network that ``fits_fused``:
    one launch carries d(loss)/d(z) back through every layer into
    ``z_store`` (which it overwrites), then each layer's weight and bias
    gradients are one product and one column sum over the whole batch.
    ``scratch`` row 0 holds d(loss)/d(prediction), as for ``network_backward``."""
    batch = x.shape[0]
    last = layers.shape[0] - 1
    dprediction = scratch_view(scratch, 0, batch, int(layers[last, N_OUT]))
    blocks = (batch + FUSED_ROWS - 1) // FUSED_ROWS
    _fused_deltas[blocks, FUSED_WIDTH](z_store, scratch[1], dprediction, params, device_layers,
                                       device_activation_params, a_store)
    for i in range(last + 1):
        dW, db = layer_weights(grads, layers, i)
        inputs = layer_units(a_store, layers, i - 1, batch) if i > 0 else x
        dense_backward(None, dW, db, layer_units(z_store, layers, i, batch), inputs, dW)
