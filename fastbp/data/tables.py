"""CSV and Parquet files read through Arrow into typed columns, whole or in
batches, each column checked to be numeric or text."""
import re

import numpy as np

from fastbp.data.errors import DataError, quoted
from fastbp.data.sources import BATCH_ROWS

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


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


def choose_columns(path, names, target=None, features=None, need_target=True, flag="--data", weight=None):
    """(feature columns, target column or None) among a file's column ``names``.

    ``target`` names the target column (absent and not ``need_target``: every
    column is a feature); ``features`` the feature columns, in that order
    (None: every other column, as they come, but the ``weight`` column)."""
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{flag}: {path!r} has more than one column named {quoted(twice)}; rename them")
    if target is not None and target not in names:
        if need_target:
            raise DataError(f"--target: {path!r} has no column {target!r}; its columns are {', '.join(names)}")
        target = None
    if weight is not None and (weight not in names or weight == target):
        raise DataError(f"--sample-weight: {path!r} has no column {weight!r} other than the target; its columns "
                        f"are {', '.join(names)}")
    others = [name for name in names if name not in (target, weight)]
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


def read_table(path, extension, target=None, features=None, float_type=None, flag="--data", weight=None):
    """(features table, target column, weight column or None) of a CSV or
    Parquet file, each feature column numeric or text, chosen as
    ``choose_columns`` says; ``float_type`` ("float32" or "float64") is the
    type a CSV's numeric columns are parsed to."""
    pa = _arrow()
    chosen, target = choose_columns(path, header(path, extension, flag), target, features, True, flag, weight)
    columns = chosen + [target] + ([weight] if weight is not None else [])
    if extension == ".csv":
        table = _csv_table(pa, path, pa.type_for_alias(float_type or "float64"), flag, columns, target)
    else:
        table = _parquet_table(pa, path, flag, columns)
    if table.num_rows == 0:
        raise DataError(f"{flag}: {path!r} has a header but no rows")
    table = typed_columns(pa, table, path, flag)
    return table.select(chosen), table.column(target), None if weight is None else table.column(weight)


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


def weight_values(w, path, name):
    """A sample-weight column as a float64 array: numbers >= 0, none
    missing, not all zero."""
    pa = _arrow()
    where = f"--sample-weight: column {name!r} of {path!r}"
    if not pa.types.is_integer(w.type) and not pa.types.is_floating(w.type):
        raise DataError(f"{where} must hold numbers, got {w.type}")
    if w.null_count:
        first = int(pa.compute.index(w.is_null(), True).as_py())
        raise DataError(f"{where} is missing in {w.null_count} rows (first: row {first}); fill them in or remove "
                        f"those rows")
    values = pa.compute.cast(w, pa.float64()).to_numpy()
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{where} must hold finite weights >= 0, got {values[first]:g} in row {first}")
    if not values.sum() > 0:
        raise DataError(f"{where} is all zeros: no row would count")
    return values


def _typed_batch(pa, batch, path, flag, as_read):
    """A batch's columns checked and typed as ``typed_columns``, but for
    those ``as_read``, left as they are."""
    table = pa.Table.from_batches([batch])
    typed = typed_columns(pa, table.drop_columns(list(as_read)), path, flag)
    return pa.table({name: table.column(name) if name in as_read else typed.column(name)
                     for name in table.column_names}) if as_read else typed


def batches(path, extension, columns, types, rows=BATCH_ROWS, flag="--data", as_read=()):
    """The file ``path`` as a stream of tables of at most about ``rows``
    rows with ``columns``, typed as ``types`` (name -> Arrow type), so that
    a file larger than memory goes through at constant memory. The columns
    ``as_read`` are left as the file holds them (a CSV's as text)."""
    pa = _arrow()
    if extension == ".csv":
        convert = pa.csv.ConvertOptions(strings_can_be_null=True, include_columns=columns, column_types=types)
        try:
            reader = pa.csv.open_csv(path, convert_options=convert)
            for batch in reader:
                yield _typed_batch(pa, batch, path, flag, as_read)
        except pa.ArrowInvalid as error:
            raise _csv_error(pa, path, error, columns, flag) from None
        return
    try:
        parquet = pa.parquet.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield _typed_batch(pa, batch, path, flag, as_read)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{flag}: cannot read {path!r} as Parquet ({str(error).splitlines()[0]})") from None
