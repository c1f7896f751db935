"""The layer table of the layers ``fastbp.MLP`` describes: which kinds of
``kernels.layers``, in which order, with which scalars."""
from kernels.activations import IDENTITY
from kernels.layers import ACTIVATION, DENSE, DROPOUT, LAYERNORM, RESIDUAL_ADD, RESIDUAL_START


def layout(sizes, activations, bias, dropout, norm, eps, residual):
    """(rows of the layer table as ``kernels.layers.layer_table`` takes
    them, rows of its scalars, the ``fastbp.Activation`` of each row, None
    where it has none: a dense layer's, the identity included)."""
    rows, scalars, row_activations = [], [], []

    def add(kind, n_in, n_out, act=None, p1=0.0, has_bias=False):
        applies = act is not None and act.code != IDENTITY
        rows.append((kind, n_in, n_out, act.code if applies else IDENTITY, has_bias))
        scalars.append((act.p1, act.p2) if applies else (p1, 0.0))
        row_activations.append(act)

    *hidden, output = activations
    if not residual:
        for k, act in enumerate(hidden):
            add(DENSE, sizes[k], sizes[k + 1], act, has_bias=bias)
            if norm == "layer":
                add(LAYERNORM, sizes[k + 1], sizes[k + 1], p1=eps, has_bias=True)
            if dropout[k] > 0:
                add(DROPOUT, sizes[k + 1], sizes[k + 1], p1=dropout[k])
    else:
        d = sizes[1]
        add(DENSE, sizes[0], d, has_bias=bias)
        for k, act in enumerate(hidden):
            start = len(rows)
            add(RESIDUAL_START, d, d)
            if norm == "layer":
                add(LAYERNORM, d, d, p1=eps, has_bias=True)
            add(DENSE, d, d, act, has_bias=bias)
            if dropout[k] > 0:
                add(DROPOUT, d, d, p1=dropout[k])
            add(DENSE, d, d, has_bias=bias)
            if dropout[k] > 0:
                add(DROPOUT, d, d, p1=dropout[k])
            # each end names the other
            scalars[start] = (float(len(rows)), 0.0)
            add(RESIDUAL_ADD, d, d, p1=float(start))
        if norm == "layer":
            add(LAYERNORM, d, d, p1=eps, has_bias=True)
        if hidden[-1].code != IDENTITY:
            add(ACTIVATION, d, d, hidden[-1])
    add(DENSE, sizes[-2], sizes[-1], output, has_bias=bias)
    return rows, scalars, row_activations


def per_hidden_layer(name, value, n_hidden):
    """``value`` for each hidden layer: a list of one each, or one for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_hidden:
            raise ValueError(f"{name} must list one {name} per hidden layer ({n_hidden}), got {len(value)}")
        return list(value)
    return [value] * n_hidden
