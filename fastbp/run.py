"""A training run as the command line makes it: settings to data, model,
optimizer and schedule; progress while it trains; a summary at the end.

Every setting is checked and every file read before anything trains or is
written, so that a bad argument changes nothing.
"""
import csv
import os
import sys
import tempfile
import time
from contextlib import nullcontext

import numpy as np

from fastbp import data
from fastbp.data import DataError
from fastbp.io import load_any, load_checkpoint
from fastbp.losses import LOSSES
from fastbp.mlp import MLP
from fastbp.optim import OPTIMIZERS
from fastbp.preprocessing import Preprocessing
from fastbp.schedules import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from fastbp.trainer import Trainer

DEFAULTS = {
    "dataset": "digits", "data": None, "target": None, "task": None, "hidden": [256, 128],
    "activation": "relu", "loss": None, "optimizer": "adamw", "lr": None, "momentum": None,
    "weight_decay": None, "epochs": 30, "batch_size": 64, "val_split": 0.1, "test_split": 0.2,
    "early_stopping": None, "lr_schedule": "cosine", "max_grad_norm": None, "seed": 0,
    "dtype": "float32", "standardize": None, "features": None, "impute": None, "unknown_category": None,
    "max_categories": None,
}
# what a checkpoint fixes: giving one of these with --resume is an error
MODEL_SETTINGS = ("task", "hidden", "activation", "loss", "optimizer", "lr", "momentum", "weight_decay",
                  "lr_schedule", "max_grad_norm", "seed", "dtype", "standardize", "val_split", "test_split",
                  "features", "impute", "unknown_category", "max_categories")
CLASSIFY_LOSSES, REGRESS_LOSSES = ("cross_entropy", "bce_with_logits"), ("mse", "l1", "huber")


def _flag(name):
    return "--" + name.replace("_", "-")


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
        if settings["data"]:
            extension = data.kind_of(source)
            if extension in (".csv", ".parquet"):
                if target is None:
                    raise DataError(f"--target: a {dict(csv='CSV', parquet='Parquet')[extension[1:]]} file needs "
                                    f"--target COLUMN naming the target column")
                features = known.names if known is not None else settings.get("features")
                X, y = data.read_table(source, extension, target, features, float_type=dtype.name)
                names, y = X.column_names, data.target_values(y, source, target)
            else:
                if settings.get("features"):
                    raise DataError(f"--features picks columns by name; {source!r} is an array, which has none")
                X, y = data.read_arrays(source, extension, target)
            inferred = data.infer_task(y)
        else:
            X, y, inferred = data.load_dataset(settings["dataset"])
        task = settings["task"] or inferred
        if task == "regress" and y.dtype.kind in "USO":
            raise DataError(f"--task regress needs numeric targets; {source} has labels such as {y[0]!r}")
        n = len(y)
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
                raise DataError(f"--data: {n_columns} features, but the checkpoint's model takes {steps.n_columns}")
        out = None
        if isinstance(X, np.memmap):
            out = np.memmap(tempfile.TemporaryFile(), dtype=dtype, mode="w+", shape=(n, steps.n_features))
        self.X = steps.transform(X, rows=order, out=out, dtype=dtype, source=source)
        self.y = steps.encode_targets(y[order])
        self.steps, self.preprocessing, self.task, self.source = steps, steps.to_dict(), steps.task, source
        self.n_features = steps.n_features
        self.parts = {"test": slice(0, n_test), "val": slice(n_test, n_test + n_val),
                      "train": slice(n_test + n_val, n)}

    def part(self, name):
        index = self.parts[name]
        return self.X[index], self.y[index]

    def size(self, name):
        return self.parts[name].stop - self.parts[name].start

    @property
    def n_outputs(self):
        return self.steps.n_outputs


def resolve(given, checkpoint_settings=None):
    """Settings of a run: the defaults (or a resumed run's settings) with
    what the command line gave. Raises DataError for a clash."""
    given = {key: value for key, value in given.items() if value is not None}
    if checkpoint_settings is None:
        settings = {**DEFAULTS, **given}
        if settings["standardize"] is None:  # a file's columns come in any units; an embedded set knows its own
            embedded = data.DATASETS.get(settings["dataset"])
            settings["standardize"] = settings["data"] is not None or bool(embedded and embedded[2])
        return settings
    fixed = [_flag(name) for name in MODEL_SETTINGS if name in given]
    if fixed:
        raise DataError(f"{fixed[0]} cannot be combined with --resume: the checkpoint fixes it")
    settings = {**checkpoint_settings}
    if "data" in given or "dataset" in given:
        settings.update(data=given.get("data"), dataset=given.get("dataset", DEFAULTS["dataset"]),
                        target=given.get("target"))
    settings.update({key: value for key, value in given.items() if key not in ("data", "dataset", "target")})
    return settings


