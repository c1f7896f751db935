"""Argument checks run at the entry of every public kernel, in compiled code.

A kernel trusts the shapes it is given: a mismatch reads or writes past the
end of a buffer. Each public kernel therefore checks its arguments first and
then calls an unchecked twin (``_gemm`` for ``gemm``); the fused epoch calls
the twins, so a training step pays for no check.

Numba compiles one specialisation per combination of dtypes, so whether two
arrays share a dtype is known at compile time and costs nothing at run time.
"""
import numpy as np
from numba.extending import overload

from kernels.config import inline_jit, jit


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
def shape_text(a):
    """``a.shape`` written as NumPy writes it: ``(3, 4)``, ``(5,)``."""
    text = "("
    for i, size in enumerate(a.shape):
        text += (", " if i > 0 else "") + str(size)
    return text + (",)" if a.ndim == 1 else ")")


@inline_jit
def check_dtype(kernel, name, a, reference_name, reference):
    """TypeError unless ``a`` has the dtype of ``reference``."""
    if not same_dtype(a, reference):
        raise TypeError(kernel + ": " + name + " is " + dtype_name(a) + " but " + reference_name + " is "
                        + dtype_name(reference) + "; pass arrays of one dtype, e.g. " + name + ".astype("
                        + reference_name + ".dtype)")


@inline_jit
def check_size(kernel, name, a, axis, expected, expected_text):
    """ValueError unless ``a.shape[axis] == expected``; ``expected_text``
    says where ``expected`` comes from (``"W.shape[1]"``)."""
    if a.shape[axis] != expected:
        what = " elements" if a.ndim == 1 else (" rows" if axis == 0 else " columns")
        raise ValueError(kernel + ": " + name + " must have " + expected_text + " = " + str(expected) + what
                         + ", got shape " + shape_text(a))


@inline_jit
def check_at_least(kernel, name, a, axis, minimum, expected_text):
    """ValueError unless ``a.shape[axis] >= minimum``."""
    if a.shape[axis] < minimum:
        what = " elements" if a.ndim == 1 else (" rows" if axis == 0 else " columns")
        raise ValueError(kernel + ": " + name + " must have at least " + expected_text + " = " + str(minimum)
                         + what + ", got shape " + shape_text(a))


@inline_jit
def check_same_shape(kernel, name, a, reference_name, reference):
    """ValueError unless ``a`` has ``reference``'s shape, TypeError unless
    its dtype."""
    if a.shape != reference.shape:
        raise ValueError(kernel + ": " + name + " must have the shape of " + reference_name + ", "
                         + shape_text(reference) + ", got " + shape_text(a))
    check_dtype(kernel, name, a, reference_name, reference)


@inline_jit
def check_indices(kernel, name, indices, stop, stop_text):
    """ValueError unless every entry of ``indices`` is in [0, stop)."""
    # a branch-free pass first: it vectorizes, the search for the culprit
    # runs only when there is one
    low, high = 0, stop - 1
    for i in range(indices.shape[0]):
        low, high = min(low, indices[i]), max(high, indices[i])
    if low >= 0 and high < stop:
        return
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
