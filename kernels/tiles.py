"""Matrix products written for this machine's vector registers.

``C = alpha * op(A) @ op(B) + beta * C`` is cut into tiles of ``ROWS`` rows
by ``VECTORS`` vector registers of columns, and every tile is one loop over
the inner dimension that keeps its ``ROWS * VECTORS`` sums in registers: per
step it loads one row of ``op(B)`` (``VECTORS`` vectors), broadcasts one
element of ``op(A)`` per row, and does ``ROWS * VECTORS`` fused multiply-adds.
The shape comes from the register file of the instruction set
``kernels.isa`` chose: AVX-512's 32 registers of 16 floats give 6 x 4
vectors (24 sums, 4 for the row of B, 1 broadcast), AVX2's 16 registers of
8 floats 6 x 2 (12 sums, 2 for B, 1 broadcast).

The tile is generated as LLVM vector code (Numba has no vector type), one
loop per shape of a tile at the edge (fewer rows, fewer vectors), with
masked loads and stores of C for the columns past the edge (B is packed,
padded with zeros to whole vectors).

Each sum runs over the inner dimension in order, in the arrays' precision,
and is added to ``beta * C`` once per ``DEPTH`` of the inner dimension:
the same numbers on every run and at every thread count (for one ISA: the
tile's shape decides where the sums of a panel start).
"""
import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import cfunc, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from kernels import isa
from kernels.checks import same_dtype
from kernels.config import inline_jit, jit, parallel_jit

# None when the target has no vector ISA with tiles, or FASTBP_ISA says
# none: the products then go to BLAS. The cache stamp carries the ISA.
ISA = isa.NAME
AVAILABLE = ISA is not None
VECTOR_BYTES, REGISTERS, _ = isa.ISAS[ISA or "avx2"]
ROWS, VECTORS = isa.tile_shape(VECTOR_BYTES, REGISTERS)
# Rows of op(B) packed at a time: a 256 x 64 float32 panel (64 KiB, AVX-512;
# 16 KiB on AVX2) streams from L2 at the rate the tile consumes it.
DEPTH = 256
# Rows of C (and of op(A)) taken at a time: a whole number of tiles
BLOCK_ROWS = 32 * ROWS


def lanes(itemsize):
    """Elements of one vector register."""
    return VECTOR_BYTES // itemsize


_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _splat(builder, value, vector_type):
    undefined = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undefined, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undefined, ir.Constant(ir.VectorType(_I32, vector_type.count), None))


def _declare(module, name, return_type, argument_types):
    return cgutils.get_or_insert_function(module, ir.FunctionType(return_type, argument_types), name)


class _Vectors:
    """The LLVM types and intrinsics of one element type's vector code."""

    def __init__(self, module, element):
        self.element = element
        self.itemsize = 4 if isinstance(element, ir.FloatType) else 8
        self.width = lanes(self.itemsize)
        self.name = "v%d%s" % (self.width, "f32" if self.itemsize == 4 else "f64")
        self.vector = ir.VectorType(element, self.width)
        self.pointer = self.vector.as_pointer()
        self.mask = ir.VectorType(ir.IntType(1), self.width)
        self.indices = ir.VectorType(_I64, self.width)
        self.zero = ir.Constant(self.vector, None)
        self.align = ir.Constant(_I32, self.itemsize)
        self._load = _declare(module, "llvm.masked.load.%s.p0" % self.name, self.vector,
                              [self.pointer, _I32, self.mask, self.vector])
        self._store = _declare(module, "llvm.masked.store.%s.p0" % self.name, ir.VoidType(),
                               [self.vector, self.pointer, _I32, self.mask])
        self.fma = _declare(module, "llvm.fma." + self.name, self.vector, [self.vector] * 3)

    def at(self, builder, base, offset):
        return builder.bitcast(builder.gep(base, [offset]), self.pointer)

    def load(self, builder, base, offset, mask):
        return builder.call(self._load, [self.at(builder, base, offset), self.align, mask, self.zero])

    def store(self, builder, value, base, offset, mask):
        builder.call(self._store, [value, self.at(builder, base, offset), self.align, mask])

    def lanes_below(self, builder, limit, first):
        """The mask of lanes first, first + 1, ... that are below limit."""
        iota = ir.Constant(self.indices, list(range(self.width)))
        return builder.icmp_signed("<", builder.add(iota, _splat(builder, first, self.indices)),
                                   _splat(builder, limit, self.indices))


