"""A prediction (``kernels.inference``) computes what the training forward
computes, whatever its blocks and threads, and finds non-finite input."""
import numpy as np
import pytest

import fastbp
import kernels
from kernels.inference import DOT_ROWS, block_rows, inference_parts, network_predict, work_size


def _model(sizes, dtype, seed):
    activations = ["relu", "tanh", "gelu", "softplus", "silu", "sigmoid"]
    rng = np.random.default_rng(seed)
    return fastbp.MLP(sizes, activation=activations[seed % len(activations)], dtype=dtype, seed=seed), rng


def _predict(model, x, block, parts):
    out = np.full((x.shape[0], model.sizes[-1]), np.nan, model.dtype)
    work = np.empty(work_size(model._total_units, block, parts), model.dtype)
    found = network_predict(out, x, model._params, model._layers, model._activation_params, work, block, parts)
    return found, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes, batch", [([3, 1], 1), ([5, 7, 2], 13), ([16, 40, 33, 4], 301), ([64, 96, 10], 1000)])
@pytest.mark.parametrize("block, parts", [(1, 1), (7, 1), (48, 2), (1000, 1), (5, 3)])
def test_predict_equals_the_training_forward(dtype, sizes, batch, block, parts):
    model, rng = _model(sizes, dtype, batch)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    found, out = _predict(model, x, block, parts)
    assert found == -1
    expected = model.forward(x)
    # the products of a block of rows may sum in another order than the
    # whole batch's: equal to rounding, no more
    tolerance = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [1, DOT_ROWS, DOT_ROWS + 1])
def test_a_few_rows_go_through_dot_products_equal_to_the_forward(dtype, seed, batch):
    # the last two have layers whose dot products are split between threads
    sizes = [[1, 1], [7, 300, 2], [33, 5, 17, 9, 3], [2, 1, 1], [64, 256, 128, 10], [300, 512, 513, 3]][seed]
    model, rng = _model(sizes, dtype, seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    found, out = _predict(model, x, batch, 1)
    assert found == -1
    # the dot products sum in another order than the tiles: equal to rounding
    tolerance = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, model.forward(x), rtol=tolerance, atol=tolerance)
    x[batch - 1, sizes[0] - 1] = np.nan
    assert _predict(model, x, batch, 1)[0] == x.size - 1


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_returns_the_first_non_finite_input(parts, bad):
    model, rng = _model([4, 8, 3], np.float64, 0)
    x = rng.standard_normal((50, 4))
    x[37, 2] = bad
    x[41, 0] = bad
    assert _predict(model, x, 5, parts)[0] == 37 * 4 + 2


def test_predict_refuses_a_short_work_buffer():
    model, rng = _model([4, 8, 3], np.float64, 0)
    x = rng.standard_normal((10, 4))
    out = np.empty((10, 3))
    with pytest.raises(ValueError, match="work"):
        network_predict(out, x, model._params, model._layers, model._activation_params, np.empty(10), 5, 1)
    with pytest.raises(ValueError, match="out"):
        network_predict(np.empty((9, 3)), x, model._params, model._layers, model._activation_params,
                        np.empty(1000), 5, 1)


def test_blocks_and_parts_are_sized_for_the_cache_and_the_batch():
    assert block_rows(1000, 1) == 1
    assert block_rows(1000, 100_000) == (1 << 17) // 1000
    assert block_rows(100_000, 100_000) == 48  # a few tiles' worth even for the widest networks
    assert inference_parts(1, 10 ** 6) == 1
    assert inference_parts(8, 10 ** 3) == 1
    if kernels.config.TILED:
        import numba
        assert inference_parts(10_000, 10 ** 5) == min(numba.get_num_threads(), 10_000 // 16)


def test_model_predict_is_unchanged_by_its_kept_buffers():
    """Calls of every size in turn, on one thread: the kept buffer of one
    call never leaks into the next."""
    model, rng = _model([20, 64, 5], np.float32, 1)
    for rows in [3, 2000, 1, 64, 5000, 3]:
        x = rng.standard_normal((rows, 20)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=2e-6, atol=2e-6)
