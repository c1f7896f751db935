"""Embeddings of categorical columns (as a torch.nn.Embedding per column),
forward and backward side by side: column ``c``'s category ``k`` is the
learned vector ``table[offsets[c] + k]`` of width ``d``, and a row's
embeddings sit side by side, column ``c`` at columns ``c * d ... (c + 1) * d - 1``
of the output, in place of a one-hot block of ``n_categories_c`` columns.

The gradient of a vector is the sum of ``dout`` over the rows that chose it,
added in row order a column at a time (a column per thread on the device,
which needs no atomic adds and gives the CPU's sums).
"""
from kernels.checks import check_dtype, check_size
from kernels.config import inline_jit, jit


@jit
def sizes(n_categories_total, d):
    """(parameters, cached units per sample): the table (total categories,
    d); nothing (the backward reads the codes)."""
    return n_categories_total * d, 0


@jit
def embedding_forward(out, codes, table, offsets):
    """``out[r, c*d:(c+1)*d] = table[offsets[c] + codes[r, c]]``.

    Parameters
    ----------
    out : (batch, n_columns * d) array, written
    codes : (batch, n_columns) int64 array, column ``c``'s codes in
        ``[0, offsets[c + 1] - offsets[c])``
    table : (offsets[-1], d) array, every column's vectors, column by column
    offsets : (n_columns + 1,) int64 array, ascending from 0

    A code out of its column's range raises ValueError naming it, with
    nothing written; shapes that disagree raise ValueError.
    """
    check_embedding("embedding_forward", "out", out, codes, table, offsets)
    for r in range(codes.shape[0]):
        forward_row(out, codes, table, offsets, r)


@inline_jit
def forward_row(out, codes, table, offsets, r):
    """Row ``r`` of ``embedding_forward``."""
    d = table.shape[1]
    for c in range(codes.shape[1]):
        vector = offsets[c] + codes[r, c]
        for e in range(d):
            out[r, c * d + e] = table[vector, e]


@jit
def embedding_backward(dtable, dout, codes, offsets):
    """``dtable[offsets[c] + codes[r, c]] += dout[r, c*d:(c+1)*d]`` over
    every row and column (arguments as in ``embedding_forward``; ``dtable``
    shaped as ``table``)."""
    check_embedding("embedding_backward", "dout", dout, codes, dtable, offsets)
    for c in range(codes.shape[1]):
        backward_column(dtable, dout, codes, offsets, c)


@inline_jit
def backward_column(dtable, dout, codes, offsets, c):
    """Column ``c`` of ``embedding_backward``, over the rows in order."""
    # in the forward pass this was: out[r, c*d + e] = table[offsets[c] + codes[r, c], e]
    d = dtable.shape[1]
    for r in range(codes.shape[0]):
        vector = offsets[c] + codes[r, c]
        for e in range(d):
            dtable[vector, e] += dout[r, c * d + e]


@jit
def check_embedding(kernel, name, rows, codes, table, offsets):
    """Shapes, dtypes and codes of ``embedding_forward``'s arguments (``rows``
    is ``out`` or ``dout``, ``table`` the table or its gradient)."""
    n_columns = codes.shape[1]
    check_size(kernel, "offsets", offsets, 0, n_columns + 1, "codes.shape[1] + 1 (n_columns + 1)")
    for c in range(n_columns):
        if offsets[c + 1] <= offsets[c] or offsets[0] != 0:
            raise ValueError(kernel + ": offsets must ascend from 0, one category at least per column, got "
                             + str(offsets[c]) + " then " + str(offsets[c + 1]) + " at column " + str(c))
    check_size(kernel, "table", table, 0, offsets[n_columns], "offsets[-1] (every column's categories)")
    check_size(kernel, name, rows, 0, codes.shape[0], "codes.shape[0] (batch)")
    check_size(kernel, name, rows, 1, n_columns * table.shape[1], "n_columns * d")
    check_dtype(kernel, name, rows, "table", table)
    for c in range(n_columns):
        n_categories = offsets[c + 1] - offsets[c]
        for r in range(codes.shape[0]):
            if codes[r, c] < 0 or codes[r, c] >= n_categories:
                raise ValueError(kernel + ": codes[" + str(r) + ", " + str(c) + "] = " + str(codes[r, c])
                                 + " is outside column " + str(c) + "'s categories [0, " + str(n_categories) + ")")
