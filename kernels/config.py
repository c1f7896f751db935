"""The one place where the compilation options of every kernel are decided.

fastmath stays off: it lets LLVM assume no NaN or inf, which would hide exactly
the non-finite values our callers are promised to hear about, and it reorders
floating-point sums, which would break the number-for-number agreement with
torch that the tests hold us to.

``cache=True`` writes compiled machine code next to the sources, so a second
process skips compilation; a change to any file of the package invalidates
every kernel's cache entry (``kernels._cache_stamp``). ``nogil=True`` lets a
caller run kernels from several Python threads.
"""
from numba import njit

from kernels import _cache_stamp

# before any kernel is decorated: see kernels/_cache_stamp.py
_cache_stamp.install()

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

jit = njit(**JIT_OPTIONS)
