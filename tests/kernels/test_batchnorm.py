"""BatchNorm1d's kernels against torch's, in training and evaluation."""
import numpy as np
import pytest

from kernels.layers.batchnorm import batchnorm_backward, batchnorm_forward, batchnorm_inference
from tests.conftest import TOLERANCE, assert_close, check_against_torch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("shape", [(2, 1), (7, 5), (130, 16)])
@pytest.mark.parametrize("offset", [0.0, 100.0], ids=["centred", "offset"])
def test_training_batchnorm_is_torchs(shape, offset, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2 + offset
    weight, bias = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def torch_fn(x, weight, bias):
        return torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)

    def fastbp_fn(x, weight, bias, dout):
        out, mean, rstd = np.empty_like(x), np.empty(shape[1]), np.empty(shape[1])
        batchnorm_forward(out, mean, rstd, np.zeros(shape[1]), np.ones(shape[1]), x, weight, bias, 1e-5, 0.1)
        dx, dweight, dbias = np.empty_like(x), np.zeros_like(weight), np.zeros_like(bias)
        batchnorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd)
        return out, [dx, dweight, dbias]
    check_against_torch(f"batchnorm {'offset' if offset else 'centred'}", [x, weight, bias], torch_fn, fastbp_fn,
                        dtype, TOLERANCE[dtype])


def test_running_statistics_and_evaluation_are_torchs(dtype):
    rng = np.random.default_rng(1)
    module = torch.nn.BatchNorm1d(6, momentum=0.3, eps=1e-3).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.standard_normal(6)))
        module.bias.copy_(torch.tensor(rng.standard_normal(6)))
    weight, bias = (p.detach().numpy().astype(dtype) for p in (module.weight, module.bias))
    running_mean, running_var = np.zeros(6), np.ones(6)
    mean, rstd = np.empty(6), np.empty(6)
    for step in range(5):
        x = rng.standard_normal((9, 6)) * 3 + step
        expected = module(torch.tensor(x)).detach().numpy()
        out = np.empty((9, 6), dtype)
        batchnorm_forward(out, mean, rstd, running_mean, running_var, x.astype(dtype), weight, bias, 1e-3, 0.3)
        assert_close("batchnorm training output", dtype, out, expected, TOLERANCE[dtype])
    assert_close("batchnorm running mean", dtype, running_mean, module.running_mean.numpy(), TOLERANCE[dtype])
    assert_close("batchnorm running var", dtype, running_var, module.running_var.numpy(), TOLERANCE[dtype])
    module.eval()
    x = rng.standard_normal((4, 6))
    out = np.empty((4, 6), dtype)
    batchnorm_inference(out, x.astype(dtype), weight, bias, running_mean, running_var, 1e-3)
    assert_close("batchnorm evaluation", dtype, out, module(torch.tensor(x)).detach().numpy(), TOLERANCE[dtype])


def test_a_batch_of_one_row_is_refused_in_training_as_torch_does():
    with pytest.raises(ValueError, match="more than 1 row per batch"):
        batchnorm_forward(np.empty((1, 3)), np.empty(3), np.empty(3), np.zeros(3), np.ones(3), np.ones((1, 3)),
                          np.ones(3), np.zeros(3), 1e-5, 0.1)
    with pytest.raises(ValueError):
        torch.nn.functional.batch_norm(torch.ones(1, 3), None, None, training=True)


@pytest.mark.parametrize("eps, momentum", [(0.0, 0.1), (1e-5, 1.5), (1e-5, -0.1)])
def test_bad_scalars_are_refused_with_the_running_statistics_untouched(eps, momentum):
    running_mean, running_var = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="eps must be > 0 and momentum in"):
        batchnorm_forward(np.empty((4, 3)), np.empty(3), np.empty(3), running_mean, running_var, np.ones((4, 3)),
                          np.ones(3), np.zeros(3), eps, momentum)
    np.testing.assert_array_equal(running_mean, 0.0)
    np.testing.assert_array_equal(running_var, 1.0)