def _external(context, builder, dtype, kind, argument_types, args, returns=False):
    """Call ``kind``'s compiled body for ``dtype`` by its symbol name (which
    returns an int64 if ``returns``)."""
    element = context.get_value_type(dtype)
    fn = _declare(builder.module, _symbol(kind, dtype), _I64 if returns else ir.VoidType(), [
        element.as_pointer() if t == "p" else element if t == "f" else _I64 for t in argument_types])
    result = builder.call(fn, args)
    return result if returns else context.get_dummy_value()


def _symbol(kind, dtype):
    return "fastbp_%s_%s" % (kind, "f32" if dtype == types.float32 else "f64")


def _inline(emit, typingctx, *args, returns=False):
    """``emit``'s code, written inline, over pointer, int64 and float
    arguments (the signature and codegen of an intrinsic); with ``returns``,
    the int64 that ``emit`` returns."""
    def codegen(context, builder, signature, values):
        result = emit(builder, _Vectors(builder.module, context.get_value_type(args[0].dtype)), *values)
        return result if returns else context.get_dummy_value()

    return (types.int64 if returns else types.void)(*args), codegen


@intrinsic
def _tile_body(typingctx, c, c_start, ldc, a, a_start, a_row, a_step, b, b_start, b_step, depth, rows, cols,
               alpha, beta, check):
    return _inline(_emit_tile, typingctx, c, c_start, ldc, a, a_start, a_row, a_step, b, b_start, b_step, depth,
                   rows, cols, alpha, beta, check, returns=True)


@intrinsic
def _pack_body(typingctx, pack, b, b_start, b_row, b_column, depth, cols):
    return _inline(_emit_pack, typingctx, pack, b, b_start, b_row, b_column, depth, cols)


def _data(context, builder, array_type, value, dtype):
    """The array's data as a pointer to ``dtype``. Kernels that check their
    arguments' dtypes when they run are compiled for every combination, so a
    product over mixed dtypes must compile; ``tiles_can_read`` keeps it from
    ever running."""
    data = context.make_array(array_type)(context, builder, value).data
    return builder.bitcast(data, context.get_value_type(dtype).as_pointer())


def _integers(context, builder, signature, args, positions):
    return [context.cast(builder, args[i], signature.args[i], types.int64) for i in positions]


@intrinsic
def _tile(typingctx, C, c_start, ldc, A, a_start, a_row, a_step, B, b_start, b_step, depth, rows, cols,
          alpha, beta, check):
    """``C[i, j] = alpha * sum_p A[i, p] * B[p, j] + beta * C[i, j]`` for
    ``i < rows <= ROWS``, ``j < cols <= VECTORS * lanes``, ``p < depth`` (>= 1),
    on flat element offsets into the three arrays' data:

    * ``C[i, j]`` is ``C.data[c_start + i * ldc + j]``,
    * ``A[i, p]`` is ``A.data[a_start + i * a_row + p * a_step]``,
    * ``B[p, j]`` is ``B.data[b_start + p * b_step + j]``, read a whole
      vector at a time: B's rows must be padded to a multiple of the vector
      length (``_pack_panel`` does that).

    ``beta == 0`` writes C without reading it (it may hold NaN). Returns 1
    if ``check`` (an int) is not 0 and an element written is NaN or
    infinite, else 0: the check runs on the tile's vectors while they are
    still in registers.
    """
    sig = types.int64(C, c_start, ldc, A, a_start, a_row, a_step, B, b_start, b_step, depth, rows, cols,
                      alpha, beta, check)

    def codegen(context, builder, signature, args):
        dtype = C.dtype
        values = ([_data(context, builder, C, args[0], dtype)] + _integers(context, builder, signature, args, (1, 2))
                  + [_data(context, builder, A, args[3], dtype)]
                  + _integers(context, builder, signature, args, (4, 5, 6))
                  + [_data(context, builder, B, args[7], dtype)]
                  + _integers(context, builder, signature, args, (8, 9, 10, 11, 12))
                  + [context.cast(builder, args[i], signature.args[i], dtype) for i in (13, 14)]
                  + _integers(context, builder, signature, args, (15,)))
        return _external(context, builder, dtype, "tile", _TILE_ARGUMENTS, values, returns=True)

    return sig, codegen


