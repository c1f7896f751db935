"""Row-major matrix views of a contiguous stretch of a flat buffer.

Numba's ``reshape`` goes through a general helper that handles any strides
and costs about 55 ns per call; a training step of a small network takes a
dozen such views, which made reshaping most of its run time. A contiguous
1-D array needs none of that generality: its (rows, cols) view is the same
data pointer with two new strides.
"""
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from kernels.config import jit


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
