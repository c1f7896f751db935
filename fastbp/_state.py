"""Checks shared by the ``load_state_dict`` methods: each names the key, what
was expected and what was received, before anything is changed."""
import numpy as np

from fastbp._checks import describe


def check_keys(name, state, expected):
    """``state`` is a dict with exactly the keys ``expected``."""
    if not isinstance(state, dict):
        raise TypeError(f"{name} must be a dict (from state_dict()), got {describe(state)}")
    missing, unknown = [k for k in expected if k not in state], sorted(set(state) - set(expected), key=str)
    if missing or unknown:
        raise KeyError(f"{name}: expected the keys {list(expected)}; missing {missing}, unknown {unknown}")


def as_state_array(name, value, shape, dtype):
    """A copy of ``value``, an array of exactly ``shape`` and ``dtype``
    (no conversion: a state of another dtype would change the numbers)."""
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape) or value.dtype != dtype:
        raise ValueError(f"{name} must be an array of shape {tuple(shape)} and dtype {np.dtype(dtype).name}, "
                         f"got {describe(value)}")
    return value.copy()


def check_equal(name, value, expected, advice):
    """``value`` is ``expected``: what a state cannot change in an object
    already built (its layer sizes, its kind)."""
    if value != expected:
        raise ValueError(f"{name}: expected {expected!r}, got {value!r}; {advice}")
    return value
