"""The fast paths of the fused training step compute what the plain paths compute."""
import numpy as np
import pytest

from kernels.config import jit
from kernels.views import matrix_view


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