def build(settings, prepared):
    """A fresh Trainer for ``settings``."""
    task, loss_name = prepared.task, settings["loss"]
    if loss_name is None:
        loss_name = "cross_entropy" if task == "classify" else "mse"
    allowed = CLASSIFY_LOSSES if task == "classify" else REGRESS_LOSSES
    if loss_name not in allowed:
        raise DataError(f"--loss {loss_name} does not fit the task {task}; use one of {', '.join(allowed)}")
    n_out = prepared.n_outputs
    if loss_name == "bce_with_logits":
        if n_out != 2:
            raise DataError(f"--loss bce_with_logits needs two classes, the data has {n_out}")
        n_out = 1
    settings["loss"] = loss_name
    model = MLP([prepared.n_features, *settings["hidden"], n_out], activation=settings["activation"],
                dtype=settings["dtype"], seed=settings["seed"])
    name = settings["optimizer"]
    kwargs = {"lr": settings["lr"] if settings["lr"] is not None else (0.01 if name == "sgd" else 1e-3)}
    if settings["weight_decay"] is not None:  # else the optimizer's default: 0, or 0.01 for adamw
        kwargs["weight_decay"] = settings["weight_decay"]
    if settings["momentum"] is not None and name not in ("sgd", "rmsprop"):
        raise DataError(f"--momentum applies to sgd and rmsprop, not {name}")
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = settings["momentum"] if settings["momentum"] is not None else (0.9 if name == "sgd" else 0.0)
    optimizer = OPTIMIZERS[name](model, **kwargs)
    epochs, schedule = settings["epochs"], settings["lr_schedule"]
    schedule = {"constant": lambda: None,
                "step": lambda: StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1),
                "cosine": lambda: CosineAnnealingLR(optimizer, T_max=max(1, epochs)),
                "plateau": lambda: ReduceLROnPlateau(optimizer, factor=0.1, patience=5)}[schedule]()
    return Trainer(model, LOSSES[loss_name](), optimizer, max_grad_norm=settings["max_grad_norm"],
                   schedule=schedule)


def targets_for(trainer, y):
    """The encoded targets in the form the trainer's loss takes."""
    return y.astype(np.float64).reshape(-1, 1) if trainer.loss.name == "bce_with_logits" else y


class Progress:
    """One bar over the epochs (tqdm when installed, else a line per epoch)."""

    def __init__(self, total, start, quiet, n_samples):
        self.n_samples, self.quiet, self.bar = n_samples, quiet, None
        if quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=start, desc="epoch", unit="epoch", dynamic_ncols=True,
                        file=sys.stdout, bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")

    def __call__(self, trainer, logs):
        if self.quiet:
            return
        parts = [f"loss {logs['loss']:.4f}"]
        if "val_loss" in logs:
            parts.append(f"val_loss {logs['val_loss']:.4f}")
            parts.append(f"val_{trainer.history.metric} {logs['val_metric']:.4f}")
        parts.append(f"{self.n_samples / logs['seconds']:,.0f} samples/s")
        if self.bar is None:
            print(f"epoch {logs['epoch']}: " + "  ".join(parts), flush=True)
        else:
            self.bar.set_postfix_str("  ".join(parts), refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def thread_limit(threads):
    """A context that limits the BLAS threads (threadpoolctl), or does nothing."""
    if threads is None:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise DataError("--threads needs threadpoolctl; install it with: pip install 'fastbp[sklearn]'") from None
    return threadpool_limits(limits=threads)


def check_output(flag, path):
    """An output path whose folder exists, checked before anything is written."""
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"{flag}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{flag}: {path!r} is a folder, expected a file path")
    return path


def decode(preprocessing, loss_name, outputs):
    """Predictions in the data's own terms from the model's outputs (see
    ``Preprocessing.decode``); ``preprocessing`` is its saved dict."""
    return Preprocessing.from_dict(preprocessing).decode(outputs, loss_name)


def describe_counts(prepared):
    counts = "/".join(str(prepared.size(p)) for p in ("train", "val", "test"))
    classes = prepared.steps.classes
    n = prepared.n_outputs
    what = f"{len(classes)} classes" if classes is not None else f"{n} target{'s' if n > 1 else ''}"
    return "\n".join([f"{prepared.source}: {prepared.X.shape[0]} samples, {prepared.n_features} features, {what}; "
                      f"train/val/test {counts}"] + [f"note: {note}" for note in prepared.steps.notes])


