"""Argument checks shared by every public entry point.

Each error names the argument, what was expected and what was received, and
is raised before anything is modified.
"""
import numbers

import numpy as np

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def describe(value):
    """A short description of a received value for error messages."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def as_dtype(name, value):
    """'float32' / 'float64' or the NumPy equivalents, as a NumPy dtype."""
    try:
        dtype = np.dtype(value)
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


def _as_numeric_array(name, value):
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {describe(value)} ({error})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {describe(array)}")
    return array


def _check_finite(name, array):
    # in blocks of rows: a mask the size of a memory-mapped X would not fit
    step = max(1, (1 << 16) // max(1, array[:1].size))
    for start in range(0, max(array.shape[0], 1) if array.ndim else 1, step):
        block = array[start:start + step] if array.ndim else array
        bad = ~np.isfinite(block)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            where = (where[0] + start, *where[1:]) if array.ndim else where
            raise ValueError(f"{name} contains NaN or inf (first at index {where}: {array[where]})")


def as_matrix(name, value, dtype, n_columns=None, rows=None, column_name="features"):
    """A C-contiguous (rows, n_columns) float array of ``dtype``, all finite.

    Integer input and other float dtypes are converted, not rejected.
    """
    array = _as_numeric_array(name, value)
    if array.ndim != 2:
        hint = " (use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one sample)" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_{column_name}), got {array.ndim}-D shape {array.shape}{hint}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {array.shape}")
    if n_columns is not None and array.shape[1] != n_columns:
        raise ValueError(f"{name} must have {n_columns} {column_name} per sample, got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows to match the prediction, got shape {array.shape}")
    array = _writeable(np.ascontiguousarray(array, dtype=dtype))
    _check_finite(name, array)
    return array


def _writeable(array):
    # Numba compiles a second specialisation of every kernel for read-only
    # arrays (memory maps, broadcast views): a copy is far cheaper.
    return array if array.flags.writeable else array.copy()


def as_labels(name, value, n_classes, rows=None):
    """Integer class labels in [0, n_classes) as a contiguous int64 (n,) array."""
    array = _as_numeric_array(name, value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels (n_samples,), got {array.ndim}-D shape {array.shape}")
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
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must be class labels in [0, {n_classes}), got {bad}")
    return _writeable(np.ascontiguousarray(array, dtype=np.int64))
