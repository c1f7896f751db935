"""Data for training and prediction: files read and checked (``sources``:
embedded datasets, .npz and .npy arrays; ``tables``: CSV and Parquet through
Arrow), and, here, what training needs of them in memory: memory-mapped
matrices read a region at a time, and class labels.

Every reader checks what it reads and raises DataError, a message of one line
naming the file and the column, before anything is trained or written. The
readers' names are importable from ``fastbp.data`` itself.
"""
import mmap

import numpy as np

# the readers, so that callers reach every name through ``fastbp.data``
from fastbp.data.errors import DataError, quoted  # noqa: F401
from fastbp.data.sources import (  # noqa: F401
    BATCH_ROWS, DATASETS, EXTENSIONS, TASKS, kind_of, load_dataset, read_arrays,
)
from fastbp.data.tables import (  # noqa: F401
    _is_text, batches, choose_columns, header, read_table, target_values, typed_columns, weight_values,
)

# integer-valued targets with at most this many distinct values are class labels
MAX_INFERRED_CLASSES = 20
# what training or preprocessing a memory-mapped file leaves resident of its
# pages before dropping them (see release)
RESIDENT_BYTES = 64 << 20
# what the kernel maps around a read of a mapped file's cached page (Linux's default)
FAULT_AROUND_BYTES = 64 << 10

# ---- memory-mapped arrays ----------------------------------------------------

def file_mapping(array):
    """The mmap under ``array`` when it is a view of a shared file mapping (a
    .npy opened with mmap_mode "r", a memmap "w+"), else None (a
    copy-on-write map included: its pages are the only copy of its writes)."""
    mapping, shared = array, False
    while isinstance(mapping, np.ndarray):
        shared = shared or (isinstance(mapping, np.memmap) and mapping.mode in ("r", "r+", "w+"))
        mapping = mapping.base
    return mapping if shared and isinstance(mapping, mmap.mmap) and hasattr(mapping, "madvise") else None


def release(array):
    """Drop this process's resident pages of ``array``, a view of a shared
    file mapping (anything else is left alone), so that reading a large
    mapped file a stretch at a time keeps memory bounded: the page cache
    keeps the data (written pages included), so the next read of them is a
    minor fault, not a disk read."""
    mapping = file_mapping(array)
    if mapping is None or array.size == 0:
        return
    begin = np.frombuffer(mapping, np.uint8).ctypes.data
    low, high = np.lib.array_utils.byte_bounds(array)
    # a read maps the cached pages around it too, on either side
    low = max(begin, low - FAULT_AROUND_BYTES)
    low -= (low - begin) % mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, low - begin, min(high + FAULT_AROUND_BYTES, begin + len(mapping)) - low)


def mapped_rows(X, batch_size):
    """Rows of the mapped ``X`` (n, n_columns) that training gathers into
    memory at a time (``gather``): a multiple of ``batch_size`` taking at
    most half of RESIDENT_BYTES (as does the region ``gather`` reads)."""
    return max(1, RESIDENT_BYTES // 2 // max(X[:1].nbytes, 1) // batch_size) * batch_size


def gather(X, rows, out):
    """``out[:len(rows)] = X[rows]`` for a mapped ``X``, bounded in memory.

    Read at random, every row costs a page fault, and each fault maps a
    page or a whole cached folio (up to a megabyte) around the row. So the
    rows are read a region of RESIDENT_BYTES / 2 of the file at a time, and each
    region's pages are dropped (``release``) before the next: one region
    stays resident at most. Rows are grouped by region with a stable radix
    sort of their region numbers, cheaper than sorting the rows."""
    per_region = max(1, RESIDENT_BYTES // 2 // max(X[:1].nbytes, 1))
    regions = rows // per_region
    small = X.shape[0] // per_region < 2 ** 16  # numpy sorts 16-bit keys by radix
    where = np.argsort(regions.astype(np.uint16) if small else regions, kind="stable")
    ends = np.cumsum(np.bincount(regions, minlength=(X.shape[0] + per_region - 1) // per_region))
    start = 0
    for region, end in enumerate(ends):
        if end > start:
            part = where[start:end]
            out[part] = X[rows[part]]
            release(X[region * per_region:(region + 1) * per_region])
            start = end


def scratch_matrix(n, n_columns, dtype):
    """An (n, n_columns) array in an anonymous temporary file, mapped: data
    larger than memory fits, and ``release`` bounds what stays resident.
    Its pages are cached one by one (MADV_RANDOM as it is written): large
    pages would map a megabyte or so around each row read at random."""
    import tempfile

    matrix = np.memmap(tempfile.TemporaryFile(), dtype=dtype, mode="w+", shape=(n, n_columns))
    if hasattr(matrix.base, "madvise"):
        matrix.base.madvise(mmap.MADV_RANDOM)
    return matrix


# ---- targets -------------------------------------------------------------------

def infer_task(y):
    """'classify' for string labels or few integer values, else 'regress'."""
    if y.dtype.kind in "USO" or y.dtype.kind == "b":
        return "classify"
    if y.ndim == 1 and (y.dtype.kind in "iu" or np.all(np.mod(y, 1) == 0)) and len(distinct(y)) <= MAX_INFERRED_CLASSES:
        return "classify"
    return "regress"


def distinct(y, rows=None):
    """The sorted distinct values of ``y`` (n,) (of its ``rows`` when given),
    found a block at a time: the labels of a large file are never copied whole."""
    n = len(y) if rows is None else len(rows)
    blocks = (y[start:start + BATCH_ROWS] if rows is None else y[rows[start:start + BATCH_ROWS]]
              for start in range(0, n, BATCH_ROWS))
    return np.unique(np.concatenate([np.unique(y[:0])] + [np.unique(block) for block in blocks]))


def class_list(y, rows=None):
    """The sorted distinct labels (of the ``rows`` of ``y`` when given) as
    JSON-ready values (str, int or float)."""
    values = distinct(y, rows)
    if values.dtype.kind in "USO":
        return [str(v) for v in values]
    if np.all(np.mod(values, 1) == 0):
        return [int(v) for v in values]
    return [float(v) for v in values]


def encode_labels(y, classes):
    """Labels (n,) as indices into the sorted ``classes``; an unseen label is an error."""
    if y.ndim != 1:
        raise DataError(f"--data: class labels must be one column, got targets of shape {y.shape}")
    text = isinstance(classes[0], str)
    known = np.array(classes, dtype=str if text else np.float64)
    values = y.astype(str) if text else y.astype(np.float64)
    index = np.minimum(np.searchsorted(known, values), len(known) - 1)
    unseen = known[index] != values
    if unseen.any():
        shown = ", ".join(repr(v) for v in np.unique(values[unseen])[:5].tolist())
        raise DataError(f"--data: labels {shown} are not among the model's classes {classes[:10]}")
    return index.astype(np.int64)
