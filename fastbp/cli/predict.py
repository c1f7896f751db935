"""The ``fastbp predict`` command: a saved model's predictions for a file,
read, preprocessed, predicted and written batch by batch."""
import csv
import os
import sys
import tempfile

import numpy as np

from fastbp import data
from fastbp.data import DataError
from fastbp.files import load_any
from fastbp.preprocessing import Preprocessing
from fastbp.cli.prepare import data_inputs
from fastbp.cli.safety import check_output


class _Score:
    """Accuracy or R^2 of predictions against targets, summed batch by batch."""

    def __init__(self, steps):
        self.steps, self.n, self.correct, self.sums = steps, 0, 0, None

    def add(self, predictions, y):
        self.n += len(y)
        if self.steps.task == "classify":
            labels = data.encode_labels(y, self.steps.classes)
            self.correct += int(np.sum(data.encode_labels(predictions, self.steps.classes) == labels))
            return
        y = y.reshape(len(y), -1).astype(np.float64)
        sums = np.stack([y.sum(axis=0), (y ** 2).sum(axis=0), ((y - predictions.reshape(y.shape)) ** 2).sum(axis=0)])
        self.sums = sums if self.sums is None else self.sums + sums

    def line(self):
        if self.steps.task == "classify":
            return f"accuracy {self.correct / self.n:.4f} ({self.correct}/{self.n} correct)"
        total, squares, residual = self.sums
        spread = squares - total ** 2 / self.n
        # as fastbp.metrics.r2: an output of constant targets scores 1 if predicted exactly
        scores = np.where(spread > 0, 1 - residual / np.where(spread > 0, spread, 1), np.where(residual == 0, 1.0, 0.0))
        return f"r2 {float(np.mean(scores)):.4f} on {self.n} samples"


class _Writer:
    """Predictions written batch by batch: to a .csv, .parquet or .npy
    through a temporary file renamed at the end (an error leaves nothing),
    or as CSV rows to a stream."""

    def __init__(self, path, stream):
        self.path, self.kind, self.parquet, self.arrays = path, None, None, []
        if path is None:
            self.target = stream
        else:
            self.kind = os.path.splitext(path)[1].lower()
            handle, self.temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".fastbp-",
                                                      suffix=self.kind)
            os.close(handle)
            self.target = open(self.temporary, "w", newline="") if self.kind == ".csv" else None
        # the csv writer quotes a label that holds a comma, a quote or a line break
        self.csv = csv.writer(self.target, lineterminator="\n") if self.target is not None else None
        self.first = True

    def write(self, predictions):
        predictions = predictions.reshape(len(predictions), -1)
        n = predictions.shape[1]
        names = ["prediction"] if n == 1 else [f"prediction_{i}" for i in range(n)]
        if self.kind == ".npy":
            self.arrays.append(predictions)
        elif self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet

            table = pa.table({name: predictions[:, i] for i, name in enumerate(names)})
            if self.parquet is None:
                self.parquet = pa.parquet.ParquetWriter(self.temporary, table.schema)
            self.parquet.write_table(table)
        else:
            if self.first and self.path is not None:
                self.csv.writerow(names)
            self.csv.writerows([str(value) for value in row] for row in predictions)
        self.first = False

    def close(self, keep):
        if self.path is None:
            return
        if self.kind == ".csv":
            self.target.close()
        if self.parquet is not None:
            self.parquet.close()
        if keep and self.kind == ".npy":
            np.save(self.temporary, np.concatenate(self.arrays))
        if keep:
            os.replace(self.temporary, self.path)
        elif os.path.exists(self.temporary):
            os.remove(self.temporary)


