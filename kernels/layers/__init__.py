"""The kinds of layer a network is made of, one module each with its
forward and backward side by side (``kernels/layers/dense.py``), and the
one place that knows them all: the table a network is described by, the
sizes of each layer's parameters and cache, and the dispatch of the
network's loops to a layer's kind.

A kind's module holds ``sizes(n_in, n_out, bias) -> (n_params, n_cache)``
and ``forward`` / ``backward`` on the network's flat buffers (see
``layer_forward`` and ``layer_backward`` for what they take).
"""
import numpy as np

from kernels.config import inline_jit, jit
from kernels.layers import dense
from kernels.layers.table import N_COLUMNS

DENSE = 0
N_KINDS = 1

@jit
def sizes(kind, n_in, n_out, bias):
    """(parameters, cached units per sample) of a layer of ``kind``."""
    return dense.sizes(n_in, n_out, bias)


def layer_table(rows):
    """The layer table of the layers ``rows``: (kind, n_in, n_out,
    activation code, bias) each, in order; every offset computed here."""
    table, params, units, cache = [], 0, 0, 0
    for kind, n_in, n_out, activation, bias in rows:
        n_params, n_cache = sizes(kind, n_in, n_out, bias)
        bias_offset = params + n_out * n_in if bias else -1
        table.append((n_in, n_out, params, bias_offset, activation, units, kind, cache))
        params, units, cache = params + n_params, units + n_out, cache + n_cache
    return np.array(table, dtype=np.int64).reshape(len(table), N_COLUMNS)


@inline_jit
def layer_forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch):
    """Layer ``i``'s forward over ``batch`` rows: from its inputs (a
    (batch, n_in) array, or the rows of a flat buffer from ``start``), its
    outputs into ``a_store`` and what its backward needs into ``z_store``."""
    dense.forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch)


@inline_jit
def layer_backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
                   need_dinputs, accumulate):
    """Layer ``i``'s backward: ``delta``, a flat buffer of (batch, n_out),
    holds d(loss)/d(its outputs) (and is free to be overwritten); parameter
    gradients into ``grads`` (added to, or written when not ``accumulate``),
    d(loss)/d(its inputs) into the flat ``dinputs`` (batch, n_in), when
    ``need_dinputs``. Returns whether the gradients written are finite."""
    return dense.backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i,
                          batch, need_dinputs, accumulate)