def train(given, resume=None, save=None, plot=None, quiet=False, threads=None, out=None):
    """The ``fastbp train`` command; returns the exit status."""
    import numba.core.event as numba_event

    out = out or sys.stdout
    started = time.perf_counter()
    save, plot = check_output("--save", save), check_output("--plot", plot)
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise DataError("--plot needs matplotlib; install it with: pip install 'fastbp[plot]'") from None
    if resume is not None:
        try:
            trainer = load_checkpoint(resume)
        except (OSError, ValueError) as error:
            raise DataError(f"--resume: {error}") from None
        if "settings" not in trainer.metadata:
            raise DataError(f"--resume: {resume!r} was not written by fastbp train (no settings in it)")
        settings = resolve(given, trainer.metadata["settings"])
        prepared = Prepared(settings, trainer.metadata["preprocessing"])
        if prepared.n_features != trainer.model.sizes[0]:
            raise DataError(f"--data: {prepared.n_features} features, but the checkpoint's model takes "
                            f"{trainer.model.sizes[0]}")
    else:
        settings = resolve(given)
        prepared = Prepared(settings)
        trainer = build(settings, prepared)
    remaining = settings["epochs"] - trainer.epoch
    if remaining < 1 and resume is not None:
        raise DataError(f"--epochs {settings['epochs']}: the checkpoint has trained {trainer.epoch} epochs "
                        f"already; ask for more")
    limit = thread_limit(threads)
    data_seconds = time.perf_counter() - started
    X_train, y_train = prepared.part("train")
    X_val, y_val = prepared.part("val")
    X_test, y_test = prepared.part("test")
    y_train, y_val, y_test = (targets_for(trainer, y) for y in (y_train, y_val, y_test))
    model = trainer.model
    print(describe_counts(prepared), file=out)
    print(f"model: MLP {list(model.sizes)} {settings['activation']}, {model.dtype.name}, "
          f"{model.n_params:,} parameters; {settings['optimizer']} lr {trainer.optimizer.lr:g}, "
          f"{trainer.loss.name} loss, batch {settings['batch_size']}, {settings['lr_schedule']} schedule"
          + (", standardized inputs" + (" and targets" if prepared.task == "regress" else "")
             if settings["standardize"] else "")
          + (f"; resuming at epoch {trainer.epoch}" if resume else ""), file=out, flush=True)

    if resume is not None and settings["lr_schedule"] in ("step", "cosine") \
            and settings["epochs"] != trainer.metadata["settings"]["epochs"]:
        print(f"note: the {settings['lr_schedule']} schedule was laid out for "
              f"{trainer.metadata['settings']['epochs']} epochs; it follows the same formula past that",
              file=out)
    trainer.metadata = {"settings": settings, "preprocessing": prepared.preprocessing}
    progress = Progress(settings["epochs"], trainer.epoch, quiet, len(X_train))
    # a checkpoint after every epoch, so that an interrupted run can resume
    callbacks = [progress] + ([lambda trainer, logs: trainer.save(save)] if save else [])
    jit = numba_event.TimingListener()
    fit_started = time.perf_counter()
    try:
        with limit, numba_event.install_listener("numba:compiler_lock", jit):
            trainer.fit(X_train, y_train, epochs=max(remaining, 0), batch_size=settings["batch_size"],
                        seed=settings["seed"] if resume is None else None,
                        validation_data=(X_val, y_val) if len(X_val) else None,
                        early_stopping=settings["early_stopping"], callbacks=callbacks)
            test_score = trainer.score(X_test, y_test) if len(X_test) else None
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:
        progress.close()
    if interrupted:
        kept = f"; {save} holds epoch {trainer.history.epoch[-1]}: --resume {save} goes on" \
            if save and len(trainer.history) else ""
        print(f"fastbp: interrupted in epoch {trainer.epoch + 1}{kept}", file=sys.stderr)
        return 130
    fit_seconds = time.perf_counter() - fit_started
    jit_seconds = jit.duration if jit.done else 0.0

    history, metric = trainer.history, trainer.history.metric
    best = history.best_epoch
    if best is not None:
        index = best - 1
        monitored = (f"val_loss {history.val_loss[index]:.4f}, val_{metric} {history.val_metric[index]:.4f}"
                     if history.has_validation else f"loss {history.loss[index]:.4f}")
        stopped = " (early stopping: best weights restored)" if trainer.epoch < settings["epochs"] else ""
        print(f"best epoch {best} of {trainer.epoch}: {monitored}{stopped}", file=out)
    if test_score is not None:
        detail = f" ({int(round(test_score * len(X_test)))}/{len(X_test)} correct)" if metric == "accuracy" else ""
        print(f"test {metric} {test_score:.4f}{detail}", file=out)
    print(f"time {time.perf_counter() - started:.2f} s: data {data_seconds:.2f} s, training and evaluation "
          f"{fit_seconds:.2f} s (of which JIT compile and cache load {jit_seconds:.2f} s)", file=out)
    if save:
        trainer.save(save)
        print(f"saved {save} (fastbp predict --model {save} --data ...; --resume {save} to go on)", file=out)
    if plot:
        history.plot(plot)
        print(f"wrote {plot}", file=out)
    return 0


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


def predict(model_path, data_path, target=None, out_path=None, out=None, unknown_category=None):
    """The ``fastbp predict`` command; returns the exit status.

    The data go through in batches, read, preprocessed, predicted and
    written one after the other, so that a file larger than memory is
    predicted at constant memory."""
    out = out or sys.stdout
    out_path = check_output("--out", out_path)
    if out_path is not None and os.path.splitext(out_path)[1].lower() not in (".csv", ".parquet", ".npy"):
        raise DataError(f"--out: {out_path!r} must end in .csv, .parquet or .npy")
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
    except BaseException:
        writer.close(keep=False)
        raise
    writer.close(keep=True)
    if score is not None:
        print(score.line(), file=sys.stderr)
    if out_path is not None:
        print(f"wrote {written} predictions to {out_path}", file=sys.stderr)
    return 0
