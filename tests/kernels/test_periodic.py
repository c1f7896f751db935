"""Periodic (PLR) embeddings against a torch module written the same way."""
import numpy as np
import pytest

from kernels.layers.periodic import periodic_backward, periodic_forward, sizes
from tests.conftest import TOLERANCE, check_against_torch

torch = pytest.importorskip("torch")


def torch_periodic(x, frequencies, weight, bias):
    """(batch, n_features) -> (batch, n_features * d): per feature,
    relu(W_i @ [sin(2 pi c_i x_i), cos(2 pi c_i x_i)] + b_i)."""
    phase = 2 * torch.pi * frequencies[None] * x[..., None]          # (batch, n_features, k)
    features = torch.cat([torch.sin(phase), torch.cos(phase)], -1)   # (batch, n_features, 2k)
    z = torch.einsum("bnj,nej->bne", features, weight) + bias[None]  # (batch, n_features, d)
    return torch.relu(z).reshape(x.shape[0], -1)


@pytest.mark.parametrize("batch, n_features, k, d", [(1, 1, 1, 1), (5, 3, 4, 6), (17, 8, 2, 3)])
def test_periodic_embeddings_are_the_torch_modules(batch, n_features, k, d, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, n_features))
    frequencies = rng.standard_normal((n_features, k)) * 0.3
    weight = rng.standard_normal((n_features, d, 2 * k)) / np.sqrt(2 * k)
    bias = rng.standard_normal((n_features, d)) * 0.1

    def fastbp_fn(x, frequencies, weight, bias, dout):
        out, z = np.empty((batch, n_features * d), x.dtype), np.empty((batch, n_features * d), x.dtype)
        periodic_forward(out, z, x, frequencies, weight, bias)
        dx, dfrequencies, dweight, dbias = (np.zeros_like(a) for a in (x, frequencies, weight, bias))
        periodic_backward(dx, dfrequencies, dweight, dbias, dout, x, frequencies, weight, z)
        return out, [dx, dfrequencies, dweight, dbias]
    check_against_torch("periodic embedding", [x, frequencies, weight, bias], torch_periodic, fastbp_fn, dtype,
                        TOLERANCE[dtype])


def test_sizes_count_the_parameters_and_the_cache():
    # 3 features, 4 frequencies, d = 6: 12 frequencies, 3 * 6 * 8 weights, 18 biases; 18 pre-activations
    assert sizes(3, 4, 6) == (12 + 144 + 18, 18)


def test_shapes_that_disagree_are_refused():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="weight"):
        periodic_forward(np.empty((2, 6)), np.empty((2, 6)), x, np.ones((3, 2)), np.ones((3, 2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="out"):
        periodic_forward(np.empty((2, 5)), np.empty((2, 6)), x, np.ones((3, 2)), np.ones((3, 2, 4)), np.ones((3, 2)))
