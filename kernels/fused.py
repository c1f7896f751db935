"""A dense layer and its activation as one kernel, forward and backward side
by side, for the fused training step.

Two things make them cheaper than ``dense_*`` followed by ``activation_*``:

* layers with fewer than ``SMALL_GEMM`` multiply-adds run as plain loops
  with the activation applied as each output is produced, so a small
  network's step makes no BLAS call and no second pass over its units;
* the backward can write the parameter gradients instead of adding to them
  (``accumulate=False``), which spares the training step a pass that zeroes
  the whole gradient buffer before every backward.

Both compute the very numbers of the unfused kernels: the loops sum in the
order and precision of ``kernels.blas``'s own loops, and the activation is
the same scalar function.
"""
from kernels.activations import IDENTITY, _activation_backward, _activation_forward, activate
from kernels.blas import SMALL_GEMM, _gemm, all_finite, finite_matrix
from kernels.config import jit


@jit
def is_small(batch, n_in, n_out):
    """Whether a (batch, n_in) -> (batch, n_out) layer runs as plain loops."""
    return batch * n_in * n_out < SMALL_GEMM


@jit
def dense_activation_forward(z, a, x, W, b, code, p1, p2):
    """``z = x @ W.T + b`` and ``a = f(z)``.

    Parameters
    ----------
    z, a : (batch, n_out) arrays, written
    x : (batch, n_in) array
    W : (n_out, n_in) array
    b : (n_out,) array; empty for a layer without bias
    code, p1, p2 : the activation (see ``kernels.activations``)
    """
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
def dense_activation_backward(dx, dW, db, delta, x, W, z, a, code, p1, p2, accumulate):
    """Gradients of ``a = f(x @ W.T + b)``.

    Parameters
    ----------
    dx : (batch, n_in) array, written with d(loss)/d(x); an empty array
        (0 rows) to skip it
    dW : (n_out, n_in) array, d(loss)/d(W) added to it (written when not
        ``accumulate``)
    db : (n_out,) array, likewise for the bias; empty without bias
    delta : (batch, n_out) array; holds d(loss)/d(a) on entry and
        d(loss)/d(z) on exit
    x : (batch, n_in) array, the forward input
    W : (n_out, n_in) array
    z, a : (batch, n_out) arrays, the forward pre-activations and outputs
    code, p1, p2 : the activation
    accumulate : bool

    Returns
    -------
    bool : whether every element of dW and db is finite, checked as the
        product writes dW (so that a training step need not pass over the
        gradients again to know)
    """
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
