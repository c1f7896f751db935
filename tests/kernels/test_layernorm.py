"""LayerNorm's kernels against torch.nn.functional.layer_norm."""
import numpy as np
import pytest

import kernels
from kernels.layers.layernorm import layernorm_backward, layernorm_forward
from tests.conftest import TOLERANCE, check_against_torch

torch = pytest.importorskip("torch")


# an offset of 100: far from zero, within what float32 inputs hold to its tolerance after normalising
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 5), (16, 130)])
@pytest.mark.parametrize("eps", [1e-5, 1e-1])
@pytest.mark.parametrize("offset", [0.0, 100.0], ids=["centred", "offset"])
def test_layernorm_is_torchs(shape, eps, offset, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2 + offset
    weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def torch_fn(x, weight, bias):
        return torch.nn.functional.layer_norm(x, (shape[1],), weight, bias, eps)

    def fastbp_fn(x, weight, bias, dout):
        out, mean, rstd = np.empty_like(x), np.empty(shape[0]), np.empty(shape[0])
        layernorm_forward(out, mean, rstd, x, weight, bias, eps)
        dx, dweight, dbias = np.empty_like(x), np.zeros_like(weight), np.zeros_like(bias)
        layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd)
        return out, [dx, dweight, dbias]
    check_against_torch(f"layernorm {'offset' if offset else 'centred'}", [x, weight, bias], torch_fn, fastbp_fn,
                        dtype, TOLERANCE[dtype])


def test_the_statistics_are_torchs_and_the_parameter_gradients_accumulate():
    rng = np.random.default_rng(1)
    x, weight, bias = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal(4)
    out, mean, rstd = np.empty_like(x), np.empty(6), np.empty(6)
    layernorm_forward(out, mean, rstd, x, weight, bias, 1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-12)
    dout = rng.standard_normal((6, 4))
    dx, dweight, dbias = np.empty_like(x), np.ones(4), np.ones(4)
    layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd)
    np.testing.assert_allclose(dbias, 1 + dout.sum(axis=0), rtol=1e-14)
    assert kernels.layers.layernorm.sizes(4, 4, True) == (8, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: layernorm_forward(np.empty((3, 4)), np.empty(3), np.empty(3), np.ones((3, 4)), np.ones(4), np.ones(4),
                               0.0), "eps must be > 0"),
    (lambda: layernorm_forward(np.empty((3, 4)), np.empty(3), np.empty(3), np.ones((3, 4)), np.ones(3), np.ones(4),
                               1e-5), "weight"),
    (lambda: layernorm_forward(np.empty((3, 4)), np.empty(2), np.empty(3), np.ones((3, 4)), np.ones(4), np.ones(4),
                               1e-5), "mean"),
    (lambda: layernorm_backward(np.empty((3, 4)), np.zeros(4), np.zeros(4), np.ones((2, 4)), np.ones((3, 4)),
                                np.ones(4), np.zeros(3), np.ones(3)), "dout"),
])
def test_bad_arguments_are_refused(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
