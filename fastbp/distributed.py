"""Deprecated: data-parallel training across processes is
``fastbp.backends.distributed``; this name keeps working for one release."""
import warnings

from fastbp.backends.distributed import (  # noqa: F401
    DistributedTrainer, buckets, init, shard, shutdown,
)

warnings.warn("fastbp.distributed is deprecated: import fastbp.backends.distributed", DeprecationWarning,
              stacklevel=2)
