"""Categorical embeddings against torch.nn.functional.embedding, a table per column."""
import numpy as np
import pytest

from kernels.layers.embedding import embedding_backward, embedding_forward, sizes
from tests.conftest import TOLERANCE, assert_close

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("categories, d, batch", [((1,), 1, 1), ((3, 5, 2), 4, 9), ((7, 1, 50), 3, 64)])
def test_embeddings_are_torchs(categories, d, batch, dtype):
    rng = np.random.default_rng(0)
    offsets = np.concatenate([[0], np.cumsum(categories)]).astype(np.int64)
    codes = np.stack([rng.integers(0, n, batch) for n in categories], axis=1)
    table = rng.standard_normal((offsets[-1], d))
    dout = rng.standard_normal((batch, len(categories) * d))
    table_t = torch.tensor(table, requires_grad=True)
    out_t = torch.nn.functional.embedding(torch.tensor(codes + offsets[:-1]), table_t).reshape(batch, -1)
    out_t.backward(torch.tensor(dout))
    out = np.empty((batch, len(categories) * d), dtype)
    embedding_forward(out, codes, table.astype(dtype), offsets)
    dtable = np.zeros(table.shape, dtype)
    embedding_backward(dtable, dout.astype(dtype), codes, offsets)
    assert_close("embedding forward", dtype, out, out_t.detach().numpy(), TOLERANCE[dtype])
    assert_close("embedding backward", dtype, dtable, table_t.grad.numpy(), TOLERANCE[dtype])
    assert sizes(offsets[-1], d) == (offsets[-1] * d, 0)


@pytest.mark.parametrize("code, match", [(-1, r"codes\[1, 1\] = -1 is outside column 1's categories \[0, 2\)"),
                                         (2, r"codes\[1, 1\] = 2 is outside column 1's categories \[0, 2\)")])
def test_a_code_outside_its_column_is_refused_with_nothing_written(code, match):
    codes = np.array([[0, 1], [2, code]])
    out = np.zeros((2, 4))
    with pytest.raises(ValueError, match=match):
        embedding_forward(out, codes, np.ones((5, 2)), np.array([0, 3, 5]))
    assert not out.any()


def test_offsets_that_do_not_ascend_are_refused():
    with pytest.raises(ValueError, match="offsets must ascend from 0"):
        embedding_forward(np.zeros((1, 4)), np.zeros((1, 2), np.int64), np.ones((5, 2)), np.array([0, 3, 3]))
