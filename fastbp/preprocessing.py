"""What ``fastbp train`` learns from its data, in one object saved with the
model: the columns it reads, each numeric column's fill value for missing
entries and its standardisation, each text column's categories (one-hot
encoded), and the targets' class labels or scaling.

Everything is fitted on the training split alone. ``transform`` turns a table
(Arrow, from CSV or Parquet) or a matrix (possibly memory-mapped) into one
contiguous array of the model's dtype, a column or a block of rows at a time,
so that no full-size float64 copy of the data is ever made.
"""
import mmap

import numpy as np

from fastbp import data
from fastbp.data import DataError, quoted

IMPUTE = ("mean", "median", "most-frequent")
UNKNOWN_CATEGORY = ("error", "ignore")
# values per block when a matrix is read in blocks of rows
BLOCK_VALUES = 1 << 20


def _blocks(n, n_columns, most=None):
    step = max(1, min(BLOCK_VALUES // max(1, n_columns), most or n))
    return ((start, min(start + step, n)) for start in range(0, n, step))


def _most_frequent(values):
    """The most frequent value (the smallest among ties), as scikit-learn's SimpleImputer."""
    distinct, counts = np.unique(values, return_counts=True)
    return distinct[np.argmax(counts)]


def _numeric_statistics(X, train, impute):
    """Per column of X (n, n_columns), read in blocks of rows: missing
    entries (NaN) over all rows, and over the training rows (``train``,
    sorted indices) the fill value (None without ``impute``), then the
    mean and standard deviation of the filled training values.

    The training rows of a block are taken by index (``np.take``), ten
    times faster than by a boolean mask and in the same order."""
    n, n_columns = X.shape
    cuts = {start: np.searchsorted(train, (start, stop)) for start, stop in _blocks(n, n_columns)}
    n_missing, n_missing_train = np.zeros(n_columns, np.int64), np.zeros(n_columns, np.int64)
    total, infinite = np.zeros(n_columns), None
    for start, stop in _blocks(n, n_columns):
        block = np.asarray(X[start:stop], dtype=np.float64)
        low, high = cuts[start]
        chosen = train[low:high] - start
        if np.isfinite(block).all():  # the common block: one test, then the sum
            total += np.take(block, chosen, axis=0).sum(axis=0)
            data.release(X[start:stop])
            continue
        missing = np.isnan(block)
        n_missing += missing.sum(axis=0)
        bad = np.isinf(block)
        if infinite is None and bad.any():
            infinite = start + int(np.argwhere(bad)[0][0]), int(np.argwhere(bad)[0][1])
        n_missing_train += np.take(missing, chosen, axis=0).sum(axis=0)
        total += np.take(np.where(missing, 0.0, block), chosen, axis=0).sum(axis=0)
        data.release(X[start:stop])
    n_train = len(train)
    present = n_train - n_missing_train
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = total / present
    if impute in ("median", "most-frequent"):  # order statistics need each column whole
        for j in range(n_columns):
            values = np.take(np.asarray(X[:, j], dtype=np.float64), train)
            data.release(X)
            values = values[~np.isnan(values)]
            fill[j] = np.nan if values.size == 0 else np.median(values) if impute == "median" \
                else _most_frequent(values)
    # the filled values' mean and variance: missing entries take the fill
    mean = (total + n_missing_train * np.nan_to_num(fill)) / n_train if impute else fill
    squares = np.zeros(n_columns)
    for start, stop in _blocks(n, n_columns):
        low, high = cuts[start]
        block = np.take(np.asarray(X[start:stop], dtype=np.float64), train[low:high] - start, axis=0)
        if n_missing.any():
            block = np.where(np.isnan(block), fill if impute else mean, block)
        squares += ((block - mean) ** 2).sum(axis=0)
        data.release(X[start:stop])
    return n_missing, (fill if impute else None), mean, np.sqrt(squares / n_train), infinite


def _text_statistics(pa, column, train_rows, impute):
    """(categories sorted, their training counts, missing entries over all rows,
    the fill category or None) of a text column."""
    column = pa.compute.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column
    counts = pa.compute.value_counts(column.take(pa.array(train_rows)))
    values, counts = counts.field("values").to_pylist(), counts.field("counts").to_numpy()
    seen = [(value, count) for value, count in zip(values, counts) if value is not None]
    seen.sort()
    categories = [value for value, _ in seen]
    fill = None
    if impute and seen:
        fill = categories[int(np.argmax([count for _, count in seen]))]
    return categories, column.null_count, fill


class Preprocessing:
    """The data's preprocessing, fitted on the training split.

    Args:
        task: "classify" or "regress".
        names: the input columns' names, in order (None: columns by position).
        categories: per input column, None (numeric) or its sorted categories,
            one-hot encoded in that order.
        fill: per input column, the value a missing entry takes; None
            altogether when missing values are an error.
        mean, scale: per input column, the standardisation (x - mean) / scale
            of a numeric column (0 and 1 for text columns and unscaled data).
        target: the target column's name (None for arrays).
        classes: the sorted class labels (classify), else None.
        y_mean, y_scale: the regression targets' standardisation.
        impute: the strategy that chose ``fill`` (None: none).
        unknown_category: "error" or "ignore" (all-zero one-hot) for a
            category not seen in training.
    """

    def __init__(self, task, names, categories, fill, mean, scale, target=None, classes=None, y_mean=None,
                 y_scale=None, impute=None, unknown_category="error"):
        self.task, self.names, self.categories, self.fill = task, names, list(categories), fill
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.target, self.classes, self.impute, self.unknown_category = target, classes, impute, unknown_category
        self.y_mean = None if y_mean is None else np.asarray(y_mean, np.float64)
        self.y_scale = None if y_scale is None else np.asarray(y_scale, np.float64)
        self.n_columns = len(self.categories)
        widths = [1 if c is None else len(c) for c in self.categories]
        self.offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int).tolist()
        self.n_features = self.offsets[-1]
        self.notes = []

    def column_name(self, j):
        return repr(self.names[j]) if self.names is not None else f"{j}"

    @classmethod
    def fit(cls, inputs, y, train, task, names=None, target=None, standardize=True, impute=None,
            max_categories=100, unknown_category="error", source="--data"):
        """Fit on the training rows ``train`` (indices) of ``inputs``, a table
        whose columns are numeric or text, or a matrix (n, n_columns), and
        of the targets ``y`` (n,) or (n, n_outputs)."""
        n = len(y)
        categories, fill, mean, scale, missing, constant = [], [], [], [], {}, []
        problems = []
        if isinstance(inputs, np.ndarray):
            columns = [(None, inputs)]
        else:
            import pyarrow as pa
            columns = [(pa, inputs.column(j)) for j in range(inputs.num_columns)]
        train_rows = np.sort(train)
        label = (lambda j: repr(names[j]) if names is not None else f"{j}")
        j = 0
        for pa, column in columns:
            if pa is not None and data._is_text(pa, column.type):
                found, n_missing, value = _text_statistics(pa, column, train_rows, impute)
                if len(found) > max_categories:
                    problems.append(f"--max-categories: column {label(j)} of {source!r} has {len(found)} categories "
                                    f"in the training split, more than {max_categories}; leave it out with "
                                    f"--features, or raise --max-categories")
                if not found:
                    problems.append(f"--data: column {label(j)} of {source!r} is all missing in the training split; "
                                    f"leave it out with --features")
                if n_missing:
                    missing[j] = n_missing
                if len(found) == 1:
                    constant.append(label(j))
                categories.append(found)
                fill.append(value)
                mean.append(0.0)
                scale.append(1.0)
                j += 1
                continue
            values = column if pa is None else pa.compute.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            values = values if values.ndim == 2 else values[:, None]
            n_missing, value, mu, sigma, infinite = _numeric_statistics(values, train_rows, impute)
            if infinite is not None:
                row, k = infinite
                problems.append(f"--data: column {label(j + k)} of {source!r} holds an infinite value "
                                f"(row {row}); replace it by a finite number or leave the column out")
            for k in range(values.shape[1]):
                if n_missing[k]:
                    missing[j + k] = int(n_missing[k])
                if impute and np.isnan(value[k]):
                    problems.append(f"--data: column {label(j + k)} of {source!r} is all missing in the "
                                    f"training split; leave it out with --features")
                if sigma[k] == 0:
                    constant.append(label(j + k))
                categories.append(None)
                fill.append(None if value is None else float(value[k]))
                mean.append(float(mu[k]) if standardize else 0.0)
                # a constant column keeps scale 1 (as scikit-learn's StandardScaler)
                scale.append(float(sigma[k]) if standardize and sigma[k] > 0 else 1.0)
            j += values.shape[1]
        if problems:
            raise DataError(problems[0])
        if missing and impute is None:
            listed = ", ".join(f"{label(k)} ({count} row{'s' if count > 1 else ''})" for k, count in missing.items())
            raise DataError(f"--data: {source!r} has missing values in column{'s' if len(missing) > 1 else ''} "
                            f"{listed}; fill them with --impute mean, median or most-frequent, or remove those rows")
        classes = y_mean = y_scale = None
        if task == "classify":
            classes = data.class_list(y, train)
            if len(classes) < 2:
                raise DataError(f"--data: classification needs at least two classes; {source} has {classes}")
        else:
            targets = y.reshape(n, -1).astype(np.float64)[train]
            y_mean = targets.mean(axis=0) if standardize else np.zeros(targets.shape[1])
            spread = targets.std(axis=0)
            y_scale = np.where(spread > 0, spread, 1.0) if standardize else np.ones(targets.shape[1])
        fitted = cls(task, names, categories, None if impute is None else fill, mean, scale, target, classes,
                     y_mean, y_scale, impute, unknown_category)
        if constant:
            fitted.notes.append(f"constant in the training split (kept, scale 1): column{'s' if len(constant) > 1 else ''}"
                                f" {', '.join(constant[:10])}{' ...' if len(constant) > 10 else ''}")
        if missing:
            fitted.notes.append(f"missing values filled with the training split's {impute}: "
                                + ", ".join(f"{label(k)} ({count})" for k, count in missing.items()))
        encoded = [f"{label(k)} ({len(c)})" for k, c in enumerate(categories) if c is not None]
        if encoded:
            fitted.notes.append(f"one-hot encoded: {', '.join(encoded)}")
        return fitted

    # ---- transform ----------------------------------------------------------------

    def transform(self, inputs, rows=None, out=None, dtype=np.float32, source="--data"):
        """The model's input (len(rows), n_features) from ``inputs`` (a table
        or a matrix), the rows in the order ``rows`` (None: as they come),
        written into ``out`` when given."""
        n = (inputs.shape[0] if isinstance(inputs, np.ndarray) else inputs.num_rows) if rows is None else len(rows)
        out = np.empty((n, self.n_features), dtype=dtype) if out is None else out
        if isinstance(inputs, np.ndarray):
            self._numeric(out, inputs, rows, np.arange(self.n_columns), source)
            return out
        import pyarrow as pa
        for j in range(self.n_columns):
            column, target = inputs.column(j), out[:, self.offsets[j]:self.offsets[j + 1]]
            if self.categories[j] is None:
                values = pa.compute.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
                self._numeric(target, values[:, None], rows, np.array([j]), source)
            else:
                self._one_hot(pa, target, column, rows, j, source)
        return out

    def _numeric(self, out, X, rows, columns, source):
        """Write the filled, standardised ``X`` (n, len(columns)) into ``out``
        in blocks of rows, gathering ``rows`` when given.

        A memory-mapped ``X`` is read in its own order instead, each row
        scattered to its place in ``out``: a row gathered at random would map
        the whole large page around it, so that gathering a block would map
        most of the file."""
        mean, scale = self.mean[columns], self.scale[columns]
        fill = None if self.fill is None else np.array([self.fill[j] for j in columns], dtype=np.float64)
        scatter = rows is not None and data.file_mapping(X) is not None
        if scatter:
            places = np.full(X.shape[0], -1, dtype=np.int32 if len(rows) < 2**31 else np.int64)
            for start, stop in _blocks(len(rows), 1):
                places[rows[start:stop]] = np.arange(start, stop)
        # each row scattered writes a page of its own
        most = data.RESIDENT_BYTES // mmap.PAGESIZE // 2 if scatter else None
        for start, stop in _blocks(X.shape[0] if scatter else out.shape[0], len(columns), most):
            if scatter:
                taken = places[start:stop]
                block = np.array(X[start:stop], dtype=np.float64)[taken >= 0]
                taken = taken[taken >= 0]
            else:
                block = np.array(X[start:stop] if rows is None else X[rows[start:stop]], dtype=np.float64)
            data.release(X[start:stop] if rows is None or scatter else X)
            missing = np.isnan(block)
            if missing.any():
                if fill is None:
                    j = columns[int(np.argwhere(missing)[0][1])]
                    raise DataError(f"--data: column {self.column_name(j)} of {source!r} has missing values, and "
                                    f"the model was trained without --impute; fill them, or train with --impute")
                block[missing] = np.broadcast_to(fill, block.shape)[missing]
            if not np.isfinite(block).all():
                j = columns[int(np.argwhere(~np.isfinite(block))[0][1])]
                raise DataError(f"--data: column {self.column_name(j)} of {source!r} holds an infinite value; "
                                f"replace it by a finite number")
            block -= mean
            block /= scale
            if scatter:
                out[taken] = block
            else:
                out[start:stop] = block
            data.release(out if scatter else out[start:stop])

    def _one_hot(self, pa, out, column, rows, j, source):
        categories = self.categories[j]
        if pa.types.is_dictionary(column.type):
            column = pa.compute.cast(column, pa.string())
        codes = pa.compute.fill_null(pa.compute.index_in(column, value_set=pa.array(categories, pa.string())), -1)
        codes = np.array(codes.to_numpy())  # writable: gaps take the fill below
        missing = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        if missing is not None:
            if self.fill is None or self.fill[j] is None:
                raise DataError(f"--data: column {self.column_name(j)} of {source!r} has missing values, and the "
                                f"model was trained without --impute; fill them, or train with --impute")
            codes[missing] = categories.index(self.fill[j])
        unknown = codes < 0
        if unknown.any() and self.unknown_category == "error":
            first = int(np.argmax(unknown))
            raise DataError(f"--data: column {self.column_name(j)} of {source!r} holds {column[first].as_py()!r} "
                            f"(row {first}), a category not seen in training (it knows {quoted(categories[:10])}"
                            f"{' ...' if len(categories) > 10 else ''}); --unknown-category ignore encodes such "
                            f"values as all zeros")
        if rows is not None:
            codes = codes[rows]
        out[...] = 0
        known = np.flatnonzero(codes >= 0)
        out[known, codes[known]] = 1

    # ---- targets -------------------------------------------------------------------

    def encode_targets(self, y, rows=None):
        """Targets as the loss takes them: class indices (n,), or standardised
        (n, n_outputs); of the rows ``rows`` in that order when given. A block
        of rows at a time: the labels of a large file are held once."""
        n = len(y) if rows is None else len(rows)
        classify = self.task == "classify"
        out = np.empty((n,) if classify else (n, len(self.y_mean)), dtype=np.int64 if classify else np.float64)
        for start, stop in _blocks(n, 1):
            part = y[start:stop] if rows is None else y[rows[start:stop]]
            out[start:stop] = data.encode_labels(part, self.classes) if classify else \
                (part.reshape(len(part), -1).astype(np.float64) - self.y_mean) / self.y_scale
        return out

    def decode(self, outputs, loss_name):
        """Predictions in the data's own terms from the model's outputs: class
        labels for a classifier, values in the target's units for a regressor."""
        if self.task == "classify":
            classes = np.array(self.classes)
            index = (outputs[:, 0] > 0).astype(int) if loss_name == "bce_with_logits" else np.argmax(outputs, axis=1)
            return classes[index]
        return outputs.astype(np.float64) * self.y_scale + self.y_mean

    @property
    def n_outputs(self):
        return len(self.classes) if self.classes is not None else len(self.y_mean)

    # ---- the model file's metadata ---------------------------------------------------

    def to_dict(self):
        """A JSON-ready dict (the format is in fastbp.archive's docstring)."""
        as_list = (lambda a: None if a is None else a.tolist())
        return {"task": self.task, "target": self.target, "columns": self.names, "categories": self.categories,
                "impute": self.impute, "fill": self.fill, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "unknown_category": self.unknown_category, "classes": self.classes,
                "y_mean": as_list(self.y_mean), "y_scale": as_list(self.y_scale)}

    @classmethod
    def from_dict(cls, state):
        if "x_scaling" in state:  # the form files written before text columns and imputation have
            x, y = state["x_scaling"], state["y_scaling"] or {}
            return cls(state["task"], state["features"], [None] * len(x["mean"]), None, x["mean"], x["scale"],
                       state["target"], state["classes"], y.get("mean"), y.get("scale"))
        return cls(state["task"], state["columns"], state["categories"], state["fill"], state["mean"],
                   state["scale"], state["target"], state["classes"], state["y_mean"], state["y_scale"],
                   state["impute"], state["unknown_category"])
