"""Datasets for the command line: scikit-learn's embedded ones by name, or
files: CSV and Parquet read through Arrow into typed columns, .npz arrays,
and .npy arrays memory-mapped, so that data larger than memory trains.

Every reader checks what it reads and raises DataError, a message of one line
naming the file and the column, before anything is trained or written.
"""
import mmap
import os
import re

import numpy as np

# name -> (scikit-learn loader, task, standardise by default). The digits'
# pixels share one scale already, and z-scoring their rarely-lit corner
# pixels costs test accuracy; the others mix features of unlike units.
DATASETS = {
    "digits": ("load_digits", "classify", False),
    "breast_cancer": ("load_breast_cancer", "classify", True),
    "wine": ("load_wine", "classify", True),
    "iris": ("load_iris", "classify", True),
    "diabetes": ("load_diabetes", "regress", True),
}
TASKS = ("classify", "regress")
# integer-valued targets with at most this many distinct values are class labels
MAX_INFERRED_CLASSES = 20
EXTENSIONS = (".csv", ".parquet", ".npz", ".npy")
# rows per batch when a file is streamed (prediction)
BATCH_ROWS = 65536
# what training or preprocessing a memory-mapped file leaves resident of its
# pages before dropping them (see release)
RESIDENT_BYTES = 64 << 20
# what the kernel maps around a read of a mapped file's cached page (Linux's default)
FAULT_AROUND_BYTES = 64 << 10
# how each binary format begins; a CSV that begins so is one of them misnamed
_MAGIC = {".parquet": (b"PAR1", "a Parquet file"), ".npy": (b"\x93NUMPY", "a .npy array"),
          ".npz": (b"PK", "a zip archive (.npz)")}
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


class DataError(ValueError):
    """Input data that cannot be used, with a message fit for one line."""


def load_dataset(name):
    """(X, y, task) of one of scikit-learn's embedded datasets (no download)."""
    if name not in DATASETS:
        raise DataError(f"--dataset: unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    try:
        import sklearn.datasets
    except ImportError:
        raise DataError(f"--dataset {name} needs scikit-learn; install it with: pip install 'fastbp[sklearn]'") from None
    loader, task, _ = DATASETS[name]
    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y), task


def quoted(names):
    return ", ".join(repr(name) for name in names)


def kind_of(path, flag="--data"):
    """The extension of an existing data file whose first bytes agree with it."""
    if not os.path.isfile(path):
        raise DataError(f"{flag}: no file at {path!r}")
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        raise DataError(f"{flag}: {path!r} must be a .csv, .parquet, .npz or .npy file")
    with open(path, "rb") as stream:
        head = stream.read(8)
    if not head:
        raise DataError(f"{flag}: {path!r} is empty")
    if extension == ".csv":
        for other, (magic, what) in _MAGIC.items():
            if head.startswith(magic):
                raise DataError(f"{flag}: {path!r} is {what}, not a CSV file; give it the extension {other}")
    elif not head.startswith(_MAGIC[extension][0]):
        raise DataError(f"{flag}: {path!r} is not {_MAGIC[extension][1]} (it begins {head!r}); check the file, "
                        f"or give it the extension of what it is")
    return extension


# ---- Arrow tables: CSV and Parquet ------------------------------------------

def _arrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise DataError("reading CSV and Parquet needs pyarrow; install it with: pip install pyarrow") from None
    return pyarrow


def _is_numeric(pa, kind):
    types = pa.types
    return types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind) or types.is_decimal(kind)


def _is_text(pa, kind):
    types = pa.types
    if types.is_dictionary(kind):
        kind = kind.value_type
    return types.is_string(kind) or types.is_large_string(kind)


def _csv_error(pa, path, error, names, flag):
    """A one-line DataError for an Arrow error reading the CSV ``path``."""
    text = str(error)
    found = re.search(r"In CSV column #(\d+): CSV conversion error to \w+: invalid value '(.*)'", text)
    if found and names:
        name = names[int(found.group(1))]
        return DataError(f"{flag}: column {name!r} of {path!r} holds numbers and text such as "
                         f"{found.group(2)!r}; make it all numbers, or leave it out with --features")
    if "Expected" in text and "columns, got" in text:
        # Arrow's threaded reader does not know the row's line; a second,
        # sequential read of the file finds it
        rows = []
        options = pa.csv.ParseOptions(invalid_row_handler=lambda row: rows.append(row) or "error")
        try:
            pa.csv.read_csv(path, read_options=pa.csv.ReadOptions(use_threads=False), parse_options=options)
        except pa.ArrowInvalid:
            pass
        if rows:
            row = rows[0]
            line = f"line {row.number}" if row.number is not None else f"the row {row.text[:40]!r}"
            return DataError(f"{flag}: {path!r} is ragged or truncated: {line} has {row.actual_columns} fields, "
                             f"the header has {row.expected_columns}; fix or remove that row")
    return DataError(f"{flag}: cannot read {path!r} as CSV ({text.splitlines()[0]})")


