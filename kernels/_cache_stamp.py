"""One on-disk cache stamp for the whole ``kernels`` package.

Numba decides whether a cached compilation is still valid by looking at the
source file of the function alone. A kernel compiled from ``training.py``
inlines code from ``dense.py``, ``activations.py``, ... , so after an edit (or
an upgrade) of one of those, its cached machine code would go on running the
old version. Here every kernel's cache entry is stamped with a hash of every
source file of the package instead: any change anywhere recompiles everything.

Imported by ``kernels.config`` before any kernel is decorated, because Numba
picks a function's cache locator when the decorator runs.
"""
import hashlib
import os

from numba.core import caching

from kernels import isa

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _package_hash(root=_ROOT):
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as stream:
                    digest.update(stream.read())
    return digest.hexdigest()


# the tiles' instruction set is chosen at import (FASTBP_ISA) and compiled
# into every kernel that multiplies matrices
STAMP = _package_hash() + "-" + str(isa.NAME)


def _stamped(locator_class):
    """``locator_class`` with the package's stamp for files inside it."""

    class Stamped(locator_class):
        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(_ROOT + os.sep):
                return None  # not ours: the next locator in the list decides
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return STAMP

    Stamped.__name__ = Stamped.__qualname__ = f"Stamped{locator_class.__name__}"
    return Stamped


def install():
    """Put stamped twins of Numba's source-file locators first in its list
    (once); functions outside this package keep Numba's own behaviour."""
    # CacheImpl is named _CacheImpl before Numba 0.62
    cache_impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    classes = cache_impl._locator_classes
    if any(getattr(c, "_package_stamped", False) for c in classes):
        return
    twins = []
    for locator_class in classes:
        if issubclass(locator_class, caching._SourceFileBackedLocatorMixin):
            twin = _stamped(locator_class)
            twin._package_stamped = True
            twins.append(twin)
    classes[:0] = twins
