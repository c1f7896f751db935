"""kernels.sparse, the dense layer on CSR rows, against torch autograd on
the same rows made dense; and a network on sparse rows (fastbp.sparse)
against the same network on the dense copy."""
import numpy as np
import pytest
import scipy.sparse

import fastbp
import fastbp.lbfgs
from fastbp.sparse import SparseNetwork
from kernels.sparse import csr_linear_backward, csr_linear_forward
from tests.conftest import TOLERANCE, check_against_torch


def _csr(rows, n_in, seed):
    X = scipy.sparse.random(rows, n_in, density=0.15, format="csr", random_state=seed)
    X.data = X.data * 4 - 2
    X = scipy.sparse.csr_array(X)
    if rows > 3:
        X.indptr[2] = X.indptr[1]  # row 1 left empty (its values go to row 2)
    return X


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1), (9, 40, 7), (130, 300, 33)], ids=lambda s: "x".join(map(str, s)))
def test_csr_linear_forward_and_backward_against_torch(shape, bias, dtype):
    torch = pytest.importorskip("torch")
    rows, n_in, n_out = shape
    X = _csr(rows, n_in, seed=rows)
    # the last row gains a value in column 0 (a second one where it has one: the two add, as scipy reads them)
    duplicated = scipy.sparse.csr_array((np.r_[X.data, 1.5], np.r_[X.indices, 0], np.r_[X.indptr[:-1], X.nnz + 1]),
                                        shape=X.shape) if rows > 1 else X
    dense = duplicated.toarray()
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)

    def fastbp_layer(W, b, dout):
        data, z = duplicated.data.astype(dtype), np.empty((rows, n_out), dtype)
        transposed = np.empty((n_in, n_out), dtype)
        none = np.empty(0, dtype)
        csr_linear_forward(z, data, duplicated.indices, duplicated.indptr, W, b if bias else none, transposed)
        dW, db = np.full_like(W, np.nan), np.full_like(b, np.nan)  # written over, not added to
        assert csr_linear_backward(dW, db if bias else none, dout, data, duplicated.indices, duplicated.indptr,
                                   transposed, False)
        return z, [dW, db if bias else np.zeros_like(b)]

    check_against_torch("csr linear", [W, b], lambda W, b: torch.from_numpy(dense) @ W.T + (b if bias else 0 * b),
                        fastbp_layer, dtype, TOLERANCE[dtype])


def test_csr_linear_backward_adds_to_the_gradients_and_reports_non_finite_ones():
    X = _csr(5, 6, seed=0)
    dz, dW, db = np.ones((5, 2)), np.ones((2, 6)), np.ones(2)
    assert csr_linear_backward(dW, db, dz, X.data, X.indices, X.indptr, np.empty((6, 2)), True)
    np.testing.assert_allclose(dW, 1 + dz.T @ X.toarray())
    np.testing.assert_allclose(db, 1 + dz.sum(axis=0))
    dz[0, 0] = np.inf
    assert not csr_linear_backward(dW, db, dz, X.data, X.indices, X.indptr, np.empty((6, 2)), False)


def test_csr_kernels_refuse_indices_outside_the_columns():
    X = _csr(4, 5, seed=2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, n_in\)"):
        csr_linear_forward(np.empty((4, 3)), X.data, X.indices, X.indptr, np.ones((3, 4)), np.ones(3),
                           np.empty((4, 3)))


@pytest.mark.parametrize("sizes", [[30, 4], [30, 6, 4], [30, 8, 5, 4]], ids=lambda s: "-".join(map(str, s)))
def test_a_network_on_sparse_rows_is_the_network_on_their_dense_copy(sizes, dtype):
    rng = np.random.default_rng(3)
    X = _csr(9000, 30, seed=3)  # over 8192 rows: the loss runs in two blocks
    y = rng.integers(0, 4, 9000)
    model = fastbp.MLP(sizes, activation="tanh", dtype=dtype.__name__, seed=0)
    theta = model.state_dict()["params"].astype(np.float64)
    weights = rng.uniform(size=9000)
    sparse = fastbp.lbfgs.FullBatchObjective(model, "cross_entropy", X, y, sample_weight=weights, l2=0.1)(theta)
    dense = fastbp.lbfgs.FullBatchObjective(model, "cross_entropy", X.toarray(), y, sample_weight=weights,
                                            l2=0.1)(theta)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert sparse[0] == pytest.approx(dense[0], rel=tolerance)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(SparseNetwork(model).predict(X.astype(dtype)), model.predict(X.toarray().astype(dtype)),
                               rtol=tolerance * 10, atol=tolerance * 10)
