"""The bundles a training epoch and its step take: named tuples of the
buffers and scalars that travel together, as llm.c's structs of pointers do.

They are tuples, so a compiled function takes them as it takes arrays; the
fields are documented here once.
"""
from collections import namedtuple

import numpy as np

# the default of the optional fields: no weights (never written)
_NONE = np.empty(0)

# params, grads : (n_params,) arrays, the flat parameter and gradient buffers
# layers, layer_params : the layer table (see kernels.network)
Network = namedtuple("Network", ["params", "grads", "layers", "layer_params"])

# code : kernels.SGD, ADAM or RMSPROP
# hyper : float64 array of its scalar arguments (see kernels.optimizers)
# state : (k, n_params) array, its buffers (kernels.optimizers.state_rows)
Optimizer = namedtuple("Optimizer", ["code", "hyper", "state"])

# code, param : as in kernels.losses.loss_value_and_grad
# mean : bool, the loss is the batch mean (else the sum): with weights, the
#     weighted mean (kernels.losses.batch_weight is its divisor)
# class_weights : (n_classes,) float64 array, cross-entropy's weight per
#     class (torch's CrossEntropyLoss(weight=)); empty for none
Loss = namedtuple("Loss", ["code", "param", "mean", "class_weights"], defaults=(_NONE,))

# X : (n, n_in) array
# targets : (n, n_out) array for the pointwise losses, else (0, 0)
# labels : (n,) int64 array for cross-entropy, else (0,)
# order : (m,) int64 array, the rows of X to train on, in order
# weights : (n,) float64 array, each row's weight (> 0); empty for none
Data = namedtuple("Data", ["X", "targets", "labels", "order", "weights"], defaults=(_NONE,))

# batch_x : (>= batch * n_in,) gather buffer
# batch_targets : (>= batch * n_out,) gather buffer (empty without targets)
# batch_labels : (>= batch,) int64 gather buffer (empty without labels)
# z_store, a_store : (>= batch * total_units,) activation buffers
# scratch : (2, >= batch * max_width) backward scratch
# (sizes from kernels.network.buffer_sizes)
# batch_weights : (>= batch,) float64 gather buffer (empty without weights)
Work = namedtuple("Work", ["batch_x", "batch_targets", "batch_labels", "z_store", "a_store", "scratch",
                           "batch_weights"], defaults=(_NONE,))
