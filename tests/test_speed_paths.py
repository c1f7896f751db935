"""The fast paths of the fused training step compute what the plain paths compute."""
import numpy as np
import pytest

import kernels
from kernels.config import jit
from kernels.fused import dense_activation_backward, dense_activation_forward
from kernels.views import borrowed, matrix_view


@jit
def _view(flat, start, rows, cols):
    return matrix_view(flat, start, rows, cols)


def test_matrix_view_matches_reshape_and_shares_memory():
    flat = np.arange(20, dtype=np.float32)
    view = _view(flat, 3, 4, 2)
    np.testing.assert_array_equal(view, flat[3:11].reshape(4, 2))
    view[1, 0] = -1.0
    assert flat[5] == -1.0
    assert _view(flat, 20, 0, 5).shape == (0, 5)


@pytest.mark.parametrize("start, rows, cols", [(15, 2, 3), (-1, 1, 1), (0, -1, 2)])
def test_matrix_view_refuses_what_does_not_fit(start, rows, cols):
    with pytest.raises(IndexError, match="does not fit"):
        _view(np.zeros(20), start, rows, cols)


@jit
def _borrowed_sum(array):
    return borrowed(array).sum()


def test_borrowed_reads_the_same_data():
    array = np.arange(6.0).reshape(2, 3)
    assert _borrowed_sum(array) == 15.0


@pytest.mark.parametrize("activation", [kernels.IDENTITY, kernels.RELU, kernels.TANH, kernels.SOFTPLUS])
@pytest.mark.parametrize("batch, n_in, n_out", [(1, 1, 1), (3, 2, 5), (7, 8, 9), (33, 17, 5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_dense_activation_matches_the_unfused_kernels_bit_for_bit(activation, batch, n_in, n_out, bias,
                                                                       dtype):
    """Plain loops below SMALL_GEMM, BLAS above, and written gradients all
    give exactly the numbers of dense_* followed by activation_*."""
    rng = np.random.default_rng(batch * 100 + n_in)
    x, W, dout = (rng.standard_normal(shape).astype(dtype) for shape in
                  [(batch, n_in), (n_out, n_in), (batch, n_out)])
    b = rng.standard_normal(n_out).astype(dtype) if bias else np.empty(0, dtype)
    p1, p2 = (1.0, 20.0) if activation == kernels.SOFTPLUS else (0.0, 0.0)

    z_ref, a_ref = np.empty((batch, n_out), dtype), np.empty((batch, n_out), dtype)
    kernels.dense_forward(z_ref, x, W, b)
    kernels.activation_forward(a_ref, z_ref, activation, p1, p2)
    z, a = np.empty_like(z_ref), np.empty_like(a_ref)
    dense_activation_forward(z, a, x, W, b, activation, p1, p2)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(a, a_ref)

    delta_ref = np.empty_like(dout)
    kernels.activation_backward(delta_ref, dout, z_ref, a_ref, activation, p1, p2)
    for accumulate, start in ((True, 1.0), (False, 0.0)):
        dx_ref, dW_ref, db_ref = np.empty_like(x), np.full_like(W, start), np.full_like(b, start)
        kernels.dense_backward(dx_ref, dW_ref, db_ref, delta_ref, x, W)
        delta, dx = dout.copy(), np.empty_like(x)
        # what a written gradient held before must not matter
        dW, db = np.full_like(W, 1.0 if accumulate else np.nan), np.full_like(b, 1.0 if accumulate else np.nan)
        dense_activation_backward(dx, dW, db, delta, x, W, z, a, activation, p1, p2, accumulate)
        np.testing.assert_array_equal(delta, delta_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        np.testing.assert_array_equal(dW, dW_ref)
        np.testing.assert_array_equal(db, db_ref)