def _emit_tile(builder, vec, c_data, c_start, ldc, a_data, a_start, a_row, a_step, b_data, b_start, b_step,
               depth, rows, cols, alpha, beta, check):
    """One loop per tile shape (rows x vectors), chosen by a switch."""
    bad = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))
    masks = [vec.lanes_below(builder, cols, ir.Constant(_I64, v * vec.width)) for v in range(VECTORS)]
    vectors_used = builder.sdiv(builder.add(cols, ir.Constant(_I64, vec.width - 1)), ir.Constant(_I64, vec.width))
    shape = builder.add(builder.mul(builder.sub(rows, ir.Constant(_I64, 1)), ir.Constant(_I64, VECTORS)),
                        builder.sub(vectors_used, ir.Constant(_I64, 1)))
    done = builder.append_basic_block("done")
    switch = builder.switch(shape, done)
    for n_rows in range(1, ROWS + 1):
        for n_vectors in range(1, VECTORS + 1):
            block = builder.append_basic_block("tile%dx%d" % (n_rows, n_vectors))
            switch.add_case(ir.Constant(_I64, (n_rows - 1) * VECTORS + n_vectors - 1), block)
            builder.position_at_end(block)
            sums = _tile_loop(builder, vec, n_rows, n_vectors, a_data, a_start, a_row, a_step,
                              b_data, b_start, b_step, depth)
            _write_back(builder, vec, sums, masks, c_data, c_start, ldc, alpha, beta, check, bad)
            builder.branch(done)
    builder.position_at_end(done)
    return builder.load(bad)


def _tile_loop(builder, vec, n_rows, n_vectors, a_data, a_start, a_row, a_step, b_data, b_start, b_step, depth):
    """The loop over the inner dimension: returns the tile's sums."""
    entry = builder.block
    loop = builder.append_basic_block("loop")
    after = builder.append_basic_block("after")
    builder.branch(loop)
    builder.position_at_end(loop)
    p = builder.phi(_I64)
    p.add_incoming(ir.Constant(_I64, 0), entry)
    sums = [[builder.phi(vec.vector) for _ in range(n_vectors)] for _ in range(n_rows)]
    for row in sums:
        for total in row:
            total.add_incoming(vec.zero, entry)
    b_row = builder.add(b_start, builder.mul(p, b_step))
    b = [builder.load(vec.at(builder, b_data, builder.add(b_row, ir.Constant(_I64, v * vec.width))), align=4)
         for v in range(n_vectors)]
    a_column = builder.add(a_start, builder.mul(p, a_step))
    following = []
    for i in range(n_rows):
        a = builder.load(builder.gep(a_data, [builder.add(a_column, builder.mul(ir.Constant(_I64, i), a_row))]))
        a = _splat(builder, a, vec.vector)
        following.append([builder.call(vec.fma, [a, b[v], sums[i][v]]) for v in range(n_vectors)])
    p_next = builder.add(p, ir.Constant(_I64, 1))
    p.add_incoming(p_next, builder.block)
    for i in range(n_rows):
        for v in range(n_vectors):
            sums[i][v].add_incoming(following[i][v], builder.block)
    builder.cbranch(builder.icmp_signed("<", p_next, depth), loop, after)
    builder.position_at_end(after)
    return following


