"""The ``fastbp predict`` command: a saved model's predictions for a file,
read, preprocessed, predicted and written batch by batch."""
import csv
import os
import sys
import tempfile

import numpy as np

from fastbp import data
from fastbp.data import DataError, quoted
from fastbp.pipeline import Pipeline
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
    """Output columns written batch by batch: to a .csv, .parquet or .npy
    through a temporary file renamed at the end (an error leaves nothing),
    or as CSV rows to a stream (with a header only when there is more than
    the prediction to tell apart)."""

    def __init__(self, path, stream, header):
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
        self.header = header or path is not None

    def write(self, columns):
        """Write ``columns`` (name -> NumPy or Arrow array, in order)."""
        if self.kind == ".npy":
            self.arrays.append(np.stack([np.asarray(c) for c in columns.values()], axis=1))
        elif self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet

            table = pa.table(columns)
            if self.parquet is None:
                self.parquet = pa.parquet.ParquetWriter(self.temporary, table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        else:
            if self.header:
                self.csv.writerow(columns)
                self.header = False
            self.csv.writerows(zip(*[_cells(column) for column in columns.values()]))

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


def _cells(column):
    """A column's CSV cells: numbers as Python prints them, a missing value empty."""
    if isinstance(column, np.ndarray):
        return [str(value) for value in column]
    return ["" if value is None else str(value) for value in column.to_pylist()]


def _columns(pipeline, outputs, batch, keep, proba):
    """The output columns of a batch: the kept input columns, the
    predictions, then with ``proba`` one probability column per class."""
    predictions = pipeline.labels(outputs).reshape(len(outputs), -1)
    n = predictions.shape[1]
    columns = {name: batch.kept[name] for name in keep}
    columns.update({"prediction" if n == 1 else f"prediction_{i}": predictions[:, i] for i in range(n)})
    if proba:
        columns.update(zip(_class_names(pipeline), pipeline.probabilities(outputs).T))
    return columns


def _class_names(pipeline):
    return [str(label) for label in pipeline.classes]


def _check_columns(pipeline, out_path, keep, proba, model_path):
    """Refuse, before anything is read, output columns that cannot be written."""
    kind = None if out_path is None else os.path.splitext(out_path)[1].lower()
    if kind == ".npy" and (keep or proba):
        raise DataError(f"--out: {out_path!r} is a .npy, which holds one matrix of predictions; write a .csv or "
                        f".parquet to add {'--keep-columns' if keep else '--proba'} columns")
    if proba and pipeline.task != "classify":
        what = "a regressor" if pipeline.task == "regress" else "a bare model (MLP.save), with no class labels"
        raise DataError(f"--proba: the model in {model_path!r} is {what}; class probabilities need a classifier")
    names = list(keep) + ["prediction"] + (_class_names(pipeline) if proba else [])
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"--keep-columns: the output would have more than one column named {quoted(twice)} "
                        f"(kept columns, 'prediction' and the class names must differ)")


def predict(model_path, data_path, target=None, out_path=None, out=None, unknown_category=None, overwrite=False,
            keep=(), proba=False):
    """The ``fastbp predict`` command; returns the exit status.

    The data go through in batches, read, preprocessed, predicted and
    written one after the other, so that a file larger than memory is
    predicted at constant memory."""
    out = out or sys.stdout
    if out_path is not None and os.path.splitext(out_path)[1].lower() not in (".csv", ".parquet", ".npy"):
        raise DataError(f"--out: {out_path!r} must end in .csv, .parquet or .npy")
    out_path = check_output("--out", out_path, {"--model": model_path, **data_inputs(data_path, target)}, overwrite)
    try:
        pipeline = Pipeline.load(model_path, unknown_category)
    except (OSError, ValueError) as error:
        raise DataError(f"--model: {error}") from None
    _check_columns(pipeline, out_path, keep, proba, model_path)
    steps = pipeline.preprocessing
    stream = pipeline.batches(data_path, target, keep, score=True, flag="--data",
                              note=lambda line: print(f"note: {line}", file=sys.stderr))
    writer, written, score = _Writer(out_path, out, bool(keep or proba)), 0, None
    try:
        for batch in stream:
            outputs = pipeline.model.predict(pipeline.transform(batch.features, source=data_path))
            if batch.targets is not None and steps is not None:
                score = score or _Score(steps)
                score.add(pipeline.labels(outputs), batch.targets)
            writer.write(_columns(pipeline, outputs, batch, keep, proba))
            written += len(outputs)
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
