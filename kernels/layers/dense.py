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
from numba.extending import overload

from kernels.activations import IDENTITY, _activation_backward, _activation_forward, activate, derivative
from kernels.blas import SMALL_GEMM, _gemm, all_finite, overlaps_itself
from kernels.checks import check_dtype, check_size
from kernels.config import inline_jit, jit
from kernels.layers.table import (
    ACTIVATION, BIAS_OFFSET, CACHE_OFFSET, N_IN, N_OUT, UNIT_OFFSET, WEIGHT_OFFSET, layer_cache, layer_units,
)
from kernels.views import matrix_view, or_empty, unchecked_view


@jit
def sizes(n_in, n_out, bias):
    """(parameters, cached units per sample) of a dense layer: ``W`` and
    ``b``; the pre-activations ``z`` (its outputs ``a`` are the network's)."""
    return n_out * n_in + (n_out if bias else 0), n_out


# inlined: the network's loops ask it of every layer, every step
@inline_jit
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
    bias = or_empty(b, W[0, :0])
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
def dense_backward(dx, dW, db, dout, x, W):
    """Gradients of a dense layer; parameter gradients accumulate, dx is written.

    Parameters
    ----------
    dx : (batch, n_in) array, written with ``dout @ W``; None or an empty
        array to skip it
    dW : (n_out, n_in) array, ``dout.T @ x`` is added to it; no two elements
        of dW, or of dx, may share memory (ValueError, nothing written)
    db : (n_out,) array, the column sums of ``dout`` are added to it; None or
        an empty array for a layer without bias
    dout : (batch, n_out) array, gradient of the loss w.r.t. ``out``
    x : (batch, n_in) array, the forward input
    W : (n_out, n_in) array

    All arrays share one dtype (TypeError); shapes that disagree raise
    ValueError, with nothing written. (An activation's backward is
    ``kernels.activation_backward``, applied to ``dout`` first.)
    """
    kernel = "dense_backward"
    check_layer_rows(kernel, "dout", dout, x, W)
    check_size(kernel, "dW", dW, 0, W.shape[0], "W.shape[0] (n_out)")
    check_size(kernel, "dW", dW, 1, W.shape[1], "W.shape[1] (n_in)")
    check_dtype(kernel, "dW", dW, "W", W)
    bias = or_empty(db, dW[0, :0])
    if bias.shape[0] > 0:
        check_size(kernel, "db", bias, 0, W.shape[0], "W.shape[0] (n_out)")
        check_dtype(kernel, "db", bias, "W", W)
    inputs = or_empty(dx, dW[:0, :0])
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
    _dense_products_backward(inputs, dW, bias, dout, x, W, True)


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
    # z = x @ W.T + b and a = f(z) as matrix products (kernels.blas, whose
    # loops for small sizes sum as _small_forward does); b empty without
    # bias, a may be z
    has_bias = b.shape[0] > 0
    if has_bias:
        # element by element: a slice assignment per row costs more than the
        # copy (7 us against 1 for 512 rows of 64)
        for r in range(z.shape[0]):
            for o in range(z.shape[1]):
                z[r, o] = b[o]
    _gemm(z, x, W, False, True, 1.0, 1.0 if has_bias else 0.0)
    _activation_forward(a, z, code, p1, p2)


@jit
def _dense_backward(dx, dW, db, delta, x, W, z, a, code, p1, p2, accumulate):
    # dx written (skipped when it has no rows), dW and db added to (written
    # when not accumulate; db empty without bias), delta d(loss)/d(a) on
    # entry and d(loss)/d(z) on exit. Returns whether every element of dW
    # and db is finite, checked as the product writes dW, so that a training
    # step need not pass over the gradients again to know.
    # in the forward pass this was: z = x @ W.T + b; a = f(z)
    if code != IDENTITY:
        _activation_backward(delta, delta, z, a, code, p1, p2)
    return _dense_products_backward(dx, dW, db, delta, x, W, accumulate)


@jit
def _dense_products_backward(dx, dW, db, dz, x, W, accumulate):
    # the products of the backward, from d(loss)/d(z)
    finite = _gemm(dW, dz, x, True, False, 1.0, 1.0 if accumulate else 0.0, True)
    if db.shape[0] > 0:
        if not accumulate:
            db[:] = 0.0
        for r in range(dz.shape[0]):
            for o in range(dz.shape[1]):
                db[o] += dz[r, o]
        finite &= all_finite(db)
    if dx.shape[0] > 0:
        _gemm(dx, dz, W, False, False, 1.0, 0.0)
    return finite


def input_value(inputs, start, n_in, r, k):
    """Input ``k`` of row ``r``: ``inputs[r, k]`` of a (batch, n_in) array,
    or ``inputs[start + r * n_in + k]`` of a flat buffer."""


@overload(input_value, inline="always")
def _input_value(inputs, start, n_in, r, k):
    if inputs.ndim == 2:
        return lambda inputs, start, n_in, r, k: inputs[r, k]
    return lambda inputs, start, n_in, r, k: inputs[start + r * n_in + k]


def input_rows(inputs, start, batch, n_in):
    """The (batch, n_in) view of a layer's inputs: the array itself, or the
    stretch of a flat buffer from ``start``."""