def _csv_table(pa, path, float_type, flag, columns=None, target=None):
    """The CSV ``path`` as a table; columns that look numeric in the first
    block are read as ``float_type``, the target as float64 (Arrow's
    inference sees the first block only, so an integer column with a decimal
    further down would fail)."""
    convert = pa.csv.ConvertOptions(strings_can_be_null=True, include_columns=columns)
    try:
        head = pa.csv.open_csv(path, convert_options=convert).schema
    except pa.ArrowInvalid as error:
        raise _csv_error(pa, path, error, None, flag) from None
    types = {field.name: float_type for field in head
             if pa.types.is_integer(field.type) or pa.types.is_floating(field.type)}
    types.update({field.name: pa.string() for field in head if pa.types.is_null(field.type)})
    if target in types and types[target] == float_type:
        types[target] = pa.float64()
    convert.column_types = types
    try:
        return pa.csv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as error:
        raise _csv_error(pa, path, error, head.names, flag) from None


def _parquet_table(pa, path, flag, columns=None):
    try:
        return pa.parquet.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{flag}: cannot read {path!r} as Parquet ({str(error).splitlines()[0]})") from None


def typed_columns(pa, table, path, flag="--data"):
    """``table`` with every column numeric (floating or boolean) or text; a
    text column of numbers becomes numeric, one of numbers mixed with some
    text, or a column of any other type, is refused naming it."""
    compute = pa.compute
    for index, name in enumerate(table.column_names):
        column, kind = table.column(index), table.schema.field(index).type
        if pa.types.is_nested(kind):
            raise DataError(f"{flag}: column {name!r} of {path!r} is nested ({kind}); flatten it into plain "
                            f"columns, or leave it out with --features")
        if _is_numeric(pa, kind) or pa.types.is_null(kind):
            continue
        if not _is_text(pa, kind):
            raise DataError(f"{flag}: column {name!r} of {path!r} is {kind}, neither numeric nor categorical; "
                            f"convert it to numbers or text, or leave it out with --features")
        if pa.types.is_dictionary(kind):
            continue
        try:
            table = table.set_column(index, name, compute.cast(column, pa.float64()))
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        numbers = compute.match_substring_regex(column, _NUMBER)
        n_numbers, n_values = compute.sum(numbers).as_py() or 0, len(column) - column.null_count
        if 0 < n_values <= 2 * n_numbers:
            row = int(compute.index(numbers, False).as_py())
            line = f"line {row + 2}" if path.lower().endswith(".csv") else f"row {row}"
            raise DataError(f"--data: column {name!r} of {path!r} must be numeric; {line} has "
                            f"{column[row].as_py()!r}")
    return table


def header(path, extension, flag="--data"):
    """The column names of a CSV or Parquet file."""
    pa = _arrow()
    try:
        if extension == ".csv":
            return pa.csv.open_csv(path, convert_options=pa.csv.ConvertOptions(strings_can_be_null=True)).schema.names
        return pa.parquet.ParquetFile(path).schema_arrow.names
    except (pa.ArrowInvalid, OSError) as error:
        if extension == ".csv":
            raise _csv_error(pa, path, error, None, flag) from None
        raise DataError(f"{flag}: cannot read {path!r} as Parquet ({str(error).splitlines()[0]})") from None


def choose_columns(path, names, target=None, features=None, need_target=True, flag="--data"):
    """(feature columns, target column or None) among a file's column ``names``.

    ``target`` names the target column (absent and not ``need_target``: every
    column is a feature); ``features`` the feature columns, in that order
    (None: every other column, as they come)."""
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{flag}: {path!r} has more than one column named {quoted(twice)}; rename them")
    if target is not None and target not in names:
        if need_target:
            raise DataError(f"--target: {path!r} has no column {target!r}; its columns are {', '.join(names)}")
        target = None
    others = [name for name in names if name != target]
    chosen = others if features is None else list(features)
    missing = [name for name in chosen if name not in others]
    plural = "s" if len(missing) > 1 else ""
    if missing and need_target:
        raise DataError(f"--features: {path!r} has no column{plural} {quoted(missing)}; its columns are "
                        f"{', '.join(others)}")
    if missing:
        what = "CSV" if path.lower().endswith(".csv") else "Parquet file"
        raise DataError(f"{flag}: {path!r} lacks the model's column{plural} {quoted(missing)} (it has "
                        f"{quoted(names)}); rename the {what}'s columns to match, or give one with the columns the "
                        f"model was trained on")
    return chosen, target


