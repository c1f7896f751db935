"""A whole multi-layer perceptron on the device, forward and backward; twins
of ``kernels.network`` over the same flat-buffer layout and layer table. The
table stays on the host: it drives the launches, one per layer and pass.
"""
from kernels.network import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET
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
