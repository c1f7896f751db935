"""Datasets for the command line: scikit-learn's embedded ones by name, or
arrays from .npz, .npy and .csv files; task inference, label encoding and
standardisation, each fitted on training data and saved with the model."""
import csv
import os

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


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _quoted(names):
    return ", ".join(repr(name) for name in names)


def _read_csv(path, target, need_target, features):
    """(X, y or None, column names) of a CSV file with a header row.

    ``target`` names the target column (None, or absent and not needed: every
    column is a feature); ``features`` names the columns X takes, in X's
    order (None: every other column, as they come). The names returned are
    all the columns but the target, so that a caller can tell what was left
    out."""
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        raise DataError(f"--data: {path!r} is empty")
    header, body = [name.strip() for name in rows[0]], [row for row in rows[1:] if row]
    if not body:
        raise DataError(f"--data: {path!r} has a header but no rows")
    if target is not None and target not in header and not need_target:
        target = None
    if target is not None and target not in header:
        raise DataError(f"--target: {path!r} has no column {target!r}; its columns are {', '.join(header)}")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"--data: {path!r} line {line} has {len(row)} fields, the header has {len(header)}")
    names = [name for name in header if name != target]
    if features is None:
        features = names
    missing = [name for name in features if name not in names]
    if missing:
        raise DataError(f"--data: {path!r} lacks the model's column{'s' if len(missing) > 1 else ''} "
                        f"{_quoted(missing)} (it has {_quoted(header)}); rename the CSV's columns to match, or "
                        f"give one with the columns the model was trained on")
    X = np.empty((len(body), len(features)))
    for j, name in enumerate(features):
        column = header.index(name)
        for i, row in enumerate(body):
            value = _number(row[column])
            if value is None:
                raise DataError(f"--data: column {name!r} of {path!r} must be numeric; line {i + 2} has "
                                f"{row[column]!r}")
            X[i, j] = value
    if target is None:
        return X, None, names
    texts = [row[header.index(target)].strip() for row in body]
    numbers = [_number(text) for text in texts]
    y = np.array(texts) if None in numbers else np.array(numbers)
    return X, y, names


def read_data(path, target=None, need_target=True, features=None):
    """(X, y, column names) from a file.

    .npz: arrays ``X`` and ``y``; .npy: X, with ``target`` the path of a .npy
    of targets; .csv: a header row, ``target`` the target column's name.
    Without ``need_target`` (prediction), targets are read where present and a
    CSV without the ``target`` column is all features. ``features`` picks a
    CSV's feature columns by name, in the model's order; a missing one is an
    error. The names are a CSV's columns other than the target (X's columns
    when ``features`` is None), and None for arrays, which go by position.
    """
    if not os.path.isfile(path):
        raise DataError(f"--data: no file at {path!r}")
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".csv":
            if target is None and need_target:
                raise DataError("--target: a CSV file needs --target COLUMN naming the target column")
            X, y, names = _read_csv(path, target, need_target, features)
        elif extension == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "X" not in archive.files or (need_target and "y" not in archive.files):
                    raise DataError(f"--data: {path!r} must hold arrays 'X' and 'y'; it holds "
                                    f"{', '.join(archive.files) or 'nothing'}")
                X, y = archive["X"], archive["y"] if "y" in archive.files else None
            names = None
        elif extension == ".npy":
            X = np.load(path, allow_pickle=False)
            if target is None and need_target:
                raise DataError("--target: a .npy file of features needs --target PATH, a .npy file of targets")
            if target is not None and not os.path.isfile(target):
                raise DataError(f"--target: no file at {target!r}")
            y = np.load(target, allow_pickle=False) if target is not None else None
            names = None
        else:
            raise DataError(f"--data: {path!r} must be a .npz, .npy or .csv file")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"--data: cannot read {path!r} ({error})") from None
    X = np.asarray(X)
    if X.dtype.kind not in "biuf" or X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"--data: features must be a non-empty 2-D numeric array, got shape {X.shape} and "
                        f"dtype {X.dtype}")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise DataError(f"--data: features of {path!r} hold NaN or infinite values")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise DataError(f"--data: {X.shape[0]} samples of features but targets of shape {y.shape}")
    return X, y, names


def infer_task(y):
    """'classify' for string labels or few integer values, else 'regress'."""
    if y.dtype.kind in "USO" or y.dtype.kind == "b":
        return "classify"
    if y.ndim == 1 and np.all(np.mod(y, 1) == 0) and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classify"
    return "regress"


def class_list(y):
    """The sorted distinct labels as JSON-ready values (str, int or float)."""
    values = np.unique(y)
    if values.dtype.kind in "USO":
        return [str(v) for v in values]
    if np.all(np.mod(values, 1) == 0):
        return [int(v) for v in values]
    return [float(v) for v in values]


def encode_labels(y, classes):
    """Labels (n,) as indices into ``classes``; an unseen label is an error."""
    if y.ndim != 1:
        raise DataError(f"--data: class labels must be one column, got targets of shape {y.shape}")
    index = {value: i for i, value in enumerate(classes)}
    keys = [str(v) for v in y] if isinstance(classes[0], str) else [v for v in y.astype(np.float64).tolist()]
    unknown = sorted({repr(k) for k in keys if k not in index})
    if unknown:
        raise DataError(f"--data: labels {', '.join(unknown[:5])} are not among the model's classes "
                        f"{classes[:10]}")
    return np.array([index[k] for k in keys], dtype=np.int64)


class Scaling:
    """Standardisation ``(x - mean) / scale`` fitted on training data; a
    constant column keeps scale 1 (as sklearn's StandardScaler)."""

    def __init__(self, mean, scale):
        self.mean, self.scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, data):
        scale = data.std(axis=0)
        return cls(data.mean(axis=0), np.where(scale > 0, scale, 1.0))

    @classmethod
    def identity(cls, n):
        return cls(np.zeros(n), np.ones(n))

    def apply(self, data):
        return (data - self.mean) / self.scale

    def invert(self, data):
        return data * self.scale + self.mean

    def as_dict(self):
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}
