"""Dense (fully connected) layer, forward and backward side by side.

Weights follow torch.nn.Linear: ``W`` is (n_out, n_in), so a layer computes
``out = x @ W.T + b``.
"""
from kernels.blas import _gemm, overlaps_itself
from kernels.checks import check_dtype, check_size
from kernels.config import jit


@jit
def dense_forward(out, x, W, b):
    """``out = x @ W.T + b``.

    Parameters
    ----------
    out : (batch, n_out) array, written; no two elements may share memory
        (ValueError)
    x : (batch, n_in) array
    W : (n_out, n_in) array
    b : (n_out,) array; None or an empty array for a layer without bias

    All arrays share one dtype (TypeError); shapes that disagree raise
    ValueError, with nothing written.
    """
    kernel = "dense_forward"
    check_size(kernel, "x", x, 1, W.shape[1], "W.shape[1] (n_in)")
    check_size(kernel, "out", out, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "out", out, 1, W.shape[0], "W.shape[0] (n_out)")
    check_dtype(kernel, "x", x, "W", W)
    check_dtype(kernel, "out", out, "W", W)
    if b is not None and b.shape[0] > 0:
        check_size(kernel, "b", b, 0, W.shape[0], "W.shape[0] (n_out)")
        check_dtype(kernel, "b", b, "W", W)
    if overlaps_itself(out):
        raise ValueError("dense_forward: out overlaps itself (a stride of 0, or rows that share memory); "
                         "write into an array of its own, e.g. np.empty((batch, n_out))")
    if b is not None and b.shape[0] > 0:
        # Writing the bias first and letting gemm accumulate onto it touches
        # ``out`` once less than adding the bias afterwards.
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = b[j]
        _gemm(out, x, W, False, True, 1.0, 1.0)
    else:
        _gemm(out, x, W, False, True, 1.0, 0.0)


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
    ValueError, with nothing written.
    """
    kernel = "dense_backward"
    check_size(kernel, "x", x, 1, W.shape[1], "W.shape[1] (n_in)")
    check_size(kernel, "dout", dout, 0, x.shape[0], "x.shape[0] (batch)")
    check_size(kernel, "dout", dout, 1, W.shape[0], "W.shape[0] (n_out)")
    check_size(kernel, "dW", dW, 0, W.shape[0], "W.shape[0] (n_out)")
    check_size(kernel, "dW", dW, 1, W.shape[1], "W.shape[1] (n_in)")
    check_dtype(kernel, "x", x, "W", W)
    check_dtype(kernel, "dout", dout, "W", W)
    check_dtype(kernel, "dW", dW, "W", W)
    if db is not None and db.shape[0] > 0:
        check_size(kernel, "db", db, 0, W.shape[0], "W.shape[0] (n_out)")
        check_dtype(kernel, "db", db, "W", W)
    if dx is not None and dx.shape[0] > 0:
        check_size(kernel, "dx", dx, 0, x.shape[0], "x.shape[0] (batch)")
        check_size(kernel, "dx", dx, 1, W.shape[1], "W.shape[1] (n_in)")
        check_dtype(kernel, "dx", dx, "W", W)
    if overlaps_itself(dW):
        raise ValueError("dense_backward: dW overlaps itself (a stride of 0, or rows that share memory); "
                         "accumulate into an array of its own, e.g. np.zeros((n_out, n_in))")
    if dx is not None and overlaps_itself(dx):
        raise ValueError("dense_backward: dx overlaps itself (a stride of 0, or rows that share memory); "
                         "write into an array of its own, e.g. np.empty((batch, n_in))")
    # in the forward pass this was: out = x @ W.T + b
    _gemm(dW, dout, x, True, False, 1.0, 1.0)
    if db is not None and db.shape[0] > 0:
        for i in range(dout.shape[0]):
            for j in range(dout.shape[1]):
                db[j] += dout[i, j]
    if dx is not None and dx.shape[0] > 0:
        _gemm(dx, dout, W, False, False, 1.0, 0.0)
