"""General matrix multiply on row-major arrays through the BLAS that NumPy's
``np.dot`` uses inside Numba (SciPy's), without allocating.

``np.dot(a, b, out)`` inside ``@njit`` cannot accumulate (it always passes
beta=0) and cannot read a transposed operand without a copy; training needs
both (``dW += dout.T @ x``). Numba's own helper library already exports the
``?gemm`` entry point it uses for ``np.dot``; calling it directly gives the
full ``C = alpha * op(A) @ op(B) + beta * C`` and keeps the kernels cacheable,
because the symbol is resolved by name when the cache is loaded.
"""
import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from kernels.checks import check_dtype, check_size
from kernels.config import PARALLEL_GEMM, inline_jit, jit, thread_count
from kernels.tiles import AVAILABLE as TILES, tile_product, tiles_can_read

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
    Returns Numba's status: 0, or nonzero when no ?gemm could be loaded.
    """
    dtype = a.dtype
    sig = types.int32(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

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
        return builder.call(fn, (
            kind, flag(transa_v), flag(transb_v),
            as_intp(m_t, m_v), as_intp(n_t, n_v), as_intp(k_t, k_v),
            slot(alpha_t, alpha_v), data(a_t, a_v), as_intp(lda_t, lda_v),
            data(b_t, b_v), as_intp(ldb_t, ldb_v), slot(beta_t, beta_v),
            data(c_t, c_v), as_intp(ldc_t, ldc_v)))

    return sig, codegen


@inline_jit
def _blas_view(a, trans):
    """How BLAS can read ``a``: ``(ld, trans)`` such that ``a``'s memory is a
    row-major array with ``ld`` elements between rows and ``op(a)`` is that
    array, transposed when ``trans``; ``ld`` is -1 when there is none.

    A row-contiguous ``a`` is read as is; a column-contiguous (Fortran-ordered)
    one is the row-major ``a.T``, so it is read with the transpose flag flipped.
    BLAS needs ``ld`` at least the row length: rows that overlap (a sliding
    window, a broadcast with stride 0) or strided columns have no such view.
    """
    rows, cols = a.shape
    itemsize = a.itemsize
    row_step, column_step = a.strides[0], a.strides[1]
    if cols <= 1 or column_step == itemsize:
        ld = row_step // itemsize if rows > 1 else cols
        if row_step % itemsize == 0 and ld >= max(cols, 1):
            return ld, trans
    if rows <= 1 or row_step == itemsize:
        ld = column_step // itemsize if cols > 1 else rows
        if column_step % itemsize == 0 and ld >= max(rows, 1):
            return ld, not trans
    return -1, trans


@inline_jit
def overlaps_itself(a):
    """Whether two elements of the 2-D array ``a`` share memory."""
    rows, cols = a.shape
    row_step, column_step = abs(a.strides[0]), abs(a.strides[1])
    if rows == 0 or cols == 0:
        return False
    if rows > 1 and row_step == 0 or cols > 1 and column_step == 0:
        return True
    if rows == 1 or cols == 1:
        return False
    # i * row_step == j * column_step has its smallest solution at
    # i = column_step / g, j = row_step / g
    g = math.gcd(row_step, column_step)
    return column_step // g < rows and row_step // g < cols


@jit
def gemm(C, A, B, trans_a, trans_b, alpha, beta):
    """``C = alpha * op(A) @ op(B) + beta * C`` for 2-D arrays, in place.

    Parameters
    ----------
    C : (m, n) array, written (read too when ``beta != 0``); no two of its
        elements may share memory
    A : (m, k) array, or (k, m) when ``trans_a``
    B : (k, n) array, or (n, k) when ``trans_b``
    trans_a, trans_b : bool
    alpha, beta : float

    All three arrays share one dtype (float32 or float64). An array whose rows
    are contiguous with a row stride of at least its row length, or whose
    columns are contiguous with a column stride of at least its column length
    (Fortran order), goes to BLAS as it is. Any other layout (strided columns
    and rows, overlapping rows such as a sliding window or a broadcast), and
    products too small to be worth a BLAS call, go through plain loops.

    Raises
    ------
    ValueError
        if elements of C share memory; C is left unchanged
    TypeError, ValueError
        if the arrays' dtypes or shapes disagree; C is left unchanged
    RuntimeError
        if BLAS reports a failure
    """
    kernel = "gemm"
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    check_size(kernel, "A", A, 1 if trans_a else 0, m, "C.shape[0] (m)")
    check_size(kernel, "B", B, 1 if trans_b else 0, k, "the inner dimension of op(A) (k)")
    check_size(kernel, "B", B, 0 if trans_b else 1, n, "C.shape[1] (n)")
    check_dtype(kernel, "A", A, "C", C)
    check_dtype(kernel, "B", B, "C", C)
    _gemm(C, A, B, trans_a, trans_b, alpha, beta)


@inline_jit
def _gemm(C, A, B, trans_a, trans_b, alpha, beta, check=False):
    """``gemm`` without its argument checks, for callers whose shapes agree
    by construction. Returns False if ``check`` and an element of C came
    out NaN or infinite, else True."""
    # bool() drops the literal types of constant flags: the product below is
    # compiled once, not once per combination of flags its callers write
    # (a second each, and again in every kernel that calls it)
    return _gemm_body(C, A, B, bool(trans_a), bool(trans_b), alpha, beta, bool(check))


@jit
def _gemm_body(C, A, B, trans_a, trans_b, alpha, beta, check):
    if overlaps_itself(C):
        raise ValueError("gemm: C overlaps itself (a stride of 0, or rows that share memory, as a broadcast "
                         "or sliding-window view has); write into an array of its own, e.g. np.empty((m, n))")
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return True
    if TILES and k > 0 and m * n * k >= SMALL_GEMM and tiles_can_read(C, A, B):
        # the tiles check C as they write it
        return tile_product(C, A, B, trans_a, trans_b, alpha, beta,
                            thread_count() if m * n * k >= PARALLEL_GEMM else 1, check)
    lda, trans_a_memory = _blas_view(A, trans_a)
    ldb, trans_b_memory = _blas_view(B, trans_b)
    ldc, c_transposed = _blas_view(C, False)
    if lda < 0 or ldb < 0 or ldc < 0 or k == 0 or m * n * k < SMALL_GEMM:
        _gemm_loops(C, A, B, trans_a, trans_b, alpha, beta)
        return not check or finite_matrix(C)
    # BLAS is column-major, and a column-major matrix is the row-major array
    # of its transpose. A row-major C is the column-major C.T, so we ask for
    # C.T = op(B).T @ op(A).T: the call with A and B swapped. A Fortran-ordered
    # C is column-major already: the call in the order written, where each
    # row-major operand is read transposed.
    if c_transposed:
        status = _xxgemm(not trans_a_memory, not trans_b_memory, m, n, k, C.dtype.type(alpha), A, lda, B, ldb,
                         C.dtype.type(beta), C, ldc)
    else:
        status = _xxgemm(trans_b_memory, trans_a_memory, n, m, k, C.dtype.type(alpha), B, ldb, A, lda,
                         C.dtype.type(beta), C, ldc)
    if status != 0:
        raise RuntimeError("gemm: the BLAS ?gemm that NumPy's np.dot uses in Numba could not be called; "
                           "check that SciPy is installed and imports")
    return not check or finite_matrix(C)


@inline_jit
def all_finite(values):
    """True when no element of the 1-d ``values`` is NaN or infinite.

    ``v - v`` is NaN exactly for NaN and +-inf; or-ing comparisons is an
    integer reduction, which the compiler vectorises with fastmath off (a
    floating-point sum would not be): a pass costs about what an SGD update
    reads.
    """
    bad = False
    for i in range(values.shape[0]):
        d = values[i] - values[i]
        bad |= d != d
    return not bad


@inline_jit
def finite_matrix(C):
    """``all_finite`` over the rows of the 2-D ``C``."""
    for i in range(C.shape[0]):
        if not all_finite(C[i]):
            return False
    return True


@jit
def _gemm_loops(C, A, B, trans_a, trans_b, alpha, beta):
    # op(A) and op(B) as views (of any layout): one loop for every pair of
    # flags, where a branch on them inside the loop gave LLVM four loops to
    # unroll, compiled again in every kernel that calls a product
    op_a = A.T if trans_a else A
    op_b = B.T if trans_b else B
    m, n = C.shape
    k = op_a.shape[1]
    for i in range(m):
        for j in range(n):
            total = 0.0
            for p in range(k):
                total += op_a[i, p] * op_b[p, j]
            previous = C[i, j] * beta if beta != 0.0 else 0.0
            C[i, j] = alpha * total + previous