def _write_back(builder, vec, sums, masks, c_data, c_start, ldc, alpha, beta, check, bad):
    """C = alpha * sums + beta * C over the tile, C unread when beta is 0;
    with ``check`` not 0, ``bad`` (an int64 in memory) set to 1 if a value
    written is NaN or infinite."""
    alpha_v, beta_v = _splat(builder, alpha, vec.vector), _splat(builder, beta, vec.vector)
    with builder.if_else(builder.fcmp_unordered("!=", beta, ir.Constant(vec.element, 0.0))) as (read, overwrite):
        for reads_c in (True, False):
            with (read if reads_c else overwrite):
                written = []
                for i, row in enumerate(sums):
                    row_start = builder.add(c_start, builder.mul(ir.Constant(_I64, i), ldc))
                    for v, total in enumerate(row):
                        offset = builder.add(row_start, ir.Constant(_I64, v * vec.width))
                        value = builder.fmul(alpha_v, total)
                        if reads_c:
                            old = vec.load(builder, c_data, offset, masks[v])
                            value = builder.call(vec.fma, [beta_v, old, value])
                        vec.store(builder, value, c_data, offset, masks[v])
                        written.append((value, masks[v]))
                with builder.if_then(builder.icmp_signed("!=", check, ir.Constant(_I64, 0))):
                    # v - v is NaN exactly where v is NaN or infinite; lanes
                    # past the edge hold sums over B's zero padding, not C
                    found = None
                    for value, mask in written:
                        difference = builder.fsub(value, value)
                        nonfinite = builder.and_(builder.fcmp_unordered("!=", difference, difference), mask)
                        found = nonfinite if found is None else builder.or_(found, nonfinite)
                    any_lane = builder.icmp_unsigned("!=", builder.bitcast(found, ir.IntType(vec.width)),
                                                     ir.Constant(ir.IntType(vec.width), 0))
                    builder.store(builder.or_(builder.load(bad), builder.zext(any_lane, _I64)), bad)


