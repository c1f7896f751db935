"""Deprecated: the GPU backend is ``fastbp.backends.cuda``; this name keeps
working for one release."""
import warnings

from fastbp.backends.cuda import DEVICES, DeviceFit, as_device, check_device_memory, require_cuda  # noqa: F401

warnings.warn("fastbp.cuda is deprecated: import fastbp.backends.cuda", DeprecationWarning, stacklevel=2)
