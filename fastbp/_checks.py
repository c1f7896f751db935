"""Argument checks shared by every public entry point.

Each error names the argument, what was expected and what was received, and
is raised before anything is modified.
"""
import numbers
import os

import numba
import numpy as np

from fastbp.data import release
from kernels.step import all_finite_parallel

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}
# elements per block of the finite check, and the fewest it runs compiled
FINITE_BLOCK, FINITE_COMPILED = 1 << 22, 1 << 18


def describe(value):
    """A short description of a received value for error messages."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def as_dtype(name, value):
    """'float32' / 'float64' or the NumPy equivalents, as a NumPy dtype."""
    try:
        # np.dtype(None) is float64: a None here is a mistake, not a choice
        dtype = None if value is None else np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {describe(value)}")
    return dtype


def as_int(name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def as_seed(name, value):
    """None, a non-negative integer, or a NumPy Generator, BitGenerator or
    SeedSequence: what seeds NumPy's generators, checked before NumPy sees it."""
    if value is None or isinstance(value, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be None or a non-negative integer, got {describe(value)}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def as_path(name, value):
    """A file path as a str, from a str or an os.PathLike."""
    try:
        return os.fspath(value)
    except TypeError:
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got {describe(value)}") from None


def as_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number, optionally inside [low, high] (ends open on request)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be a finite number {span}, got {value}")
    return value


def as_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def as_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {describe(value)}")
    return value


# what to do with labels that are not integers 0..n_classes-1 yet
ENCODE_LABELS = ("encode the labels as integers 0..n_classes-1 first, e.g. classes, y = np.unique(y, "
                 "return_inverse=True), or sklearn.preprocessing.LabelEncoder")


def _as_numeric_array(name, value, hint=""):
    """``hint``: how to fix non-numeric input (e.g. strings), for the error."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {describe(value)} ({error})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {describe(array)}" + (f"; {hint}" if hint else ""))
    return array


def _check_finite(name, array):
    # in blocks of rows, each released once read: a memory-mapped X need not
    # fit in memory
    step = max(1, FINITE_BLOCK // max(1, array[:1].size))
    for start in range(0, max(array.shape[0], 1) if array.ndim else 1, step):
        block = array[start:start + step] if array.ndim else array
        finite = _all_finite(block)
        release(block)
        if not finite:
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(block))[0])
            where = (where[0] + start, *where[1:]) if array.ndim else where
            raise ValueError(f"{name} contains NaN or inf (first at index {where}: {array[where]})")


def _all_finite(block):
    """Whether ``block`` holds no NaN or inf. Large blocks of the dtypes the
    kernels take get a compiled pass split between the threads (NumPy's
    isfinite writes a mask and reads it back: three times slower on one
    thread); small ones, NumPy's, which needs no compilation on first use."""
    if block.size >= FINITE_COMPILED and block.dtype in (np.float32, np.float64) and block.flags.c_contiguous:
        return all_finite_parallel(block.reshape(-1), numba.get_num_threads())
    return bool(np.isfinite(block).all())


def as_matrix(name, value, dtype, n_columns=None, rows=None, column_name="features", hint=""):
    """A C-contiguous (rows, n_columns) float array of ``dtype``, all finite.

    Integer input and other float dtypes are converted, not rejected.
    """
    array = _as_numeric_array(name, value, hint)
    if array.ndim != 2:
        hint = " (use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one sample)" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_{column_name}), got {array.ndim}-D shape {array.shape}{hint}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {array.shape}")
    if n_columns is not None and array.shape[1] != n_columns:
        raise ValueError(f"{name} must have {n_columns} {column_name} per sample, got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows to match the prediction, got shape {array.shape}")
    if array.dtype.kind == "f" and array.dtype.itemsize > np.dtype(dtype).itemsize:
        _check_finite(name, array)
        _check_fits(name, array, dtype)
    array = _writeable(np.ascontiguousarray(array, dtype=dtype))
    _check_finite(name, array)
    return array


def _check_fits(name, array, dtype):
    # a finite float64 that overflows float32 would otherwise be reported as an inf the caller never passed
    limit = np.finfo(dtype).max
    beyond = np.abs(array) > limit
    if beyond.any():
        where = tuple(int(i) for i in np.argwhere(beyond)[0])
        raise ValueError(f"{name} holds {array[where]:g} at index {where}, beyond the range of {np.dtype(dtype).name} "
                         f"(±{limit:.3g}); scale the data down, or use a model with dtype='float64'")


def _writeable(array):
    # Numba compiles a second specialisation of every kernel for read-only
    # arrays (memory maps, broadcast views): a copy is far cheaper.
    return array if array.flags.writeable else array.copy()


def as_weights(name, value, length, what="sample", positive=False):
    """Weights as a contiguous float64 (length,) array: finite and >= 0
    (> 0 when ``positive``), with a positive sum; ``what`` names what each
    entry weighs (one per sample, one per class)."""
    array = _as_numeric_array(name, value, "")
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name} must hold one weight per {what} ({length}), got shape {array.shape}")
    array = np.array(array, dtype=np.float64)
    _check_finite(name, array)
    bad = array <= 0 if positive else array < 0
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} (each {what}'s weight), got "
                         f"{array[index]:g} at index {index}")
    if not array.sum() > 0:
        raise ValueError(f"{name} must have a positive sum, got all zeros: no {what} would count")
    return array


def as_labels(name, value, n_classes, rows=None):
    """Integer class labels in [0, n_classes) as a contiguous int64 (n,) array,
    ``n_classes`` being the model's number of outputs."""
    array = _as_numeric_array(name, value, ENCODE_LABELS)
    if array.ndim != 1:
        fix = ""
        if array.ndim == 2:
            fix = ("; for one column pass y.ravel() instead" if array.shape[1] == 1 else
                   "; for one-hot or probability rows pass their labels, y.argmax(axis=1), instead")
        raise ValueError(f"{name} must be 1-D class labels (n_samples,), got {array.ndim}-D shape {array.shape}{fix}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one label, got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} labels to match the prediction, got shape {array.shape}")
    if array.dtype.kind == "f":
        _check_finite(name, array)
        fractional = array != np.round(array)
        if fractional.any():
            bad = array[fractional][0]
            raise TypeError(f"{name} must hold integer class labels, got non-integer value {bad}")
    elif array.dtype.kind == "b":
        raise TypeError(f"{name} must hold integer class labels, got {describe(array)}")
    low, high = array.min(), array.max()
    if low < 0:
        raise ValueError(f"{name} must be class labels in [0, {n_classes}), got {low}; {ENCODE_LABELS}")
    if high >= n_classes:
        outputs = f"{n_classes} output" + ("s" if n_classes > 1 else "")
        binary = " (or, for two classes, BCEWithLogitsLoss with 0/1 targets)" if n_classes == 1 else ""
        raise ValueError(f"{name} must be class labels in [0, {n_classes}), got {high}: the model has {outputs}, "
                         f"one per class; labels up to {high} need a model with {high + 1} outputs "
                         f"(sizes[-1] = {high + 1}){binary}")
    return _writeable(np.ascontiguousarray(array, dtype=np.int64))
