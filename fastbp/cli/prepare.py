"""The data of a ``fastbp train`` run: read, split into test, validation
and training rows, and preprocessed on the training rows."""
import os

import numpy as np

from fastbp import data
from fastbp._checks import as_matrix
from fastbp.data import DataError
from fastbp.preprocessing import Preprocessing


class Prepared:
    """The data of a run, split and preprocessed, with the preprocessing to save.

    X holds the test, validation and training rows in that order, so that
    each part is a view; a memory-mapped .npy is written, preprocessed, to
    an anonymous temporary file mapped in its turn, so that no part of the
    run holds the data in memory.
    """

    def __init__(self, settings, preprocessing=None):
        source = settings["data"] or settings["dataset"]
        known = None if preprocessing is None else Preprocessing.from_dict(preprocessing)
        names, target, dtype = None, settings["target"], np.dtype(settings["dtype"])
        weight, weights = settings.get("sample_weight"), None
        if weight is not None and not (settings["data"] and data.kind_of(source) in (".csv", ".parquet")):
            raise DataError(f"--sample-weight names a column of a CSV or Parquet file; {source!r} has none")
        if settings["data"]:
            extension = data.kind_of(source)
            if extension in (".csv", ".parquet"):
                if target is None:
                    raise DataError(f"--target: a {dict(csv='CSV', parquet='Parquet')[extension[1:]]} file needs "
                                    f"--target COLUMN naming the target column")
                features = known.names if known is not None else settings.get("features")
                X, y, w = data.read_table(source, extension, target, features, float_type=dtype.name, weight=weight)
                names, y = X.column_names, data.target_values(y, source, target)
                weights = None if w is None else data.weight_values(w, source, weight)
            else:
                if settings.get("features"):
                    raise DataError(f"--features picks columns by name; {source!r} is an array, which has none")
                X, y = data.read_arrays(source, extension, target)
            inferred = data.infer_task(y)
        else:
            X, y, inferred = data.load_dataset(settings["dataset"])
        task = settings["task"] or inferred
        n = len(y)
        if task == "regress" and y.dtype.kind in "USO":
            raise DataError(f"--task regress needs numeric targets; {source} has labels such as {y[0]!r}")
        if y.dtype.kind == "f":  # integers are finite
            try:
                as_matrix("targets", y.reshape(n, -1), np.float64)
            except ValueError as error:
                raise DataError(f"--data: {source}: {error}; drop those samples or fill them in") from None
        distinct = len(np.unique(y)) if y.dtype.kind == "f" and y.ndim == 1 and np.any(np.mod(y, 1)) else 0
        if task == "classify" and preprocessing is None and distinct > data.MAX_INFERRED_CLASSES:
            raise DataError(f"--task classify: the target of {source} looks continuous ({distinct} distinct "
                            f"values such as {y[0]:g}), not class labels; use --task regress")
        order = np.random.default_rng(settings["seed"]).permutation(n)
        n_test, n_val = int(round(settings["test_split"] * n)), int(round(settings["val_split"] * n))
        if n - n_test - n_val < 1:
            raise DataError(f"--test-split {settings['test_split']} and --val-split {settings['val_split']} "
                            f"leave no training samples out of {n}")
        if known is None:
            steps = Preprocessing.fit(X, y, order[n_test + n_val:], task, names, target, settings["standardize"],
                                      settings.get("impute"), settings.get("max_categories") or 100,
                                      settings.get("unknown_category") or "error", source)
        else:
            steps = known
            if steps.task != task:
                raise DataError(f"the checkpoint's model does {steps.task} but the data asks to {task}")
            n_columns = X.shape[1] if isinstance(X, np.ndarray) else X.num_columns
            if steps.n_columns != n_columns:
                raise DataError(f"--data: {source} has {n_columns} features, but the checkpoint's model takes "
                                f"{steps.n_columns}; resume on data with the columns it was trained on")
            if task == "regress" and y.reshape(n, -1).shape[1] != steps.n_outputs:
                raise DataError(f"--data: {source} has {y.reshape(n, -1).shape[1]} targets, but the "
                                f"checkpoint's model predicts {steps.n_outputs}")
        out = None
        if isinstance(X, np.memmap):
            out = data.scratch_matrix(n, steps.n_features, dtype)
        self.X = steps.transform(X, rows=order, out=out, dtype=dtype, source=source)
        self.y = steps.encode_targets(y, rows=order)
        self.weights = None if weights is None else weights[order]
        self.steps, self.preprocessing, self.task, self.source = steps, steps.to_dict(), steps.task, source
        self.n_features = steps.n_features
        self.parts = {"test": slice(0, n_test), "val": slice(n_test, n_test + n_val),
                      "train": slice(n_test + n_val, n)}

    def part(self, name):
        index = self.parts[name]
        return self.X[index], self.y[index]

    def part_weights(self, name):
        """The sample weights of a part, or None without --sample-weight."""
        return None if self.weights is None else self.weights[self.parts[name]]

    def size(self, name):
        return self.parts[name].stop - self.parts[name].start

    @property
    def n_outputs(self):
        return self.steps.n_outputs


def targets_for(trainer, y):
    """The encoded targets in the form the trainer's loss takes."""
    return y.astype(np.float64).reshape(-1, 1) if trainer.loss.name == "bce_with_logits" else y


def data_inputs(data_path, target):
    """The files a --data and --target read: --target is a file for a .npy only."""
    extension = None if data_path is None else os.path.splitext(data_path)[1].lower()
    if extension == ".npz" and target is not None:
        raise DataError(f"--target: {data_path!r} is a .npz, whose targets are its array 'y'; drop --target {target}")
    return {"--data": data_path, "--target": target if extension == ".npy" else None}


def describe_counts(prepared):
    counts = "/".join(str(prepared.size(p)) for p in ("train", "val", "test"))
    classes = prepared.steps.classes
    n = prepared.n_outputs
    what = f"{len(classes)} classes" if classes is not None else f"{n} target{'s' if n > 1 else ''}"
    return "\n".join([f"{prepared.source}: {prepared.X.shape[0]} samples, {prepared.n_features} features, {what}; "
                      f"train/val/test {counts}"] + [f"note: {note}" for note in prepared.steps.notes])