@overload(input_rows, inline="always")
def _input_rows(inputs, start, batch, n_in):
    if inputs.ndim == 2:
        return lambda inputs, start, batch, n_in: inputs
    return lambda inputs, start, batch, n_in: unchecked_view(inputs, start, batch, n_in)


# The layer below SMALL_GEMM multiply-adds: plain loops over the flat
# buffers, at offsets (z_at, a_at: its first unit in z_store and a_store; w,
# b: its weights and bias, b < 0 for none), the activation applied as each
# output is produced. A tiny network's step is then all arithmetic, with no
# views built and no BLAS call. The sums run in the order and precision of
# kernels.blas's own loops, so the numbers are those of the products above.
@inline_jit
def _small_forward(z_store, a_store, z_at, a_at, inputs, start, params, w, b, batch, n_in, n_out, code, p1, p2):
    for r in range(batch):
        for o in range(n_out):
            total = 0.0
            for k in range(n_in):
                total += input_value(inputs, start, n_in, r, k) * params[w + o * n_in + k]
            z_store[z_at + r * n_out + o] = total + params[b + o] if b >= 0 else total
            # the identity's value unchanged, without a call to activate
            value = z_store[z_at + r * n_out + o]
            a_store[a_at + r * n_out + o] = value if code == IDENTITY else activate(float(value), code, p1, p2)


@inline_jit
def _small_backward(grads, delta, dinputs, inputs, start, params, z_store, a_store, z_at, a_at, w, b, batch, n_in,
                    n_out, code, p1, p2, need_dinputs, accumulate):
    # delta, dinputs: flat (batch, n_out) and (batch, n_in) rows of the
    # scratch. Returns whether every gradient written is finite.
    # in the forward pass this was: z = x @ W.T + b; a = f(z)
    real = grads.dtype.type
    if code != IDENTITY:
        for j in range(batch * n_out):
            delta[j] = delta[j] * derivative(float(z_store[z_at + j]), float(a_store[a_at + j]), code, p1, p2)
    finite = True
    for o in range(n_out):
        for k in range(n_in):
            total = 0.0
            for r in range(batch):
                total += delta[r * n_out + o] * input_value(inputs, start, n_in, r, k)
            value = real(total + grads[w + o * n_in + k]) if accumulate else real(total)
            grads[w + o * n_in + k] = value
            finite &= value - value == 0.0
    if b >= 0:
        for o in range(n_out):
            # summed in a local of the buffer's dtype, which rounds as the
            # buffer would: zeroing the buffer first became a call to memset,
            # and reading back what it wrote stalled the step
            bias_sum = grads[b + o] if accumulate else real(0.0)
            for r in range(batch):
                bias_sum += delta[r * n_out + o]
            grads[b + o] = bias_sum
            finite &= bias_sum - bias_sum == 0.0
    if need_dinputs:
        for r in range(batch):
            for k in range(n_in):
                total = 0.0
                for o in range(n_out):
                    total += delta[r * n_out + o] * params[w + o * n_in + k]
                dinputs[r * n_in + k] = total
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
# layer_backward): below SMALL_GEMM the loops above, else views of the flat
# buffers and the products.
@inline_jit
def forward(z_store, a_store, inputs, start, params, layers, layer_params, i, batch, mode):
    n_in, n_out, w, b = layers[i, N_IN], layers[i, N_OUT], layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    code, p1, p2 = layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1]
    if is_small(batch, n_in, n_out):
        _small_forward(z_store, a_store, batch * layers[i, CACHE_OFFSET], batch * layers[i, UNIT_OFFSET], inputs,
                       start, params, w, b, batch, n_in, n_out, code, p1, p2)
        return
    W, bias = layer_weights(params, layers, i)
    _dense_forward(layer_cache(z_store, layers, i, batch, n_out), layer_units(a_store, layers, i, batch),
                   input_rows(inputs, start, batch, n_in), W, bias, code, p1, p2)


@inline_jit
def backward(dinputs, grads, delta, inputs, start, params, layers, layer_params, z_store, a_store, i, batch,
             need_dinputs, accumulate):
    n_in, n_out, w, b = layers[i, N_IN], layers[i, N_OUT], layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    code, p1, p2 = layers[i, ACTIVATION], layer_params[i, 0], layer_params[i, 1]
    if is_small(batch, n_in, n_out):
        return _small_backward(grads, delta, dinputs, inputs, start, params, z_store, a_store,
                               batch * layers[i, CACHE_OFFSET], batch * layers[i, UNIT_OFFSET], w, b, batch, n_in,
                               n_out, code, p1, p2, need_dinputs, accumulate)
    W, _ = layer_weights(params, layers, i)
    dW, db = layer_weights(grads, layers, i)
    return _dense_backward(unchecked_view(dinputs, 0, batch if need_dinputs else 0, n_in), dW, db,
                           unchecked_view(delta, 0, batch, n_out), input_rows(inputs, start, batch, n_in), W,
                           layer_cache(z_store, layers, i, batch, n_out), layer_units(a_store, layers, i, batch),
                           code, p1, p2, accumulate)
