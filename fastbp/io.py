"""Deprecated: the file module is ``fastbp.files`` (reading) and
``fastbp.archive`` (the format and atomic writes); this name shadowed the
standard library's ``io``."""
import warnings

from fastbp.archive import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, MODEL_FORMAT, MODEL_VERSION,  # noqa: F401
                            MissingFileError, atomic_savez)
from fastbp.files import load, load_any, load_checkpoint  # noqa: F401

warnings.warn("fastbp.io is deprecated and will be removed in the next release; use fastbp.files (load, "
              "load_checkpoint, load_any) and fastbp.archive (atomic_savez, the format names)",
              DeprecationWarning, stacklevel=2)


def save_model(model, path):
    """Deprecated: ``model.save(path)``."""
    model.save(path)


def save_checkpoint(trainer, path):
    """Deprecated: ``trainer.save(path)``."""
    trainer.save(path)
