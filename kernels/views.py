"""Views of the flat buffers that cost nothing to make, pass or drop.

Numba's ``reshape`` goes through a general helper that handles any strides
and costs about 55 ns per call; a training step of a small network takes a
dozen such views, which made reshaping most of its run time. A contiguous
1-D array needs none of that generality: its (rows, cols) view is the same
data pointer with two new strides.

Passing an array to a compiled function that is not inlined costs an atomic
increment and decrement of its reference count (about 20 ns a pair on the
virtual machines we measured), and a training step makes dozens of such
calls. ``borrowed`` drops the reference count from an array a kernel holds
for its whole run, and every view of it inherits that.
"""
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import make_array, populate_array

from kernels.config import inline_jit, jit


@intrinsic
def _matrix_view(typingctx, flat, rows, cols):
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    result = flat.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        flat_value, rows_value, cols_value = args
        source = make_array(signature.args[0])(context, builder, flat_value)
        view = make_array(result)(context, builder)
        rows_value = context.cast(builder, rows_value, signature.args[1], types.intp)
        cols_value = context.cast(builder, cols_value, signature.args[2], types.intp)
        itemsize = source.itemsize
        populate_array(view, data=source.data,
                       shape=cgutils.pack_array(builder, [rows_value, cols_value]),
                       strides=cgutils.pack_array(builder, [builder.mul(cols_value, itemsize), itemsize]),
                       itemsize=itemsize, meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, result, view._getvalue())

    return result(flat, rows, cols), codegen


@intrinsic
def borrowed(typingctx, array):
    """``array`` without its reference count, for use inside a kernel that
    keeps the original alive for longer than the result; never return it to
    Python."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        source = make_array(array)(context, builder, args[0])
        view = make_array(array)(context, builder)
        populate_array(view, data=source.data, shape=source.shape, strides=source.strides,
                       itemsize=source.itemsize, meminfo=None, parent=None)
        return view._getvalue()

    return array(array), codegen


@jit
def matrix_view(flat, start, rows, cols):
    """The (rows, cols) row-major view of ``flat[start:start + rows*cols]``.

    Parameters
    ----------
    flat : (n,) C-contiguous array
    start, rows, cols : int, with ``0 <= start`` and ``start + rows*cols <= n``
    """
    size = rows * cols
    if start < 0 or rows < 0 or cols < 0 or start + size > flat.shape[0]:
        raise IndexError("matrix_view: the view does not fit in the buffer")
    return _matrix_view(flat[start:start + size], rows, cols)


@inline_jit
def unchecked_view(flat, start, rows, cols):
    """``matrix_view`` for a caller that has checked that the view fits."""
    return _matrix_view(flat[start:start + rows * cols], rows, cols)


def rows_view(data, first, rows, like):
    """The view ``data[first:first + rows]``, of a 1-D or 2-D array, typed
    to match views of the 1-D buffer ``like`` that hold the same rows.

    Where ``data``'s dtype is not ``like``'s (arguments the kernels refuse
    at entry and fastbp never builds, so never at run time), it is an empty
    view of ``like``: the two cannot share a variable otherwise, and code
    that picks one or the other would not compile.
    """
    return data[first:first + rows]


@overload(rows_view, inline="always")
def _rows_view(data, first, rows, like):
    if data.dtype == like.dtype:
        return lambda data, first, rows, like: data[first:first + rows]
    if data.ndim == 1:
        return lambda data, first, rows, like: like[:0]
    return lambda data, first, rows, like: unchecked_view(like, 0, 0, data.shape[1])


def or_empty(array, empty):
    """``array``, or ``empty`` where it is None: an optional argument as an
    array, decided as the kernel compiles (a run-time choice would need the
    two to share a type, which arrays of another dtype, refused at run
    time, do not)."""
    return empty if array is None else array


@overload(or_empty, inline="always")
def _or_empty(array, empty):
    if isinstance(array, types.NoneType):
        return lambda array, empty: empty
    return lambda array, empty: array
