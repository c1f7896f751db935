"""An activation as a layer of its own, forward and backward side by side:
``out = f(x)``, for an activation that follows a layer other than a dense
one (a dense layer applies its own as it writes its outputs). It keeps no
cache: its backward reads its inputs and outputs where they are.
"""
from kernels.activations import _activation_backward, _activation_forward
from kernels.config import inline_jit, jit
from kernels.layers.dense import input_rows
from kernels.layers.table import ACTIVATION, N_OUT, layer_units
from kernels.views import unchecked_view


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample): none."""
    return 0, 0


@inline_jit
def forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    _activation_forward(layer_units(a_store, layers, i, batch), input_rows(inputs, start, batch, layers[i, N_OUT]),
                        layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1])


@inline_jit
def backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
             need_dinputs, accumulate):
    # in the forward pass this was: out = f(x)
    if need_dinputs:
        n = layers[i, N_OUT]
        _activation_backward(unchecked_view(dinputs, 0, batch, n), unchecked_view(delta, 0, batch, n),
                             input_rows(inputs, start, batch, n), layer_units(a_store, layers, i, batch),
                             layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1])
    return True
