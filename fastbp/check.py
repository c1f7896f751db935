"""Deprecated: ``fastbp check`` and its tolerances moved to ``fastbp.cli.check``."""
import warnings

from fastbp.cli.check import ACTIVATIONS, LOSSES, OPTIMIZERS, SIZES, TOLERANCE, error_ratio, report, rows  # noqa: F401

warnings.warn("fastbp.check is deprecated; use fastbp.cli.check", DeprecationWarning, stacklevel=2)
