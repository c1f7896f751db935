"""A run ``fastbp train`` wrote, as one object: the preprocessing it learnt
(imputation, scaling, one-hot encoding, the class labels or the target's
scaling) and the model, predicting from the user's own tables in the user's
own labels, exactly as ``fastbp predict`` does (which is built on it)."""
import os

import numpy as np

from fastbp import data
from fastbp.data import DataError, quoted
from fastbp.preprocessing import UNKNOWN_CATEGORY, Preprocessing
from fastbp._checks import as_choice, describe


class Batch:
    """Rows of the input: ``features`` (a table of the model's columns in its
    order, or a matrix), ``targets`` (or None) and ``kept``, the columns
    asked to be carried through (name -> Arrow array)."""

    def __init__(self, features, targets=None, kept=None):
        self.features, self.targets, self.kept = features, targets, kept or {}

    def __len__(self):
        return self.features.shape[0] if isinstance(self.features, np.ndarray) else self.features.num_rows


class Pipeline:
    """The preprocessing and the model of a run, predicting from raw rows.

    Args:
        model: the fastbp.MLP.
        preprocessing: the ``fastbp.preprocessing.Preprocessing`` it was
            trained with; None for a bare model (rows go in as they are).
        loss_name: the training loss ("cross_entropy", "bce_with_logits",
            ...), which says how outputs become labels and probabilities.

    Example:
        >>> pipeline = fastbp.Pipeline.load("titanic.npz")
        >>> pipeline.predict(pandas.read_csv("new.csv"))        # the user's labels
        >>> pipeline.predict_proba("new.parquet")               # (n, n_classes)
    """

    def __init__(self, model, preprocessing=None, loss_name=None):
        self.model, self.preprocessing, self.loss_name = model, preprocessing, loss_name
        self.path = None  # the file it was loaded from, which messages name
        n_in = model.sizes[0]
        # a bare model's rows are its inputs: no fill, no scaling
        self._steps = preprocessing or Preprocessing(None, None, [None] * n_in, None, np.zeros(n_in), np.ones(n_in))
        if self._steps.n_features != n_in:
            raise ValueError(f"preprocessing gives {self._steps.n_features} features, but the model takes {n_in}")

    @classmethod
    def load(cls, path, unknown_category=None):
        """The pipeline of a file ``fastbp train --save`` (or ``Trainer.save``)
        wrote; a file of ``MLP.save`` gives a bare model's pipeline.
        ``unknown_category`` ("error" or "ignore") overrides the run's
        handling of categories not seen in training."""
        from fastbp.files import load_any

        model, trainer = load_any(path)
        state = trainer.metadata.get("preprocessing") if trainer is not None else None
        steps = Preprocessing.from_dict(state) if state is not None else None
        if steps is not None and unknown_category is not None:
            steps.unknown_category = as_choice("unknown_category", unknown_category, UNKNOWN_CATEGORY)
        pipeline = cls(model, steps, trainer.loss.name if trainer is not None else None)
        pipeline.path = os.fspath(path)
        return pipeline

    def __repr__(self):
        steps = self.preprocessing
        what = "bare model" if steps is None else f"{steps.task}, {steps.n_columns} columns"
        return f"Pipeline({what}, {self.model!r})"

    @property
    def task(self):
        return None if self.preprocessing is None else self.preprocessing.task

    @property
    def classes(self):
        """The class labels, in the order of ``predict_proba``'s columns (None for a regressor)."""
        return None if self.preprocessing is None else self.preprocessing.classes

    @property
    def columns(self):
        """The input columns' names, in order (None: by position)."""
        return None if self.preprocessing is None else self.preprocessing.names

    def to_onnx(self, path, opset=17):
        """Write the whole run as one ONNX graph (needs fastbp[onnx]): raw
        numeric and text columns in, labels and probabilities (or the
        unscaled prediction) out; see ``fastbp.interop.onnx``."""
        from fastbp.interop.onnx import export

        export(path, self.model, self.preprocessing, self.loss_name, opset=opset)

    # ---- predictions ------------------------------------------------------------

    def predict(self, data):
        """Predictions for ``data`` (a pandas DataFrame, an Arrow table, a
        .csv/.parquet/.npz/.npy path, or a matrix): class labels for a
        classifier, values in the target's units for a regressor, the raw
        outputs for a bare model."""
        return self._collect(data, self.labels)

    def predict_proba(self, data):
        """The class probabilities (n, n_classes), columns in the order of ``classes``."""
        self._require_classes("predict_proba")
        return self._collect(data, self.probabilities)

    def transform(self, features, source="data"):
        """The model's input for a batch's ``features``."""
        return self._steps.transform(features, dtype=self.model.dtype, source=source)

    def labels(self, outputs):
        """Predictions in the data's own terms from the model's outputs."""
        return outputs if self.preprocessing is None else self.preprocessing.decode(outputs, self.loss_name)

    def probabilities(self, outputs):
        """Class probabilities from the model's outputs (logits): a softmax, or
        for one logit of binary cross-entropy [1 - sigmoid, sigmoid]."""
        self._require_classes("probabilities")
        logits = np.asarray(outputs, dtype=np.float64)
        if self.loss_name == "bce_with_logits" and logits.shape[1] == 1:
            p = 0.5 * (1.0 + np.tanh(0.5 * logits[:, 0]))  # sigmoid without overflow
            return np.stack([1.0 - p, p], axis=1)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def _require_classes(self, what):
        if self.task != "classify":
            kind = "a regressor" if self.task == "regress" else "a bare model (saved by MLP.save), with no class labels"
            raise ValueError(f"{what} needs a classifier; this pipeline is {kind}")

    def _collect(self, data, answer):
        source = self._source(data)
        parts = [answer(self.model.predict(self.transform(batch.features, source)))
                 for batch in self.batches(data, flag="data")]
        if not parts:
            raise DataError(f"data: {self._source(data)!r} holds no rows to predict")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @staticmethod
    def _source(data):
        return os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__

    # ---- reading rows -----------------------------------------------------------

    def batches(self, data, target=None, keep=(), score=False, flag="data", note=None):
        """The rows of ``data`` as Batches, matched to the model's columns: by
        name where it knows them, else by position. A file goes through a
        batch at a time, so that one larger than memory takes constant memory.
        With ``score``, targets are read as well: of the column (or, for a
        .npy, the file) ``target``, else of the run's own target column when
        present. ``note`` is called with a line about columns the model
        ignores; ``keep`` names columns carried into each Batch."""
        if isinstance(data, (str, os.PathLike)):
            return self._file_batches(os.fspath(data), target, keep, score, flag, note)
        if isinstance(data, np.ndarray):
            if keep:
                raise DataError(f"{flag}: columns can be kept only from a table, not from a matrix")
            return iter([Batch(self._matrix(np.asarray(data), flag))])
        table = _as_table(data, flag)
        return iter([self._table_batch(table, target, keep, score, flag, note)])

    def _matrix(self, X, flag):
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise DataError(f"{flag}: a matrix of features must be 2-D and numeric, got shape {X.shape} and "
                            f"dtype {X.dtype}")
        if any(c is not None for c in self._steps.categories):
            raise DataError(f"{flag}: the model has text columns ({quoted(self._text_columns())}); give a table "
                            f"(a DataFrame, an Arrow table or a file) rather than a matrix")
        if X.shape[1] != self._steps.n_columns:
            raise DataError(f"{flag}: {X.shape[1]} features, but {self._named()} takes {self._steps.n_columns}")
        return X

    def _named(self):
        return "the model" if self.path is None else f"the model in {self.path!r}"

    def _text_columns(self):
        steps = self._steps
        return [steps.names[j] if steps.names else j for j, c in enumerate(steps.categories) if c is not None]

    def _choose(self, names, target, score, path, flag, note):
        """(features, target or None, Arrow types of both) among ``names``."""
        import pyarrow as pa

        steps = self.preprocessing
        if score and target is None and steps is not None:
            target = steps.target  # read when present, as the training file had it
        target = target if score else None
        known = steps.names if steps is not None else None
        features, target = data.choose_columns(path, names, target, known, need_target=False, flag=flag)
        if len(features) != self._steps.n_columns:
            raise DataError(f"{flag}: {len(features)} features, but {self._named()} takes {self._steps.n_columns}")
        ignored = [name for name in names if name not in features and name != target
                   and (score or steps is None or name != steps.target)]
        if ignored and note is not None:
            listed = ", ".join(repr(name) + (" (unnamed, as pandas writes its index)" if name == "" else "")
                               for name in ignored)
            note(f"ignoring {len(ignored)} column{'s' if len(ignored) > 1 else ''} the model was not trained on: "
                 f"{listed}")
        types = {name: pa.string() if c is not None else pa.float64()
                 for name, c in zip(features, self._steps.categories)}
        if target is not None:
            text = steps is not None and steps.task == "classify" and isinstance(steps.classes[0], str)
            types[target] = pa.string() if text else pa.float64()
        return features, target, types

    def _kept(self, names, keep, path, flag):
        absent = [name for name in keep if name not in names]
        if absent:
            raise DataError(f"--keep-columns: {path!r} has no column{'s' if len(absent) > 1 else ''} "
                            f"{quoted(absent)}; its columns are {', '.join(names)}")

    def _table_batch(self, table, target, keep, score, flag, note):
        import pyarrow as pa

        names, path = table.column_names, "the table"
        self._kept(names, keep, path, flag)
        features, target, types = self._choose(names, target, score, path, flag, note)
        columns = {}
        for name in features + ([target] if target else []):
            column = table.column(name)
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            try:
                columns[name] = column.cast(types[name])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                wanted = "text" if types[name] == pa.string() else "numeric"
                raise DataError(f"{flag}: column {name!r} must be {wanted}, got {column.type} "
                                f"({str(error).splitlines()[0]})") from None
        typed = pa.table(columns)
        y = data.target_values(typed.column(target), path, target) if target else None
        return Batch(typed.select(features), y, {name: table.column(name) for name in keep})

    def _file_batches(self, path, target, keep, score, flag, note):
        extension = data.kind_of(path, flag)
        if extension in (".npz", ".npy"):
            if keep:
                raise DataError(f"--keep-columns: {path!r} has no named columns; keep columns of a .csv or "
                                f".parquet file")
            X, y = data.read_arrays(path, extension, target if extension == ".npy" else None, need_target=False)
            y = y if score else None
            X = self._matrix(X, flag)
            return (Batch(X[start:start + data.BATCH_ROWS], None if y is None else y[start:start + data.BATCH_ROWS])
                    for start in range(0, X.shape[0], data.BATCH_ROWS))
        import pyarrow as pa

        names = data.header(path, extension, flag)
        if score and target is not None and target not in names:
            raise DataError(f"--target: {path!r} has no column {target!r}; its columns are {', '.join(names)}. Name "
                            f"one of them, or drop --target to predict without scoring")
        self._kept(names, keep, path, flag)
        features, target, types = self._choose(names, target, score, path, flag, note)
        # kept columns of a CSV go through as the text they are (an ID keeps its leading zeros)
        types.update({name: pa.string() for name in keep if name not in types})
        columns = list(dict.fromkeys(features + ([target] if target else []) + list(keep)))
        as_read = [name for name in keep if name not in features and name != target]
        return (Batch(batch.select(features), None if target is None else data.target_values(batch.column(target),
                                                                                            path, target),
                      {name: batch.column(name) for name in keep})
                for batch in data.batches(path, extension, columns, types, flag=flag, as_read=as_read))


def _as_table(value, flag):
    """An Arrow table of a pandas DataFrame, an Arrow table or record batch."""
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if type(value).__name__ == "DataFrame" and hasattr(value, "columns"):
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
            raise DataError(f"{flag}: cannot read the DataFrame ({str(error).splitlines()[0]})") from None
    raise TypeError(f"{flag} must be a pandas DataFrame, an Arrow table, a file path or a matrix, got "
                    f"{describe(value)}")
