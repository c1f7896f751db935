"""The kinds of layer a network is made of, one module each with its
forward and backward side by side (``kernels/layers/dense.py``), and the
one place that knows them all: the table a network is described by, the
sizes of each layer's parameters and cache, and the dispatch of the
network's loops to a layer's kind.

A kind's module holds ``sizes(n_in, n_out, bias) -> (n_params, n_cache)``
and ``forward`` / ``backward`` on the network's flat buffers (see
``layer_forward`` and ``layer_backward`` for what they take). A layer other
than a dense one keeps its width (``n_in == n_out``); its scalars are its
row of ``layer_params``: dropout's (p, seed), layer norm's (eps, unused),
an activation's (p1, p2), a residual connection's ends' (the other end's
index, unused).
"""
import numpy as np

from kernels.config import inline_jit, jit
from kernels.layers import activation, dense, dropout, layernorm, residual
from kernels.layers.table import KIND, N_COLUMNS

DENSE, DROPOUT, LAYERNORM, ACTIVATION, RESIDUAL_START, RESIDUAL_ADD = range(6)
N_KINDS = 6
KIND_NAMES = ("dense", "dropout", "layernorm", "activation", "residual_start", "residual_add")

# the evaluation mode of layer_forward (a step < 0): dropout passes its inputs through
EVALUATION = (-1, 0)


@jit
def sizes(kind, n_in, n_out, bias):
    """(parameters, cached units per sample) of a layer of ``kind``."""
    if kind == DROPOUT:
        return dropout.sizes(n_in, n_out, bias)
    if kind == LAYERNORM:
        return layernorm.sizes(n_in, n_out, bias)
    if kind == ACTIVATION:
        return activation.sizes(n_in, n_out, bias)
    if kind == RESIDUAL_START:
        return residual.start_sizes(n_in, n_out, bias)
    if kind == RESIDUAL_ADD:
        return residual.add_sizes(n_in, n_out, bias)
    return dense.sizes(n_in, n_out, bias)


def _bias_offset(kind, params, n_in, n_out, bias):
    """Where the bias of a layer whose parameters start at ``params`` is (-1: none)."""
    if kind == DENSE:
        return params + n_out * n_in if bias else -1
    return params + n_out if kind == LAYERNORM else -1


def layer_table(rows):
    """The layer table of the layers ``rows``: (kind, n_in, n_out,
    activation code, bias) each, in order; every offset computed here."""
    table, params, units, cache = [], 0, 0, 0
    for kind, n_in, n_out, code, bias in rows:
        n_params, n_cache = sizes(kind, n_in, n_out, bias)
        bias_offset = _bias_offset(kind, params, n_in, n_out, bias)
        table.append((n_in, n_out, params, bias_offset, code, units, kind, cache))
        params, units, cache = params + n_params, units + n_out, cache + n_cache
    return np.array(table, dtype=np.int64).reshape(len(table), N_COLUMNS)


@inline_jit
def layer_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    """Layer ``i``'s forward over ``batch`` rows: from its inputs (a
    (batch, n_in) array, or the rows of a flat buffer from ``start``), its
    outputs into ``a_store`` and what its backward needs into ``z_store``.
    ``mode`` is (step, first_row): training's update number (dropout's
    mask key) and the number of the first row within its minibatch (for a
    part of one), or ``EVALUATION``."""
    kind = layers[i, KIND]
    if kind == DENSE:
        dense.forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)
    elif kind == DROPOUT:
        dropout.forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)
    elif kind == LAYERNORM:
        layernorm.forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)
    elif kind == ACTIVATION:
        activation.forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)
    elif kind == RESIDUAL_START:
        residual.start_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)
    else:
        residual.add_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode)


@inline_jit
def layer_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
                   need_dinputs, accumulate):
    """Layer ``i``'s backward: ``delta``, a flat buffer of (batch, n_out),
    holds d(loss)/d(its outputs) (and is free to be overwritten); parameter
    gradients into ``grads`` (added to, or written when not ``accumulate``),
    d(loss)/d(its inputs) into the flat ``dinputs`` (batch, n_in), when
    ``need_dinputs``. Returns whether the gradients written are finite."""
    kind = layers[i, KIND]
    if kind == DENSE:
        return dense.backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store,
                              i, batch, need_dinputs, accumulate)
    if kind == DROPOUT:
        return dropout.backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store,
                                i, batch, need_dinputs, accumulate)
    if kind == LAYERNORM:
        return layernorm.backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store,
                                  a_store, i, batch, need_dinputs, accumulate)
    if kind == ACTIVATION:
        return activation.backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store,
                                   a_store, i, batch, need_dinputs, accumulate)
    if kind == RESIDUAL_START:
        return residual.start_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store,
                                       a_store, i, batch, need_dinputs, accumulate)
    return residual.add_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store,
                                 a_store, i, batch, need_dinputs, accumulate)
