"""The fast paths of the fused training step compute what the plain paths compute."""
import numpy as np
import pytest

import fastbp
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


def _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype, epochs=2):
    """Train a fresh model with each minibatch split into ``chunks`` parts."""
    monkeypatch.setattr(kernels, "data_parallel_chunks", lambda n_params, batch_size, n_threads: chunks)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((203, 12))
    y = rng.integers(0, 4, 203) if loss == "cross_entropy" else rng.standard_normal((203, 4))
    model = fastbp.MLP([12, 16, 9, 4], activation="tanh", dtype=dtype, seed=3)
    optimizer = (fastbp.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3) if optimizer == "sgd"
                 else fastbp.Adam(model, lr=1e-2, amsgrad=True))
    trainer = fastbp.Trainer(model, fastbp.losses.as_loss(loss), optimizer, max_grad_norm=max_grad_norm)
    history = trainer.fit(X, y, epochs=epochs, batch_size=40, seed=1)
    return np.array(history.loss), model._params.copy(), model._grads.copy()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("optimizer, max_grad_norm", [("sgd", None), ("adam", 0.5)])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_data_parallel_epochs_match_serial_ones_up_to_rounding(monkeypatch, loss, optimizer, max_grad_norm,
                                                               dtype, rtol):
    serial = _fit(monkeypatch, 1, loss, optimizer, max_grad_norm, dtype)
    for chunks in (2, 3):
        split = _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype)
        for got, expected in zip(split, serial):
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
        # the same split gives the same numbers, bit for bit
        for got, again in zip(split, _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype)):
            np.testing.assert_array_equal(got, again)


def test_data_parallel_chunks_split_only_what_is_worth_it():
    assert kernels.data_parallel_chunks(10_000, 1024, 1) == 1
    assert kernels.data_parallel_chunks(10_000, 1, 2) == 1
    assert kernels.data_parallel_chunks(10_000, 64, 2) == 1
    assert kernels.data_parallel_chunks(10_000, 1024, 2) == 2
    assert kernels.data_parallel_chunks(1_000_000, 1024, 2) == 1
