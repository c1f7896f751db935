"""The columns of the layer table a network is described by, one row per
layer:

``n_in, n_out, weight_offset, bias_offset (-1: none), activation,
unit_offset, kind, cache_offset``

where the offsets index the flat parameter buffer (a kind without weights
or bias leaves them unused), ``activation`` is a code of
``kernels.activations`` applied to the layer's output, ``unit_offset`` is
the sum of ``n_out`` over the layers before (where the layer's outputs
start in ``a_store``, per sample) and ``cache_offset`` the sum of their
caches (where what it keeps for its backward starts in ``z_store``).
``layer_params`` is a (n_layers, 2) float64 array of each layer's
scalars (``p1, p2`` of its activation).
"""
import numpy as np

from kernels.config import jit
from kernels.views import matrix_view

N_IN, N_OUT, WEIGHT_OFFSET, BIAS_OFFSET, ACTIVATION, UNIT_OFFSET, KIND, CACHE_OFFSET = range(8)
N_COLUMNS = 8


@jit
def layer_units(store, layers, i, batch):
    """The (batch, n_out) view of layer ``i``'s outputs in ``a_store`` (or,
    for a dense layer, its pre-activations in ``z_store``)."""
    return matrix_view(store, batch * layers[i, UNIT_OFFSET], batch, layers[i, N_OUT])


@jit
def layer_cache(store, layers, i, batch, width):
    """The (batch, width) view of layer ``i``'s cache in ``z_store``."""
    return matrix_view(store, batch * layers[i, CACHE_OFFSET], batch, width)


@jit
def scratch_view(scratch, parity, batch, width):
    """A (batch, width) view of one of the two rows of the backward scratch."""
    return matrix_view(scratch[parity], np.int64(0), batch, width)
