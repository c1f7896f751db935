"""Where data come from: scikit-learn's embedded datasets by name, the kind
of a data file from its extension and first bytes, and .npz and .npy arrays
(a .npy memory-mapped, so that data larger than memory trains)."""
import os

import numpy as np

from fastbp.data.errors import DataError

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
EXTENSIONS = (".csv", ".parquet", ".npz", ".npy")
# rows per batch when a file is streamed (prediction)
BATCH_ROWS = 65536
# how each binary format begins; a CSV that begins so is one of them misnamed
_MAGIC = {".parquet": (b"PAR1", "a Parquet file"), ".npy": (b"\x93NUMPY", "a .npy array"),
          ".npz": (b"PK", "a zip archive (.npz)")}


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