def read_table(path, extension, target=None, features=None, float_type=None, flag="--data"):
    """(features table, target column) of a CSV or Parquet file, each
    feature column numeric or text, chosen as ``choose_columns`` says;
    ``float_type`` ("float32" or "float64") is the type a CSV's numeric
    columns are parsed to."""
    pa = _arrow()
    chosen, target = choose_columns(path, header(path, extension, flag), target, features, True, flag)
    columns = chosen + [target]
    if extension == ".csv":
        table = _csv_table(pa, path, pa.type_for_alias(float_type or "float64"), flag, columns, target)
    else:
        table = _parquet_table(pa, path, flag, columns)
    if table.num_rows == 0:
        raise DataError(f"{flag}: {path!r} has a header but no rows")
    table = typed_columns(pa, table, path, flag)
    return table.select(chosen), table.column(target)


def target_values(y, path, name):
    """A target column as a NumPy array: float64 for numbers, str for text;
    a missing value is refused."""
    pa = _arrow()
    missing = y.null_count
    if missing == len(y):
        raise DataError(f"--target: column {name!r} of {path!r} is all missing; choose the column that holds "
                        f"the targets")
    if missing:
        first = int(pa.compute.index(y.is_null(), True).as_py())
        raise DataError(f"--target: column {name!r} of {path!r} is missing in {missing} rows (first: row {first}); "
                        f"remove those rows")
    if pa.types.is_dictionary(y.type):
        y = y.cast(y.type.value_type)
    if _is_text(pa, y.type):
        return np.array(y.to_pylist(), dtype=str)
    return pa.compute.cast(y, pa.float64()).to_numpy()


def batches(path, extension, columns, types, rows=BATCH_ROWS, flag="--data"):
    """The file ``path`` as a stream of tables of at most about ``rows``
    rows with ``columns``, typed as ``types`` (name -> Arrow type), so that
    a file larger than memory goes through at constant memory."""
    pa = _arrow()
    if extension == ".csv":
        convert = pa.csv.ConvertOptions(strings_can_be_null=True, include_columns=columns, column_types=types)
        try:
            reader = pa.csv.open_csv(path, convert_options=convert)
            for batch in reader:
                yield typed_columns(pa, pa.Table.from_batches([batch]), path, flag)
        except pa.ArrowInvalid as error:
            raise _csv_error(pa, path, error, columns, flag) from None
        return
    try:
        parquet = pa.parquet.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield typed_columns(pa, pa.Table.from_batches([batch]), path, flag)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{flag}: cannot read {path!r} as Parquet ({str(error).splitlines()[0]})") from None


# ---- arrays: .npz and .npy ---------------------------------------------------

def read_arrays(path, extension, target=None, need_target=True):
    """(X, y or None) of a .npz (arrays X and y) or a .npy of features with
    ``target`` the path of a .npy of targets. A .npy is memory-mapped, not
    read: its rows are read as training gathers them."""
    try:
        if extension == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "X" not in archive.files or (need_target and "y" not in archive.files):
                    raise DataError(f"--data: {path!r} must hold arrays 'X' and 'y'; it holds "
                                    f"{', '.join(archive.files) or 'nothing'}")
                X, y = archive["X"], archive["y"] if "y" in archive.files else None
        else:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
            if target is None and need_target:
                raise DataError("--target: a .npy file of features needs --target PATH, a .npy file of targets")
            if target is not None and not os.path.isfile(target):
                raise DataError(f"--target: no file at {target!r}")
            y = np.load(target, allow_pickle=False) if target is not None else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"--data: cannot read {path!r} ({error})") from None
    if X.dtype.kind not in "biuf" or X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"--data: features must be a non-empty 2-D numeric array, got shape {X.shape} and "
                        f"dtype {X.dtype}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise DataError(f"--data: {X.shape[0]} samples of features but targets of shape {y.shape}")
    return X, y


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
