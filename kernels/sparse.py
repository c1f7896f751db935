"""A dense layer on sparse inputs, forward and backward side by side:
``z = X @ W.T + b`` and ``dW = dz.T @ X`` for ``X`` in CSR form (``data``,
``indices``, ``indptr``, as scipy.sparse keeps it).

Each stored value of a row adds ``value * W[:, column]`` to the row's
outputs, so the work is nnz * n_out multiply-adds, not rows * n_in * n_out:
a one-hot input of 10,000 columns with ten ones a row costs ten columns'
work. The kernels read ``W`` through its transpose ``Wt`` (n_in, n_out),
which the caller provides as a buffer: a column of ``W`` is then a
contiguous row, read and accumulated with unit stride.
"""
import numpy as np

from kernels.checks import check_size
from kernels.config import jit


@jit
def _check(kernel, W, name, Wt, data, indices, indptr, n_rows, n_out):
    """The shapes of a layer's ``W`` (or ``dW``) and ``Wt``, and the CSR arrays."""
    n_in = W.shape[1]
    check_size(kernel, name, W, 0, n_out, "n_out")
    check_size(kernel, "Wt", Wt, 0, n_in, name + ".shape[1]")
    check_size(kernel, "Wt", Wt, 1, n_out, "n_out")
    check_size(kernel, "indptr", indptr, 0, n_rows + 1, "rows + 1")
    check_size(kernel, "indices", indices, 0, data.shape[0], "data.shape[0]")
    if indptr[0] != 0 or indptr[n_rows] > data.shape[0]:
        raise ValueError(kernel + ": indptr must start at 0 and end within data")
    for i in range(n_rows):
        if indptr[i + 1] < indptr[i]:
            raise ValueError(kernel + ": indptr must not decrease")
    for k in range(indptr[n_rows]):
        if indices[k] < 0 or indices[k] >= n_in:
            raise ValueError(kernel + ": indices must lie in [0, n_in)")


@jit
def csr_linear_forward(z, data, indices, indptr, W, b, Wt):
    """``z = X @ W.T + b`` for the CSR rows of ``X``.

    Parameters
    ----------
    z : (rows, n_out) array, written
    data, indices, indptr : the CSR arrays of X (rows, n_in)
    W : (n_out, n_in) array; b : (n_out,) array, or an empty one for no bias
    Wt : (n_in, n_out) array, written with W's transpose
    """
    rows, n_out = z.shape
    n_in = W.shape[1]
    _check("csr_linear_forward", W, "W", Wt, data, indices, indptr, rows, n_out)
    if b.shape[0] != 0 and b.shape[0] != n_out:
        raise ValueError("csr_linear_forward: b must have n_out entries, or none for no bias")
    for o in range(n_out):
        for c in range(n_in):
            Wt[c, o] = W[o, c]
    for i in range(rows):
        for o in range(n_out):
            z[i, o] = b[o] if b.shape[0] > 0 else 0.0
        for k in range(indptr[i], indptr[i + 1]):
            value = data[k]
            column = Wt[indices[k]]
            for o in range(n_out):
                z[i, o] += value * column[o]


@jit
def csr_linear_backward(dW, db, dz, data, indices, indptr, dWt, accumulate):
    """The parameter gradients of ``csr_linear_forward``: ``dW = dz.T @ X``
    and ``db = dz.sum(axis=0)``, added to (or written over when not
    ``accumulate``). ``dWt`` (n_in, n_out) is a work buffer. Returns whether
    every gradient written is finite.

    (d(loss)/dX is not computed: the inputs are data.)
    """
    rows, n_out = dz.shape
    n_in = dW.shape[1]
    _check("csr_linear_backward", dW, "dW", dWt, data, indices, indptr, rows, n_out)
    if db.shape[0] != 0 and db.shape[0] != n_out:
        raise ValueError("csr_linear_backward: db must have n_out entries, or none for no bias")
    dWt[...] = 0.0
    bias = np.zeros(n_out)
    for i in range(rows):
        for o in range(n_out):
            bias[o] += dz[i, o]
        for k in range(indptr[i], indptr[i + 1]):
            value = data[k]
            row = dWt[indices[k]]
            for o in range(n_out):
                row[o] += value * dz[i, o]
    finite = True
    for o in range(n_out):
        for c in range(n_in):
            g = dWt[c, o] + (dW[o, c] if accumulate else 0.0)
            dW[o, c] = g
            finite &= np.isfinite(g)
        if db.shape[0] > 0:
            g = bias[o] + (db[o] if accumulate else 0.0)
            db[o] = g
            finite &= np.isfinite(g)
    return finite
