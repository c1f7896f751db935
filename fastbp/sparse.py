"""A network on sparse inputs (scipy.sparse rows, as a one-hot encoding of
many categories gives them): the first layer runs on the CSR rows
(``kernels.sparse``), so its cost follows the stored values, not the
columns; the layers after it run on the network's dense kernels."""
import numpy as np
import scipy.sparse

import kernels
from kernels.layers import layer_table
from kernels.layers.table import ACTIVATION, BIAS_OFFSET, KIND, N_IN, N_OUT, WEIGHT_OFFSET, layer_units
from kernels.network import buffer_sizes
from kernels.sparse import csr_linear_backward, csr_linear_forward

# rows per kernel call when predicting
_PREDICT_ROWS = 4096


def is_sparse(X):
    return scipy.sparse.issparse(X)


def as_csr(name, X, dtype, n_in=None):
    """``X`` as a CSR array of ``dtype``, its shape and values checked."""
    X = scipy.sparse.csr_array(X, dtype=dtype)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a sparse matrix of at least one row, got shape {X.shape}")
    if n_in is not None and X.shape[1] != n_in:
        raise ValueError(f"{name} must have {n_in} columns (the model's inputs), got {X.shape[1]}")
    if not np.isfinite(X.data).all():
        row = int(np.searchsorted(X.indptr, np.flatnonzero(~np.isfinite(X.data))[0], side="right") - 1)
        raise ValueError(f"{name} holds NaN or infinity in row {row}; impute or drop such values first")
    return X


def row_chunks(X, rows):
    """``X`` (CSR) as a list of CSR blocks of at most ``rows`` rows."""
    return [X[start:start + rows] for start in range(0, X.shape[0], rows)]


class SparseNetwork:
    """``model`` run on CSR rows: ``forward(X)`` then ``backward(X, ...)`` for
    training (one block of rows at a time, the caches kept here), and
    ``predict``. Shares the model's parameters and gradients."""

    def __init__(self, model):
        layers = model._layers
        self.model = model
        self.n_layers = len(layers)
        self.code = int(layers[0, ACTIVATION])
        self.p1, self.p2 = model._activation_params[0]
        self.tail = None
        if self.n_layers > 1:
            offset = layers[1, WEIGHT_OFFSET]
            tail = layer_table([(layers[i, KIND], layers[i, N_IN], layers[i, N_OUT], layers[i, ACTIVATION],
                                 layers[i, BIAS_OFFSET] >= 0) for i in range(1, self.n_layers)])
            _, units, width = buffer_sizes(tail)
            self.tail = (tail, model._params[offset:], model._grads[offset:],
                         np.ascontiguousarray(model._activation_params[1:]), units, width)
        self._rows = 0

    def _buffers(self, rows):
        """The caches of ``rows`` rows (kept for the next call with as many or fewer)."""
        model = self.model
        if rows > self._rows:
            n_first, dtype = model.sizes[1], model.dtype
            self._z = np.empty((rows, n_first), dtype=dtype)
            self._a = np.empty((rows, n_first), dtype=dtype)
            self._transposed = np.empty((model.sizes[0], n_first), dtype=dtype)
            self._output = np.empty((rows, model.sizes[-1]), dtype=dtype)
            if self.tail is not None:
                units, width = self.tail[4], self.tail[5]
                self._tail = (np.empty(rows * units, dtype=dtype), np.empty(rows * units, dtype=dtype),
                              np.empty((2, rows * max(width, n_first)), dtype=dtype))
            self._rows = rows

    def forward(self, X):
        """The outputs (rows, n_out) for the CSR block ``X``, a view into the
        buffers, valid until the next call."""
        rows, (W, b) = X.shape[0], self.model.params[0]
        self._buffers(rows)
        z, a = self._z[:rows], self._a[:rows]
        csr_linear_forward(z, X.data, X.indices, X.indptr, W, b if b is not None else W[0, :0], self._transposed)
        kernels.activation_forward(a, z, self.code, self.p1, self.p2)
        if self.tail is None:
            return a
        layers, params, _, activation_params, _, _ = self.tail
        z_store, a_store, _ = self._tail
        kernels.network_forward(z_store, a_store, a, params, layers, activation_params)
        return layer_units(a_store, layers, len(layers) - 1, rows)

    def output_gradient(self, rows):
        """Where ``backward`` reads d(loss)/d(outputs) (rows, n_out) from."""
        n_out = self.model.sizes[-1]
        if self.tail is None:
            return self._output[:rows]
        return self._tail[2][0, :rows * n_out].reshape(rows, n_out)

    def backward(self, X, accumulate):
        """Parameter gradients into the model's ``grads`` from the last
        ``forward`` of ``X`` and ``output_gradient``; returns whether they
        are finite."""
        rows, n_first = X.shape[0], self.model.sizes[1]
        z, a = self._z[:rows], self._a[:rows]
        finite = True
        if self.tail is None:
            delta = self._output[:rows]
        else:
            layers, params, grads, activation_params, _, _ = self.tail
            z_store, a_store, scratch = self._tail
            finite = kernels.network_backward(grads, scratch, a, params, layers, activation_params, z_store,
                                              a_store, True, accumulate)
            delta = scratch[len(layers) % 2, :rows * n_first].reshape(rows, n_first)
        kernels.activation_backward(delta, delta, z, a, self.code, self.p1, self.p2)
        gW, gb = self.model.grads[0]
        return csr_linear_backward(gW, gb if gb is not None else gW[0, :0], delta, X.data, X.indices, X.indptr,
                                   self._transposed, accumulate) and finite

    def predict(self, X):
        """The outputs for all of the CSR rows ``X``, in blocks (a new
        network's buffers: safe beside training and other threads)."""
        worker = SparseNetwork(self.model)
        out = np.empty((X.shape[0], self.model.sizes[-1]), dtype=self.model.dtype)
        start = 0
        for block in row_chunks(X, _PREDICT_ROWS):
            out[start:start + block.shape[0]] = worker.forward(block)
            start += block.shape[0]
        return out