def _inputs(steps, model, path, target, model_path):
    """(stream of (features, targets or None) batches, whether targets come)
    from the file ``path``, matched to the model's columns: by name when it
    knows them, else by position."""
    extension = data.kind_of(path)
    n_columns = steps.n_columns if steps is not None else model.sizes[0]
    if extension in (".npz", ".npy"):
        X, y = data.read_arrays(path, extension, target if extension == ".npy" else None, need_target=False)
        if X.shape[1] != n_columns:
            raise DataError(f"--data: {X.shape[1]} features, but the model in {model_path!r} takes {n_columns}")
        return ((X[start:start + data.BATCH_ROWS], None if y is None else y[start:start + data.BATCH_ROWS])
                for start in range(0, X.shape[0], data.BATCH_ROWS)), y is not None
    import pyarrow as pa

    names = data.header(path, extension)
    if target is not None and target not in names:
        raise DataError(f"--target: {path!r} has no column {target!r}; its columns are {', '.join(names)}. Name "
                        f"one of them, or drop --target to predict without scoring")
    if target is None and steps is not None:
        target = steps.target  # scored when the file has that column
    by_name = steps is not None and steps.names is not None
    features, target = data.choose_columns(path, names, target, steps.names if by_name else None, need_target=False)
    if len(features) != n_columns:
        raise DataError(f"--data: {len(features)} features, but the model in {model_path!r} takes {n_columns}")
    ignored = [name for name in names if name not in features and name != target]
    if ignored:
        listed = ", ".join(repr(name) + (" (unnamed, as pandas writes its index)" if name == "" else "")
                           for name in ignored)
        print(f"note: ignoring {len(ignored)} column{'s' if len(ignored) > 1 else ''} the model was not trained "
              f"on: {listed}", file=sys.stderr)
    text = [] if steps is None else [name for name, c in zip(features, steps.categories) if c is not None]
    types = {name: pa.string() if name in text else pa.float64() for name in features}
    if target is not None:
        types[target] = pa.string() if steps.task == "classify" and isinstance(steps.classes[0], str) else pa.float64()
    columns = features + ([target] if target is not None else [])
    batches = data.batches(path, extension, columns, types)
    return ((batch.select(features), None if target is None else data.target_values(batch.column(target), path, target))
            for batch in batches), target is not None


def predict(model_path, data_path, target=None, out_path=None, out=None, unknown_category=None, overwrite=False):
    """The ``fastbp predict`` command; returns the exit status.

    The data go through in batches, read, preprocessed, predicted and
    written one after the other, so that a file larger than memory is
    predicted at constant memory."""
    out = out or sys.stdout
    if out_path is not None and os.path.splitext(out_path)[1].lower() not in (".csv", ".parquet", ".npy"):
        raise DataError(f"--out: {out_path!r} must end in .csv, .parquet or .npy")
    out_path = check_output("--out", out_path, {"--model": model_path, **data_inputs(data_path, target)}, overwrite)
    try:
        model, trainer = load_any(model_path)
    except (OSError, ValueError) as error:
        raise DataError(f"--model: {error}") from None
    loss_name = trainer.loss.name if trainer is not None else None
    state = trainer.metadata.get("preprocessing") if trainer is not None else None
    steps = Preprocessing.from_dict(state) if state is not None else None
    if steps is not None and unknown_category is not None:
        steps.unknown_category = unknown_category
    plain = steps or Preprocessing(None, None, [None] * model.sizes[0], None, np.zeros(model.sizes[0]),
                                   np.ones(model.sizes[0]))
    stream, scored = _inputs(steps, model, data_path, target, model_path)
    score = _Score(steps) if scored and steps is not None else None
    writer, written = _Writer(out_path, out), 0
    try:
        for X, y in stream:
            outputs = model.predict(plain.transform(X, dtype=model.dtype, source=data_path))
            predictions = steps.decode(outputs, loss_name) if steps is not None else outputs
            if score is not None:
                score.add(predictions, y)
            writer.write(predictions)
            written += len(predictions)
        if written == 0:
            raise DataError(f"--data: {data_path!r} holds no rows to predict")
    except BaseException:
        writer.close(keep=False)
        raise
    writer.close(keep=True)
    if score is not None:
        print(score.line(), file=sys.stderr)
    if out_path is not None:
        print(f"wrote {written} predictions to {out_path}", file=sys.stderr)
    return 0
