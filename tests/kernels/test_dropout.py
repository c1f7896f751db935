"""Dropout's kernels: against torch given the same mask, and the mask's
statistics (keep rate, independence) and its independence from how a batch
is split."""
import numpy as np
import pytest

import kernels
from tests.conftest import TOLERANCE, check_against_torch


def _mask(shape, p, seed=0, step=1, layer=0, first_row=0):
    x = np.ones(shape)
    out, mask = np.empty(shape), np.empty(shape)
    kernels.dropout_forward(out, mask, x, p, seed, step, layer, first_row)
    return mask


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 33)])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_is_torchs_given_the_same_mask(shape, p, dtype):
    mask = _mask(shape, p, seed=3)
    x = np.random.default_rng(1).standard_normal(shape)

    def fastbp_fn(x, dout):
        out, kept = np.empty_like(x), np.empty_like(x)
        kernels.dropout_forward(out, kept, x, p, 3, 1, 0)
        dx = np.empty_like(x)
        kernels.dropout_backward(dx, dout, kept)
        return out, [dx]
    # torch.nn.functional.dropout(x) in training is x * mask, mask 0 or 1 / (1 - p)
    torch = pytest.importorskip("torch")
    check_against_torch(f"dropout p={p}", [x], lambda t: t * torch.tensor(mask), fastbp_fn, dtype, TOLERANCE[dtype])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_keep_rate_is_one_minus_p_and_the_mask_rescales(p):
    n = 1_000_000
    mask = _mask((1000, 1000), p)
    kept = mask > 0
    # 6 standard deviations of a binomial fraction
    assert abs(kept.mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(np.unique(mask), [0.0, 1.0 / (1.0 - p)])
    assert abs(mask.mean() - 1.0) < 6 * np.sqrt(p / (1 - p) / n)


def test_masks_are_independent_across_elements_steps_layers_and_seeds():
    shape, p = (500, 400), 0.3
    base = (_mask(shape, p) > 0).ravel().astype(float)
    n = base.size
    others = {"next element": np.roll(base, 1), "next row": np.roll(base, shape[1]),
              "next step": (_mask(shape, p, step=2) > 0).ravel(), "next layer": (_mask(shape, p, layer=1) > 0).ravel(),
              "next seed": (_mask(shape, p, seed=1) > 0).ravel()}
    for name, other in others.items():
        correlation = np.corrcoef(base, other.astype(float))[0, 1]
        assert abs(correlation) < 6 / np.sqrt(n), (name, correlation)


def test_the_mask_is_a_function_of_its_coordinates_not_of_the_split():
    shape, p = (37, 11), 0.25
    whole = _mask(shape, p, seed=5, step=9, layer=2)
    parts = np.concatenate([_mask((20, 11), p, seed=5, step=9, layer=2),
                            _mask((17, 11), p, seed=5, step=9, layer=2, first_row=20)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, _mask(shape, p, seed=5, step=9, layer=2))


def test_p_zero_keeps_everything_and_the_output_may_be_the_input():
    x = np.random.default_rng(2).standard_normal((6, 4))
    expected = x.copy()
    mask = np.empty_like(x)
    kernels.dropout_forward(x, mask, x, 0.0, 0, 1, 0)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(mask, 1.0)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, np.nan])
def test_a_rate_outside_0_1_is_refused_with_nothing_written(p):
    x = np.ones((3, 2))
    out, mask = np.zeros((3, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        kernels.dropout_forward(out, mask, x, p, 0, 1, 0)
    assert not out.any() and not mask.any()


def test_shapes_that_disagree_are_refused():
    with pytest.raises(ValueError, match="mask"):
        kernels.dropout_forward(np.empty((3, 2)), np.empty((3, 3)), np.ones((3, 2)), 0.1, 0, 1, 0)
    with pytest.raises(ValueError, match="dx"):
        kernels.dropout_backward(np.empty((2, 2)), np.ones((3, 2)), np.ones((3, 2)))
