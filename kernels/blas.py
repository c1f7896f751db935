"""General matrix multiply on row-major arrays through the BLAS that NumPy's
``np.dot`` uses inside Numba (SciPy's), without allocating.

``np.dot(a, b, out)`` inside ``@njit`` cannot accumulate (it always passes
beta=0) and cannot read a transposed operand without a copy; training needs
both (``dW += dout.T @ x``). Numba's own helper library already exports the
``?gemm`` entry point it uses for ``np.dot``; calling it directly gives the
full ``C = alpha * op(A) @ op(B) + beta * C`` and keeps the kernels cacheable,
because the symbol is resolved by name when the cache is loaded.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from kernels.config import jit

ensure_blas()  # a clear ImportError now instead of a failure inside a kernel

# Below this many multiply-adds the call into BLAS costs more than the
# arithmetic: measured on a 2-core AMD EPYC VM, plain loops win up to 4x4x4,
# tie at 8x8x8 and lose 3x at 16x16x16.
SMALL_GEMM = 8 * 8 * 8

_CHAR = ir.IntType(8)
_VOID_PTR = ir.IntType(8).as_pointer()


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Column-major ``c = alpha * op(a) @ op(b) + beta * c`` on raw array data.

    ``transa``/``transb`` are booleans; ``alpha``/``beta`` scalars of the
    arrays' dtype (they are spilled to the stack, BLAS takes pointers).
    """
    dtype = a.dtype
    sig = types.void(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        (transa_v, transb_v, m_v, n_v, k_v, alpha_v, a_v, lda_v,
         b_v, ldb_v, beta_v, c_v, ldc_v) = args
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [
            _CHAR, _CHAR, _CHAR, intp, intp, intp,
            _VOID_PTR, _VOID_PTR, intp, _VOID_PTR, intp, _VOID_PTR, _VOID_PTR, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind = ir.Constant(_CHAR, ord("s" if dtype == types.float32 else "d"))

        def flag(value):
            return builder.select(value, ir.Constant(_CHAR, ord("t")), ir.Constant(_CHAR, ord("n")))

        def data(array_type, array_value):
            array = context.make_array(array_type)(context, builder, array_value)
            return builder.bitcast(array.data, _VOID_PTR)

        def slot(value_type, value):
            value = context.cast(builder, value, value_type, dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, value), _VOID_PTR)

        def as_intp(value_type, value):
            return context.cast(builder, value, value_type, types.intp)

        _, _, m_t, n_t, k_t, alpha_t, a_t, lda_t, b_t, ldb_t, beta_t, c_t, ldc_t = signature.args
        builder.call(fn, (
            kind, flag(transa_v), flag(transb_v),
            as_intp(m_t, m_v), as_intp(n_t, n_v), as_intp(k_t, k_v),
            slot(alpha_t, alpha_v), data(a_t, a_v), as_intp(lda_t, lda_v),
            data(b_t, b_v), as_intp(ldb_t, ldb_v), slot(beta_t, beta_v),
            data(c_t, c_v), as_intp(ldc_t, ldc_v)))
        return context.get_dummy_value()

    return sig, codegen


@jit
def _row_stride(a):
    """Elements between rows of a 2-D array whose rows are contiguous, else -1."""
    itemsize = a.itemsize
    if a.shape[1] > 1 and a.strides[1] != itemsize:
        return -1
    if a.shape[0] > 1:
        return a.strides[0] // itemsize
    return max(a.shape[1], 1)


@jit
def gemm(C, A, B, trans_a, trans_b, alpha, beta):
    """``C = alpha * op(A) @ op(B) + beta * C`` for row-major arrays, in place.

    Parameters
    ----------
    C : (m, n) array, written (read too when ``beta != 0``)
    A : (m, k) array, or (k, m) when ``trans_a``
    B : (k, n) array, or (n, k) when ``trans_b``
    trans_a, trans_b : bool
    alpha, beta : float

    All three arrays share one dtype (float32 or float64) and have contiguous
    rows; any row stride is accepted. Arrays that fail that, and products too
    small to be worth a BLAS call, go through plain loops.
    """
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    lda = _row_stride(A)
    ldb = _row_stride(B)
    ldc = _row_stride(C)
    if lda < 0 or ldb < 0 or ldc < 0 or k == 0 or m * n * k < SMALL_GEMM:
        _gemm_loops(C, A, B, trans_a, trans_b, alpha, beta)
        return
    # BLAS is column-major: a row-major X is the column-major X.T, so we ask
    # for C.T = op(B).T @ op(A).T, which is the same call with A and B swapped.
    _xxgemm(trans_b, trans_a, n, m, k, C.dtype.type(alpha), B, ldb, A, lda,
            C.dtype.type(beta), C, ldc)


@jit
def _gemm_loops(C, A, B, trans_a, trans_b, alpha, beta):
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    for i in range(m):
        for j in range(n):
            total = 0.0
            for p in range(k):
                a = A[p, i] if trans_a else A[i, p]
                b = B[j, p] if trans_b else B[p, j]
                total += a * b
            previous = C[i, j] * beta if beta != 0.0 else 0.0
            C[i, j] = alpha * total + previous
