"""The vector-register matrix product of ``kernels.tiles`` against float64
NumPy, at every edge of its tiles and panels, and its threaded form against
the serial one, bit for bit."""
import numpy as np
import pytest

import kernels
from kernels import tiles
from kernels.config import jit
from kernels.blas import PARALLEL_GEMM, SMALL_GEMM, _gemm

pytestmark = pytest.mark.skipif(not tiles.AVAILABLE, reason="no tiles for this target (FASTBP_ISA or its ISA): products go to BLAS")

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}


def operands(rng, m, n, k, trans_a, trans_b, dtype, layout="C"):
    A = rng.standard_normal((k, m) if trans_a else (m, k))
    B = rng.standard_normal((n, k) if trans_b else (k, n))
    C = rng.standard_normal((m, n))
    if layout == "F":
        A, B = np.asfortranarray(A), np.asfortranarray(B)
    elif layout == "strided":
        # every other column of a wider array: rows still contiguous for B
        # where it must be, A read with a column step of 2
        A = np.repeat(A, 2, axis=1)[:, ::2]
    return A.astype(dtype), B.astype(dtype), C.astype(dtype)


def reference(A, B, C, trans_a, trans_b, alpha, beta):
    a = (A.T if trans_a else A).astype(np.float64)
    b = (B.T if trans_b else B).astype(np.float64)
    return alpha * (a @ b) + (beta * C.astype(np.float64) if beta != 0.0 else 0.0)


def assert_close(C, expected, dtype, k):
    scale = 1.0 + np.abs(expected).max()
    error = np.abs(C.astype(np.float64) - expected).max() / scale
    assert error <= TOLERANCE[dtype] * max(k, 1) ** 0.5, error


# rows across a tile's (6), columns across a vector's (16 or 8) and a
# panel's (64 or 32), depths across a packed panel's (256)
SHAPES = [(1, 1, 1), (5, 15, 3), (6, 16, 7), (7, 17, 8), (13, 63, 255), (12, 64, 256), (19, 65, 257),
          (64, 128, 784), (10, 784, 64), (3, 129, 515), (200, 33, 16)]
