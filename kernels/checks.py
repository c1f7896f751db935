"""Argument checks run at the entry of every public kernel, in compiled code.

A kernel trusts the shapes it is given: a mismatch reads or writes past the
end of a buffer. Each public kernel therefore checks its arguments first and
then calls an unchecked twin (``_gemm`` for ``gemm``); the fused epoch calls
the twins, so a training step pays for no check.

Numba compiles one specialisation per combination of dtypes, so whether two
arrays share a dtype is known at compile time and costs nothing at run time.

Each check is a comparison inlined where it is made; the text of its error
is written by a function of its own, compiled once for all of them. Inlined,
those few lines of string building made most of a checking kernel's
compile time (a check is made dozens of times in the fused epoch's). A
constant string or integer is typed as a literal, and a function is
compiled once per literal it is given: ``_plain()`` and ``np.int64()`` hand
the error functions plain strings and integers instead.
"""
import numpy as np
from numba import types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from kernels.config import inline_jit, jit


@intrinsic
def _plain(typingctx, text):
    """``text`` typed as a plain string where it was a literal one (as
    ``str()`` would, without compiling Numba's ``str`` for strings)."""
    plain = types.unliteral(text)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], plain)
        return impl_ret_borrowed(context, builder, plain, value)

    return plain(text), codegen


def same_dtype(a, b):
    """Whether arrays ``a`` and ``b`` share a dtype (None matches anything)."""
    return a is None or b is None or a.dtype == b.dtype


@overload(same_dtype)
def _same_dtype(a, b):
    same = getattr(a, "dtype", None) is None or getattr(b, "dtype", None) is None or a.dtype == b.dtype
    return lambda a, b: same


def dtype_name(a):
    """The name of ``a``'s dtype, as NumPy spells it."""
    return str(a.dtype)


@overload(dtype_name)
def _dtype_name(a):
    name = str(getattr(a, "dtype", "None"))
    return lambda a: name


@jit
def shape_text(shape):
    """A shape written as NumPy writes it: ``(3, 4)``, ``(5,)``."""
    text = "("
    for i, size in enumerate(shape):
        # not +=: Numba compiles that concatenation apart from +'s, and
        # every kernel that can raise would carry both
        text = text + (", " if i > 0 else "") + str(size)
    return text + (",)" if len(shape) == 1 else ")")


@inline_jit
def check_dtype(kernel, name, a, reference_name, reference):
    """TypeError unless ``a`` has the dtype of ``reference``."""
    if not same_dtype(a, reference):
        _dtype_error(_plain(kernel), _plain(name), _plain(dtype_name(a)), _plain(reference_name),
                     _plain(dtype_name(reference)))


@jit
def _dtype_error(kernel, name, dtype, reference_name, reference_dtype):
    raise TypeError(kernel + ": " + name + " is " + dtype + " but " + reference_name + " is " + reference_dtype
                    + "; pass arrays of one dtype, e.g. " + name + ".astype(" + reference_name + ".dtype)")


@inline_jit
def check_size(kernel, name, a, axis, expected, expected_text):
    """ValueError unless ``a.shape[axis] == expected``; ``expected_text``
    says where ``expected`` comes from (``"W.shape[1]"``)."""
    if a.shape[axis] != expected:
        _size_error(_plain(kernel), _plain(name), a.shape, np.int64(axis), _plain(" must have "),
                    _plain(expected_text), np.int64(expected))


@inline_jit
def check_at_least(kernel, name, a, axis, minimum, expected_text):
    """ValueError unless ``a.shape[axis] >= minimum``."""
    if a.shape[axis] < minimum:
        _size_error(_plain(kernel), _plain(name), a.shape, np.int64(axis), _plain(" must have at least "),
                    _plain(expected_text), np.int64(minimum))


@jit
def _size_error(kernel, name, shape, axis, relation, expected_text, expected):
    what = " elements" if len(shape) == 1 else (" rows" if axis == 0 else " columns")
    raise ValueError(kernel + ": " + name + relation + expected_text + " = " + str(expected) + what
                     + ", got shape " + shape_text(shape))


@inline_jit
def check_same_shape(kernel, name, a, reference_name, reference):
    """ValueError unless ``a`` has ``reference``'s shape, TypeError unless
    its dtype."""
    if a.shape != reference.shape:
        _shape_error(_plain(kernel), _plain(name), a.shape, _plain(reference_name), reference.shape)
    check_dtype(kernel, name, a, reference_name, reference)


@jit
def _shape_error(kernel, name, shape, reference_name, reference_shape):
    raise ValueError(kernel + ": " + name + " must have the shape of " + reference_name + ", "
                     + shape_text(reference_shape) + ", got " + shape_text(shape))


@inline_jit
def check_indices(kernel, name, indices, stop, stop_text):
    """ValueError unless every entry of ``indices`` is in [0, stop)."""
    # a branch-free pass first: it vectorizes, the search for the culprit
    # runs only when there is one
    low, high = 0, stop - 1
    for i in range(indices.shape[0]):
        low, high = min(low, indices[i]), max(high, indices[i])
    if low < 0 or high >= stop:
        _index_error(_plain(kernel), _plain(name), indices, np.int64(stop), _plain(stop_text))


@jit
def _index_error(kernel, name, indices, stop, stop_text):
    for i in range(indices.shape[0]):
        if indices[i] < 0 or indices[i] >= stop:
            raise ValueError(kernel + ": " + name + "[" + str(i) + "] = " + str(indices[i]) + " is outside [0, "
                             + stop_text + " = " + str(stop) + ")")


def checked_dtype(a, reference):
    """``a``, once ``check_dtype`` has accepted it against ``reference``.

    A kernel that mixes the two in one variable cannot even be compiled for
    differing dtypes, and Numba types the code after a failing check too.
    For differing dtypes this returns an empty array of ``reference``'s
    dtype, never reached at run time since the check raised before.
    """
    return a


@overload(checked_dtype)
def _checked_dtype(a, reference):
    if a.dtype == reference.dtype:
        return lambda a, reference: a
    empty = (0,) * a.ndim
    return lambda a, reference: np.empty(empty, dtype=reference.dtype)
