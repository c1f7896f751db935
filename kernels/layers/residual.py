"""The two ends of a residual connection, forward and backward side by
side: ``start`` passes its inputs on and marks them, ``add`` adds them to
its own inputs, ``out = x + start's inputs``, so the layers between are a
residual branch.

Each end's ``layer_params[i, 0]`` is the index of the other. In the
backward, the gradient reaching ``add`` flows both into the branch and,
kept in ``add``'s cache until the backward reaches ``start``, around it:
``start`` adds it to what comes back through the branch.
"""
from kernels.config import inline_jit, jit
from kernels.layers.dense import input_value
from kernels.layers.table import CACHE_OFFSET, N_OUT, UNIT_OFFSET


@jit
def start_sizes(n_in, n_out, bias):
    """(parameters, cached units per sample) of ``start``: none."""
    return 0, 0


@jit
def add_sizes(n_in, n_out, bias):
    """(parameters, cached units per sample) of ``add``: the gradient
    around the branch, for ``start``'s backward."""
    return 0, n_out


@inline_jit
def start_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    n, out_at = layers[i, N_OUT], batch * layers[i, UNIT_OFFSET]
    for r in range(batch):
        for j in range(n):
            a_store[out_at + r * n + j] = input_value(inputs, start, n, r, j)


@inline_jit
def add_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    n, out_at = layers[i, N_OUT], batch * layers[i, UNIT_OFFSET]
    skip_at = batch * layers[int(layer_params[i, 0]), UNIT_OFFSET]
    for r in range(batch):
        for j in range(n):
            a_store[out_at + r * n + j] = input_value(inputs, start, n, r, j) + a_store[skip_at + r * n + j]


@inline_jit
def start_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
                   need_dinputs, accumulate):
    # in the forward pass this was: out = x, read by the branch and by add
    if need_dinputs:
        around_at = batch * layers[int(layer_params[i, 0]), CACHE_OFFSET]
        for k in range(batch * layers[i, N_OUT]):
            dinputs[k] = delta[k] + z_store[around_at + k]
    return True


@inline_jit
def add_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
                 need_dinputs, accumulate):
    # in the forward pass this was: out = x + skip
    around_at = batch * layers[i, CACHE_OFFSET]
    for k in range(batch * layers[i, N_OUT]):
        z_store[around_at + k] = delta[k]
        dinputs[k] = delta[k]
    return True