# a transposed A whose steps are a multiple of 4 KiB is packed, in blocks
# of BLOCK_ROWS rows, where eight panels or more read it: several blocks, a
# partial one, several depths, a partial panel; rows given in 4 KiB of
# elements (1024 floats, 512 doubles)
PACKED = [(1, 520, 300), (2, 530, 257), (1, 515, 5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_tiles_match_float64_numpy_at_every_edge(m, n, k, trans_a, trans_b, dtype):
    _product_matches(m, n, k, trans_a, trans_b, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("pages, n, k", PACKED)
def test_a_packed_transposed_a_matches_float64_numpy(pages, n, k, trans_b, dtype):
    m = pages * 4096 // np.dtype(dtype).itemsize
    assert m > tiles.BLOCK_ROWS
    _product_matches(m, n, k, True, trans_b, dtype)


def _product_matches(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    A, B, C = operands(rng, m, n, k, trans_a, trans_b, dtype)
    expected = reference(A, B, C, trans_a, trans_b, 0.5, 2.0)
    tiles.tile_gemm(C, A, B, trans_a, trans_b, 0.5, 2.0, 0, m, 0, n)
    assert_close(C, expected, dtype, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["F", "strided"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_tiles_read_fortran_and_strided_operands(layout, trans_a, trans_b, dtype):
    rng = np.random.default_rng(7)
    m, n, k = 23, 70, 300
    A, B, C = operands(rng, m, n, k, trans_a, trans_b, dtype, layout)
    expected = reference(A, B, C, trans_a, trans_b, 1.0, 1.0)
    assert tiles.tiles_can_read(C, A, B)
    kernels.gemm(C, A, B, trans_a, trans_b, 1.0, 1.0)
    assert_close(C, expected, dtype, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_zero_writes_c_without_reading_it(dtype):
    rng = np.random.default_rng(3)
    A, B, C = operands(rng, 17, 70, 40, False, True, dtype)
    C[:] = np.nan
    tiles.tile_gemm(C, A, B, False, True, 1.0, 0.0, 0, 17, 0, 70)
    assert_close(C, reference(A, B, C, False, True, 1.0, 0.0), dtype, 40)


def test_a_block_leaves_the_rest_of_c_alone():
    rng = np.random.default_rng(4)
    A, B, C = operands(rng, 20, 140, 30, False, False, np.float32)
    before = C.copy()
    tiles.tile_gemm(C, A, B, False, False, 1.0, 0.0, 6, 12, 64, 128)
    expected = reference(A, B, before, False, False, 1.0, 0.0)
    outside = np.ones(C.shape, bool)
    outside[6:12, 64:128] = False
    np.testing.assert_array_equal(C[outside], before[outside])
    assert_close(C[6:12, 64:128], expected[6:12, 64:128], np.float32, 30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(64, 128, 784), (130, 40, 500), (5, 1000, 300), (1024, 1040, 300)])
@pytest.mark.parametrize("parts", [2, 3])
def test_threads_compute_what_one_thread_computes_bit_for_bit(m, n, k, parts, dtype):
    rng = np.random.default_rng(5)
    for trans_a, trans_b in [(False, True), (True, False), (False, False)]:
        A, B, C = operands(rng, m, n, k, trans_a, trans_b, dtype)
        serial, threaded = C.copy(), C.copy()
        tiles.tile_gemm(serial, A, B, trans_a, trans_b, 1.0, 1.0, 0, m, 0, n)
        tiles.tile_gemm_parallel(threaded, A, B, trans_a, trans_b, 1.0, 1.0, parts, False)
        np.testing.assert_array_equal(threaded, serial)


def test_gemm_takes_the_tiles_for_products_worth_it():
    rng = np.random.default_rng(6)
    for m, n, k in [(8, 8, 8), (64, 128, 784)]:
        assert m * n * k >= SMALL_GEMM
        A, B, C = operands(rng, m, n, k, False, True, np.float32)
        through_gemm, through_tiles = C.copy(), C.copy()
        kernels.gemm(through_gemm, A, B, False, True, 1.0, 1.0)
        tiles.tile_gemm(through_tiles, A, B, False, True, 1.0, 1.0, 0, m, 0, n)
        np.testing.assert_array_equal(through_gemm, through_tiles)
    assert 64 * 128 * 784 >= PARALLEL_GEMM


def test_a_transposed_b_without_a_unit_step_goes_elsewhere():
    rng = np.random.default_rng(8)
    B = rng.standard_normal((40, 60)).astype(np.float32)[::2, ::3]
    A = rng.standard_normal((9, 20)).astype(np.float32)
    C = np.zeros((9, 20), np.float32)
    assert not tiles.tiles_can_read(C, A, B)
    kernels.gemm(C, A, B, False, False, 1.0, 0.0)
    assert_close(C, reference(A, B, C, False, False, 1.0, 0.0), np.float32, 20)


def test_mixed_dtypes_are_not_for_the_tiles():
    C = np.zeros((8, 8), np.float32)
    assert not tiles.tiles_can_read(C, np.zeros((8, 8)), C)
    assert not tiles.tiles_can_read(C, C, np.zeros((8, 8)))
    assert tiles.tiles_can_read(C, C, C)


@jit
def _checked_gemm(C, A, B, trans_a, trans_b, alpha, beta):
    return _gemm(C, A, B, trans_a, trans_b, alpha, beta, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(5, 15, 3), (13, 63, 255), (19, 65, 257), (64, 128, 784), (130, 40, 500)])
def test_the_product_says_whether_every_element_of_c_is_finite(m, n, k, dtype):
    """The check the tiles make as they write C finds a NaN or an infinity
    in any single element, at every tile edge, on one thread and split
    between threads, and counts nothing but C's elements."""
    rng = np.random.default_rng(m + n + k)
    A, B, C = operands(rng, m, n, k, False, False, dtype)
    big = np.finfo(dtype).max
    cases = [(i, j) for i in {0, m // 2, m - 1} for j in {0, n // 2, n - 1}]
    for parts in (1, 2):
        def product(C, beta):
            if parts == 1:
                return tiles.tile_gemm(C, A, B, False, False, 1.0, beta, 0, m, 0, n, True)
            return tiles.tile_gemm_parallel(C, A, B, False, False, 1.0, beta, parts, True)
        assert product(C.copy(), 0.0)
        # C may hold NaN where beta is 0: it is not read, and not counted
        assert product(np.full_like(C, np.nan), 0.0)
        for i, j in cases:
            kept = A.copy(), B.copy()
            A[i, -1] = np.nan  # C[i, :] NaN
            assert not product(C.copy(), 0.0)
            A[...] = kept[0]
            # one element overflows: C[i, j] alone is infinite
            A[i], B[:2] = 0.0, 0.0
            A[i, :2] = big
            B[:2, j] = 2.0 if k > 1 else 4.0
            out = C.copy()
            assert not product(out, 0.0)
            assert np.isinf(out[i, j]) and np.isfinite(np.delete(out.ravel(), i * n + j)).all()
            A[...], B[...] = kept
            # read through beta: an infinity in C stays one
            out = C.copy()
            out[i, j] = np.inf
            assert not product(out, 1.0)
            assert product(C.copy(), 1.0)
        # unchecked, the tiles say nothing
        A[0, 0] = np.nan
        assert tiles.tile_gemm(C.copy(), A, B, False, False, 1.0, 0.0, 0, m, 0, n, False)
        A[0, 0] = 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_off_the_tiles_check_c_too(dtype):
    rng = np.random.default_rng(9)
    # strided: BLAS; tiny: plain loops
    for A, B in ((rng.standard_normal((40, 60))[::2, ::3], rng.standard_normal((20, 7))),
                 (rng.standard_normal((2, 3)), rng.standard_normal((3, 2)))):
        A, B = A.astype(dtype), B.astype(dtype)
        C = np.zeros((A.shape[0], B.shape[1]), dtype)
        assert _checked_gemm(C, A, B, False, False, 1.0, 0.0)
        A[-1, -1] = np.inf
        assert not _checked_gemm(C, A, B, False, False, 1.0, 0.0)
        assert np.isinf(C[-1]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [1, 2])
def test_a_packed_a_is_checked_as_it_is_written(parts, dtype):
    m, n, k = 512 * 8 // np.dtype(dtype).itemsize, 1040, 300
    rng = np.random.default_rng(10)
    A, B, C = operands(rng, m, n, k, True, False, dtype)

    def product(C):
        if parts == 1:
            return tiles.tile_gemm(C, A, B, True, False, 1.0, 0.0, 0, m, 0, n, True)
        return tiles.tile_gemm_parallel(C, A, B, True, False, 1.0, 0.0, parts, True)
    assert product(C.copy())
    for i in (0, tiles.BLOCK_ROWS + 1, m - 1):  # a row in the first, second and last block
        A[k - 1, i] = np.nan  # op(A)[i, k - 1]: C[i, :] NaN, no other row
        out = C.copy()
        assert not product(out)
        assert np.isnan(out[i]).all() and np.isfinite(np.delete(out, i, axis=0)).all()
        A[k - 1, i] = 0.5
