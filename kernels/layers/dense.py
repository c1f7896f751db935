"""The dense (fully connected) layer and its activation, forward and
backward side by side: ``z = x @ W.T + b``, ``a = f(z)``.

Weights follow torch.nn.Linear: ``W`` is (n_out, n_in). In the network's
flat buffers a dense layer owns ``W`` then ``b`` (``sizes``), and caches its
pre-activations ``z`` and outputs ``a`` (two units per output and sample).

Layers with fewer than ``SMALL_GEMM`` multiply-adds run as plain loops with
the activation applied as each output is produced, so a small network's
step makes no BLAS call and no second pass over its units; the loops sum
in the order and precision of ``kernels.blas``'s own loops, so either way
the numbers are the same. The backward can write the parameter gradients
instead of adding to them (``accumulate=False``), which spares a training
step a pass that zeroes the gradient buffer before every backward.
"""
from kernels.activations import IDENTITY, _activation_backward, _activation_forward, activate
from kernels.blas import SMALL_GEMM, _gemm, all_finite, finite_matrix, overlaps_itself
from kernels.checks import check_dtype, check_size
from kernels.config import inline_jit, jit
from kernels.layers.table import ACTIVATION, BIAS_OFFSET, N_IN, N_OUT, WEIGHT_OFFSET, layer_cache, layer_units
from kernels.views import matrix_view


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample) of a dense layer: ``W`` and
    ``b``; the pre-activations ``z`` (its outputs ``a`` are the network's)."""
    return n_out * n_in + (n_out if bias else 0), n_out


@jit
def is_small(batch, n_in, n_out):
    """Whether a (batch, n_in) -> (batch, n_out) layer runs as plain loops."""
    return batch * n_in * n_out < SMALL_GEMM


@jit
def dense_forward(out, x, W, b, z=None, code=IDENTITY, p1=0.0, p2=0.0):
    """``out = f(x @ W.T + b)``, ``f`` the activation ``code, p1, p2`` (see
    ``kernels.activations``; the identity by default).

    Parameters
    ----------
    out : (batch, n_out) array, written; no two elements may share memory
        (ValueError)
    x : (batch, n_in) array
    W : (n_out, n_in) array
    b : (n_out,) array; None or an empty array for a layer without bias
    z : (batch, n_out) array, written with the pre-activations; None to
        keep only ``out``

    All arrays share one dtype (TypeError); shapes that disagree raise
    ValueError, with nothing written.
    """
    kernel = "dense_forward"
    check_layer_rows(kernel, "out", out, x, W)
    bias = W[0, :0] if b is None else b
    if bias.shape[0] > 0:
        check_size(kernel, "b", bias, 0, W.shape[0], "W.shape[0] (n_out)")
        check_dtype(kernel, "b", bias, "W", W)
    if overlaps_itself(out):
        raise ValueError("dense_forward: out overlaps itself (a stride of 0, or rows that share memory); "
                         "write into an array of its own, e.g. np.empty((batch, n_out))")
    if z is None:
        _dense_forward(out, out, x, W, bias, code, p1, p2)
    else:
        check_layer_rows(kernel, "z", z, x, W)
        _dense_forward(z, out, x, W, bias, code, p1, p2)


@jit
def dense_backward(dx, dW, db, dout, x, W, z=None, out=None, code=IDENTITY, p1=0.0, p2=0.0):
    """Gradients of ``out = f(x @ W.T + b)``: parameter gradients accumulate,
    dx is written.

    Parameters
    ----------
    dx : (batch, n_in) array, written with d(loss)/d(x); None or an empty
        array to skip it
    dW : (n_out, n_in) array, d(loss)/d(W) is added to it; no two elements
        of dW, or of dx, may share memory (ValueError, nothing written)
    db : (n_out,) array, d(loss)/d(b) is added to it; None or an empty array
        for a layer without bias
    dout : (batch, n_out) array, d(loss)/d(out); with an activation other
        than the identity it is overwritten with d(loss)/d(z)
    x : (batch, n_in) array, the forward input
    W : (n_out, n_in) array
    z, out : (batch, n_out) arrays, the forward's pre-activations and
        outputs; needed only with an activation
    code, p1, p2 : the activation

    All arrays share one dtype (TypeError); shapes that disagree raise
    ValueError, with nothing written.
    """
    kernel = "dense_backward"
    check_layer_rows(kernel, "dout", dout, x, W)
    check_size(kernel, "dW", dW, 0, W.shape[0], "W.shape[0] (n_out)")
    check_size(kernel, "dW", dW, 1, W.shape[1], "W.shape[1] (n_in)")
    check_dtype(kernel, "dW", dW, "W", W)
    bias = dW[0, :0] if db is None else db
    if bias.shape[0] > 0:
        check_size(kernel, "db", bias, 0, W.shape[0], "W.shape[0] (n_out)")
        check_dtype(kernel, "db", bias, "W", W)
    inputs = dout[:0, :0] if dx is None else dx
    if inputs.shape[0] > 0:
        check_size(kernel, "dx", inputs, 0, x.shape[0], "x.shape[0] (batch)")
        check_size(kernel, "dx", inputs, 1, W.shape[1], "W.shape[1] (n_in)")
        check_dtype(kernel, "dx", inputs, "W", W)
    if overlaps_itself(dW):
        raise ValueError("dense_backward: dW overlaps itself (a stride of 0, or rows that share memory); "
                         "accumulate into an array of its own, e.g. np.zeros((n_out, n_in))")
    if overlaps_itself(inputs):
        raise ValueError("dense_backward: dx overlaps itself (a stride of 0, or rows that share memory); "
                         "write into an array of its own, e.g. np.empty((batch, n_in))")
    if code != IDENTITY and (z is None or out is None):
        raise ValueError("dense_backward: an activation needs the forward's z and out, got None")
    pre = dout if z is None else z
    post = dout if out is None else out
    if code != IDENTITY:
        check_layer_rows(kernel, "z", pre, x, W)
        check_layer_rows(kernel, "out", post, x, W)
    _dense_backward(inputs, dW, bias, dout, x, W, pre, post, code, p1, p2, True)


@inline_jit
def check_layer_rows(kernel, name, rows, x, W):
    """``x`` fits ``W``, and ``rows`` is (batch, n_out) of their dtype."""
    check_size(kernel, "x", x, 1, W.shape[1], "W.shape[1] (n_in)")
    check_dtype(kernel, "x", x, "W", W)
    check_size(kernel, name, rows, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, name, rows, 1, W.shape[0], "W.shape[0] (n_out)")
    check_dtype(kernel, name, rows, "W", W)


@jit
def _dense_forward(z, a, x, W, b, code, p1, p2):
    # z = x @ W.T + b and a = f(z); b empty without bias, a may be z
    batch, n_out = z.shape
    n_in = x.shape[1]
    has_bias = b.shape[0] > 0
    if not is_small(batch, n_in, n_out):
        if has_bias:
            # element by element: a slice assignment per row costs more
            # than the copy (7 us against 1 for 512 rows of 64)
            for r in range(batch):
                for o in range(n_out):
                    z[r, o] = b[o]
        _gemm(z, x, W, False, True, 1.0, 1.0 if has_bias else 0.0)
        _activation_forward(a, z, code, p1, p2)
        return
    for r in range(batch):
        for o in range(n_out):
            total = 0.0
            for k in range(n_in):
                total += x[r, k] * W[o, k]
            value = total + b[o] if has_bias else total
            z[r, o] = value
            a[r, o] = activate(float(z[r, o]), code, p1, p2)


@jit
def _dense_backward(dx, dW, db, delta, x, W, z, a, code, p1, p2, accumulate):
    # dx written (skipped when it has no rows), dW and db added to (written
    # when not accumulate; db empty without bias), delta d(loss)/d(a) on
    # entry and d(loss)/d(z) on exit. Returns whether every element of dW
    # and db is finite, checked as the product writes dW, so that a training
    # step need not pass over the gradients again to know.
    # in the forward pass this was: z = x @ W.T + b; a = f(z)
    batch, n_out = delta.shape
    n_in = x.shape[1]
    if code != IDENTITY:
        _activation_backward(delta, delta, z, a, code, p1, p2)
    beta = 1.0 if accumulate else 0.0
    if not is_small(batch, n_in, n_out):
        finite = _gemm(dW, delta, x, True, False, 1.0, beta, True)
    else:
        for o in range(n_out):
            for k in range(n_in):
                total = 0.0
                for r in range(batch):
                    total += delta[r, o] * x[r, k]
                dW[o, k] = total + dW[o, k] if accumulate else total
        finite = finite_matrix(dW)
    if db.shape[0] > 0:
        if not accumulate:
            db[:] = 0.0
        for r in range(batch):
            for o in range(n_out):
                db[o] += delta[r, o]
        finite &= all_finite(db)
    if dx.shape[0] == 0:
        return finite
    if not is_small(batch, n_out, n_in):
        _gemm(dx, delta, W, False, False, 1.0, 0.0)
        return finite
    for r in range(batch):
        for k in range(n_in):
            total = 0.0
            for o in range(n_out):
                total += delta[r, o] * W[o, k]
            dx[r, k] = total
    return finite


@jit
def layer_weights(params, layers, i):
    """(W, b) views of dense layer ``i`` in a flat buffer; ``b`` is empty without bias."""
    n_in, n_out = layers[i, N_IN], layers[i, N_OUT]
    start = layers[i, WEIGHT_OFFSET]
    W = matrix_view(params, start, n_out, n_in)
    bias_start = layers[i, BIAS_OFFSET]
    if bias_start < 0:
        return W, params[start:start]
    return W, params[bias_start:bias_start + n_out]


# The layer in the network's loops (kernels.layers.layer_forward and
# layer_backward): its views of the flat buffers, then the kernels above.
@inline_jit
def forward(z_store, a_store, inputs, params, layers, layer_params, i):
    batch = inputs.shape[0]
    W, b = layer_weights(params, layers, i)
    z = layer_cache(z_store, layers, i, batch, layers[i, N_OUT])
    a = layer_units(a_store, layers, i, batch)
    _dense_forward(z, a, inputs, W, b, layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1])


@inline_jit
def backward(dinputs, grads, delta, inputs, params, layers, layer_params, z_store, a_store, i, accumulate):
    batch = inputs.shape[0]
    W, _ = layer_weights(params, layers, i)
    dW, db = layer_weights(grads, layers, i)
    z = layer_cache(z_store, layers, i, batch, layers[i, N_OUT])
    a = layer_units(a_store, layers, i, batch)
    return _dense_backward(dinputs, dW, db, delta, inputs, W, z, a, layers[i, ACTIVATION], layer_params[i, 0],
                           layer_params[i, 1], accumulate)