def _transpose(builder, rows):
    """The columns of the square block whose rows are the vectors ``rows``:
    at each stage, pairs of vectors ``b`` apart swap their off-diagonal
    ``b``-wide chunks, for ``b`` = n/2, n/4, ..., 1."""
    n = len(rows)
    rows = list(rows)
    b = n // 2
    while b >= 1:
        low, high = [], []
        for chunk in range(0, n, 2 * b):
            low += [chunk + t for t in range(b)] + [n + chunk + t for t in range(b)]
            high += [chunk + b + t for t in range(b)] + [n + chunk + b + t for t in range(b)]
        low = ir.Constant(ir.VectorType(_I32, n), low)
        high = ir.Constant(ir.VectorType(_I32, n), high)
        for i in range(n):
            if (i // b) % 2 == 0:
                x, y = rows[i], rows[i + b]
                rows[i], rows[i + b] = builder.shuffle_vector(x, y, low), builder.shuffle_vector(x, y, high)
        b //= 2
    return rows


@intrinsic
def _pack_panel(typingctx, pack, B, b_start, b_row, b_column, depth, cols):
    """``pack[p * W + j] = B.data[b_start + p * b_row + j * b_column]`` for
    ``p < depth``, ``j < cols``, and 0 for ``cols <= j < W``, where
    ``W = VECTORS * lanes``: a panel of ``op(B)`` laid out as ``_tile`` reads
    it, whole vectors per row. One of ``b_row``, ``b_column`` must be 1.

    Rows of B with unit column step are copied a vector at a time. With a
    unit row step (a transposed B) each square block of a vector's length is
    read as rows and transposed in registers; it writes ``pack`` up to row
    ``depth`` rounded up to a whole vector, which must fit.
    """
    sig = types.void(pack, B, b_start, b_row, b_column, depth, cols)

    def codegen(context, builder, signature, args):
        values = ([_data(context, builder, pack, args[0], pack.dtype), _data(context, builder, B, args[1], pack.dtype)]
                  + _integers(context, builder, signature, args, range(2, 7)))
        return _external(context, builder, pack.dtype, "pack", _PACK_ARGUMENTS, values)

    return sig, codegen


def _emit_pack(builder, vec, pack_data, b_data, b_start, b_row, b_column, depth, cols):
    width = vec.width

    def constant(value):
        return ir.Constant(_I64, value)

    def write(row, v, value):
        offset = builder.add(builder.mul(row, constant(VECTORS * width)), constant(v * width))
        builder.store(value, vec.at(builder, pack_data, offset), align=4)

    column_masks = [vec.lanes_below(builder, cols, constant(v * width)) for v in range(VECTORS)]
    with builder.if_else(builder.icmp_signed("==", b_column, constant(1))) as (copy, transpose):
        with copy:
            with cgutils.for_range(builder, depth) as loop:
                row_start = builder.add(b_start, builder.mul(loop.index, b_row))
                for v in range(VECTORS):
                    value = vec.load(builder, b_data, builder.add(row_start, constant(v * width)), column_masks[v])
                    write(loop.index, v, value)
        with transpose:
            blocks = builder.sdiv(builder.add(depth, constant(width - 1)), constant(width))
            with cgutils.for_range(builder, blocks) as loop:
                first = builder.mul(loop.index, constant(width))
                depth_mask = vec.lanes_below(builder, depth, first)
                for v in range(VECTORS):
                    rows = []
                    for r in range(width):
                        j = v * width + r
                        inside = _splat(builder, builder.icmp_signed("<", constant(j), cols), vec.mask)
                        offset = builder.add(b_start, builder.add(builder.mul(constant(j), b_column), first))
                        rows.append(vec.load(builder, b_data, offset, builder.and_(depth_mask, inside)))
                    for r, column in enumerate(_transpose(builder, rows)):
                        write(builder.add(first, constant(r)), v, column)


_TILE_ARGUMENTS = "piipiiipiiiiiffi"
_PACK_ARGUMENTS = "ppiiiii"


def _tile_kernel(c, c_start, ldc, a, a_start, a_row, a_step, b, b_start, b_step, depth, rows, cols, alpha, beta,
                 check):
    return _tile_body(c, c_start, ldc, a, a_start, a_row, a_step, b, b_start, b_step, depth, rows, cols, alpha,
                      beta, check)


def _pack_kernel(pack, b, b_start, b_row, b_column, depth, cols):
    _pack_body(pack, b, b_start, b_row, b_column, depth, cols)


def _compile_bodies():
    """Compile the tile and the pack once per dtype, as C functions kept in
    Numba's cache, and make their addresses known by symbol name.

    Written inline, each kernel that multiplies matrices would carry and
    compile its own copy (seconds each); called by name, the compiled code
    of those kernels stays cacheable, and the symbols are there before any
    of it is loaded, because importing ``kernels`` runs this first."""
    compiled = []
    for dtype in (types.float32, types.float64) if AVAILABLE else ():
        for kind, kernel, spec, result in (("tile", _tile_kernel, _TILE_ARGUMENTS, types.int64),
                                           ("pack", _pack_kernel, _PACK_ARGUMENTS, types.void)):
            argument_types = [types.CPointer(dtype) if t == "p" else dtype if t == "f" else types.int64 for t in spec]
            function = cfunc(result(*argument_types), cache=True)(kernel)
            llvmlite.binding.add_symbol(_symbol(kind, dtype), function.address)
            compiled.append(function)
    return compiled


# kept alive: the symbols point into their code
_COMPILED = _compile_bodies()


@intrinsic
def _panel_buffer(typingctx, like):
    """A 1-D array on the stack of the calling function, of ``like``'s dtype,
    big enough for one packed panel (``DEPTH`` rows plus a vector's length of
    rows that the transposing pack may overrun) followed by one packed block
    of A (``BLOCK_ROWS x DEPTH``). Never return it."""
    if not isinstance(like, types.Array):
        return None
    result = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_value_type(like.dtype)
        itemsize = context.get_abi_sizeof(element)
        size = panel_size.py_func(itemsize) + BLOCK_ROWS * DEPTH
        data = cgutils.alloca_once(builder, element, size=ir.Constant(ir.IntType(64), size))
        data.align = VECTOR_BYTES
        array = make_array(result)(context, builder)
        populate_array(array, data=data, shape=cgutils.pack_array(builder, [context.get_constant(types.intp, size)]),
                       strides=cgutils.pack_array(builder, [context.get_constant(types.intp, itemsize)]),
                       itemsize=context.get_constant(types.intp, itemsize), meminfo=None, parent=None)
        return array._getvalue()

    return result(like), codegen


@inline_jit
def panel_size(itemsize):
    """Elements of a packed panel's buffer."""
    width = VECTOR_BYTES // itemsize  # lanes
    return (DEPTH + width) * VECTORS * width


@jit
def tiles_can_read(C, A, B):
    """Whether ``tile_gemm`` takes these arrays as they are: one dtype, C's
    rows contiguous, every step a non-negative multiple of the item size,
    and op(B) with a unit step along one of its dimensions."""
    if not (same_dtype(A, C) and same_dtype(B, C)):
        return False
    itemsize = C.itemsize
    for step in (C.strides[0], C.strides[1], A.strides[0], A.strides[1], B.strides[0], B.strides[1]):
        if step < 0 or step % itemsize != 0:
            return False
    if C.shape[1] > 1 and C.strides[1] != itemsize:
        return False
    return B.strides[0] == itemsize or B.strides[1] == itemsize


@jit
def tile_gemm(C, A, B, trans_a, trans_b, alpha, beta, row_first, row_end, column_first, column_end, check=False):
    """``C = alpha * op(A) @ op(B) + beta * C`` over the block
    ``C[row_first:row_end, column_first:column_end]``, for arrays that
    ``tiles_can_read``.

    Parameters are those of ``kernels.blas.gemm``; blocks that do not overlap
    can be computed by different threads at once. Returns False if
    ``check`` and an element of the block came out NaN or infinite, else
    True: the check costs a few instructions per tile, not a pass over C.
    """
    itemsize = C.itemsize
    k = A.shape[0] if trans_a else A.shape[1]
    ldc = C.strides[0] // itemsize
    a_row, a_step = A.strides[0] // itemsize, A.strides[1] // itemsize
    if trans_a:
        a_row, a_step = a_step, a_row
    b_row, b_column = B.strides[0] // itemsize, B.strides[1] // itemsize
    if trans_b:
        b_row, b_column = b_column, b_row
    buffer = _panel_buffer(C)
    width = VECTORS * (VECTOR_BYTES // itemsize)
    pack, a_pack = buffer[:panel_size(itemsize)], buffer[panel_size(itemsize):]
    # op(A) read down its unit-step dimension (dout.T of a weight gradient)
    # puts each step's broadcasts a row of A apart: where that is a multiple
    # of 4 KiB (a width of 1024 floats, say), every step's line falls in one
    # cache set, and every panel of B reads A again. Where eight panels or
    # more read it, such an A is packed BLOCK_ROWS rows at a time (192 x 256
    # floats: 192 KiB, in L2), once for all of them. Measured on AVX2, one
    # thread: 4096 x 4096 x 256 from 60-80 to 105-115 GFLOP/s, 1024 x 1024
    # x 512 from 80 to 100; with four panels (1024 x 64 x 512) the copy
    # costs more than it saves (88 -> 74), and at a 2 KiB step 5%.
    packs_a = (a_row == 1 and a_step != 1 and (a_step * itemsize) % 4096 == 0
               and column_end - column_first > 7 * width)
    bad = 0
    if packs_a:
        for r0 in range(row_first, row_end, BLOCK_ROWS):
            r_end = min(row_end, r0 + BLOCK_ROWS)
            for p0 in range(0, k, DEPTH):
                depth = min(DEPTH, k - p0)
                _pack_rows(a_pack, A, r0, r_end, p0, depth)
                for j0 in range(column_first, column_end, width):
                    bad |= _panel_tiles(C, ldc, a_pack, -r0 * depth, depth, np.int64(1), np.int64(ROWS), B,
                                        b_row, b_column, pack, width, alpha, beta, check, k, p0, depth, r0, r_end,
                                        j0, column_end)
    else:
        # a panel of C's columns at a time, over every depth of A in place:
        # the panel's strip of C stays in cache between the depths
        for j0 in range(column_first, column_end, width):
            for p0 in range(0, k, DEPTH):
                bad |= _panel_tiles(C, ldc, A, p0 * a_step, a_row, a_row, a_step, B, b_row, b_column, pack, width,
                                    alpha, beta, check, k, p0, min(DEPTH, k - p0), row_first, row_end, j0,
                                    column_end)
    return bad == 0


@inline_jit
def _panel_tiles(C, ldc, A, a_start, a_tile, a_row, a_step, B, b_row, b_column, pack, width, alpha, beta, check,
                 k, p0, depth, row_first, row_end, j0, column_end):
    """The tiles of rows ``row_first:row_end`` and the panel of columns
    from ``j0`` over the depth ``p0:p0 + depth``, with that panel of op(B)
    packed first; the tile of op(A)'s rows from ``i`` starts at
    ``a_start + i * a_tile``, its elements ``a_row`` and ``a_step`` apart.
    Returns 1 if ``check`` found a value written non-finite."""
    cols = min(width, column_end - j0)
    _pack_panel(pack, B, p0 * b_row + j0 * b_column, b_row, b_column, depth, cols)
    block_beta = beta if p0 == 0 else 1.0
    # the values of the last depth are C's
    last = np.int64(1 if check and p0 + depth == k else 0)
    bad = 0
    for i0 in range(row_first, row_end, ROWS):
        bad |= _tile(C, i0 * ldc + j0, ldc, A, a_start + i0 * a_tile, a_row, a_step, pack, 0, width, depth,
                     min(ROWS, row_end - i0), cols, alpha, block_beta, last)
    return bad


@inline_jit
def _pack_rows(a_pack, A, r0, r_end, p0, depth):
    """``a_pack[(i - r0) * depth + p * ROWS + r] = op(A)[i + r, p0 + p]``
    for the tiles ``i`` of rows ``r0:r_end``, where op(A) is ``A.T``
    (the only A that ``tile_gemm`` packs): each tile's steps in order,
    its rows side by side."""
    for i in range(r0, r_end, ROWS):
        rows = min(ROWS, r_end - i)
        start = (i - r0) * depth
        for p in range(depth):
            for r in range(rows):
                a_pack[start + p * ROWS + r] = A[p0 + p, i + r]


@jit
def tile_product(C, A, B, trans_a, trans_b, alpha, beta, threads, check=False):
    """``C = alpha * op(A) @ op(B) + beta * C`` for arrays that
    ``tiles_can_read``, on ``threads`` threads (the serial product when 1);
    returns ``tile_gemm``'s finite check of all of C."""
    # bool() and np.int64() drop the literal types of constant arguments: a
    # callee is compiled once per constant it is given, and these are costly
    trans_a, trans_b, check = bool(trans_a), bool(trans_b), bool(check)
    m, n = C.shape
    if threads > 1:
        return tile_gemm_parallel(C, A, B, trans_a, trans_b, alpha, beta, threads, check)
    return tile_gemm(C, A, B, trans_a, trans_b, alpha, beta, np.int64(0), m, np.int64(0), n, check)


@parallel_jit
def tile_gemm_parallel(C, A, B, trans_a, trans_b, alpha, beta, parts, check):
    """``tile_gemm`` over the whole of C, cut into ``parts`` blocks run on
    as many threads: by columns, a whole number of vectors each, where every
    part gets at least a panel's width, else by rows, a whole number of
    tiles each. Every element is summed as the serial product sums it, so the
    result does not depend on ``parts``. Returns ``tile_gemm``'s check of
    all of C."""
    m, n = C.shape
    width = VECTOR_BYTES // C.itemsize
    vectors = (n + width - 1) // width
    by_columns = vectors >= VECTORS * parts
    tiles = (m + ROWS - 1) // ROWS
    bad = 0
    for t in prange(parts):
        row_first, row_end, column_first, column_end = np.int64(0), m, np.int64(0), n
        if by_columns:
            column_first = vectors * t // parts * width
            column_end = min(n, vectors * (t + 1) // parts * width)
        else:
            row_first = tiles * t // parts * ROWS
            row_end = min(m, tiles * (t + 1) // parts * ROWS)
        if not tile_gemm(C, A, B, trans_a, trans_b, alpha, beta, row_first, row_end, column_first, column_end,
                         check):
            bad += 1
    return bad == 0
