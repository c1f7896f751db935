"""A training run as the command line makes it: settings to data, model,
optimizer and schedule; progress while it trains; a summary at the end.

Every setting is checked and every file read before anything trains or is
written, so that a bad argument changes nothing.
"""
import csv
import os
import sys
import time
from contextlib import nullcontext

import numpy as np

from fastbp import data
from fastbp.data import DataError
from fastbp.io import load_any, load_checkpoint
from fastbp.losses import LOSSES
from fastbp.metrics import r2, score
from fastbp.mlp import MLP
from fastbp.optim import OPTIMIZERS
from fastbp.schedules import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from fastbp.trainer import Trainer

DEFAULTS = {
    "dataset": "digits", "data": None, "target": None, "task": None, "hidden": [256, 128],
    "activation": "relu", "loss": None, "optimizer": "adamw", "lr": None, "momentum": None,
    "weight_decay": None, "epochs": 30, "batch_size": 64, "val_split": 0.1, "test_split": 0.2,
    "early_stopping": None, "lr_schedule": "cosine", "max_grad_norm": None, "seed": 0,
    "dtype": "float32", "standardize": None,
}
# what a checkpoint fixes: giving one of these with --resume is an error
MODEL_SETTINGS = ("task", "hidden", "activation", "loss", "optimizer", "lr", "momentum", "weight_decay",
                  "lr_schedule", "max_grad_norm", "seed", "dtype", "standardize", "val_split", "test_split")
CLASSIFY_LOSSES, REGRESS_LOSSES = ("cross_entropy", "bce_with_logits"), ("mse", "l1", "huber")


def _flag(name):
    return "--" + name.replace("_", "-")


class Prepared:
    """The data of a run, split and scaled, with the preprocessing to save."""

    def __init__(self, settings, preprocessing=None):
        source = settings["data"] or settings["dataset"]
        if settings["data"]:
            X, y, features = data.read_data(settings["data"], settings["target"])
            inferred = data.infer_task(y)
        else:
            X, y, inferred = data.load_dataset(settings["dataset"])
            features = None
        task = settings["task"] or inferred
        if task == "regress" and y.dtype.kind in "USO":
            raise DataError(f"--task regress needs numeric targets; {source} has labels such as {y[0]!r}")
        n = X.shape[0]
        order = np.random.default_rng(settings["seed"]).permutation(n)
        n_test, n_val = int(round(settings["test_split"] * n)), int(round(settings["val_split"] * n))
        if n - n_test - n_val < 1:
            raise DataError(f"--test-split {settings['test_split']} and --val-split {settings['val_split']} "
                            f"leave no training samples out of {n}")
        parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        if preprocessing is None:
            train = parts["train"]
            classes = data.class_list(y[train]) if task == "classify" else None
            if classes is not None and len(classes) < 2:
                raise DataError(f"--data: classification needs at least two classes; {source} has {classes}")
            scale = settings["standardize"]
            x_scaling = data.Scaling.fit(X[train]) if scale else data.Scaling.identity(X.shape[1])
            y_scaling = None
            if task == "regress":
                y_2d = y.reshape(n, -1).astype(np.float64)
                y_scaling = data.Scaling.fit(y_2d[train]) if scale else data.Scaling.identity(y_2d.shape[1])
                y_scaling = y_scaling.as_dict()
            preprocessing = {"task": task, "classes": classes, "x_scaling": x_scaling.as_dict(),
                             "y_scaling": y_scaling, "features": features, "target": settings["target"]}
        elif preprocessing["task"] != task:
            raise DataError(f"the checkpoint's model does {preprocessing['task']} but the data asks to {task}")
        self.preprocessing, self.task, self.source = preprocessing, preprocessing["task"], source
        self.n_features = X.shape[1]
        self.X = data.Scaling(**preprocessing["x_scaling"]).apply(X)
        if self.task == "classify":
            self.y = data.encode_labels(y, preprocessing["classes"])
        else:
            self.y = data.Scaling(**preprocessing["y_scaling"]).apply(y.reshape(n, -1).astype(np.float64))
        self.parts = parts

    def part(self, name):
        index = self.parts[name]
        return self.X[index], self.y[index]

    @property
    def n_outputs(self):
        classes = self.preprocessing["classes"]
        return len(classes) if classes is not None else self.y.shape[1]


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
    """Predictions in the data's own terms from the model's outputs: class
    labels for a classifier, values in the target's units for a regressor."""
    if preprocessing["task"] == "classify":
        classes = np.array(preprocessing["classes"])
        index = (outputs[:, 0] > 0).astype(int) if loss_name == "bce_with_logits" else np.argmax(outputs, axis=1)
        return classes[index]
    return data.Scaling(**preprocessing["y_scaling"]).invert(outputs.astype(np.float64))


def describe_counts(prepared):
    counts = "/".join(str(len(prepared.parts[p])) for p in ("train", "val", "test"))
    classes = prepared.preprocessing["classes"]
    n = prepared.n_outputs
    what = f"{len(classes)} classes" if classes is not None else f"{n} target{'s' if n > 1 else ''}"
    return (f"{prepared.source}: {prepared.X.shape[0]} samples, {prepared.n_features} features, {what}; "
            f"train/val/test {counts}")


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


def predict(model_path, data_path, target=None, out_path=None, out=None):
    """The ``fastbp predict`` command; returns the exit status."""
    out = out or sys.stdout

    out_path = check_output("--out", out_path)
    if out_path is not None and os.path.splitext(out_path)[1].lower() not in (".csv", ".npy"):
        raise DataError(f"--out: {out_path!r} must end in .csv or .npy")
    try:
        model, trainer = load_any(model_path)
    except (OSError, ValueError) as error:
        raise DataError(f"--model: {error}") from None
    loss_name = trainer.loss.name if trainer is not None else None
    preprocessing = trainer.metadata.get("preprocessing") if trainer is not None else None
    if target is None and preprocessing is not None and data_path.lower().endswith(".csv"):
        target = preprocessing["target"]  # scored when the file has that column
    # a model that knows its columns' names takes a CSV's columns by name, in any order
    features = preprocessing["features"] if preprocessing is not None else None
    X, y, names = data.read_data(data_path, target, need_target=False, features=features)
    if X.shape[1] != model.sizes[0]:
        raise DataError(f"--data: {X.shape[1]} features, but the model in {model_path!r} takes {model.sizes[0]}")
    ignored = [name for name in names if name not in features] if features and names else []
    if ignored:
        listed = ", ".join(repr(name) + (" (unnamed, as pandas writes its index)" if name == "" else "")
                           for name in ignored)
        print(f"note: ignoring {len(ignored)} column{'s' if len(ignored) > 1 else ''} the model was not trained "
              f"on: {listed}", file=sys.stderr)
    if preprocessing is not None:
        X = data.Scaling(**preprocessing["x_scaling"]).apply(X)
    outputs = model.predict(X)
    predictions = decode(preprocessing, loss_name, outputs) if preprocessing is not None else outputs
    if y is not None and preprocessing is not None:
        if preprocessing["task"] == "classify":
            labels = data.encode_labels(y, preprocessing["classes"])
            loss = LOSSES[loss_name]()
            value = score(loss, outputs, labels.reshape(-1, 1).astype(np.float64), labels)
            print(f"accuracy {value:.4f} ({int(round(value * len(X)))}/{len(X)} correct)", file=sys.stderr)
        else:
            print(f"r2 {r2(predictions, y.reshape(len(X), -1)):.4f} on {len(X)} samples", file=sys.stderr)
    predictions = predictions.reshape(len(X), -1)
    if out_path is not None and out_path.lower().endswith(".npy"):
        np.save(out_path, predictions)
    else:
        # the csv writer quotes a label that holds a comma, a quote or a line break
        with open(out_path, "w", newline="") if out_path else nullcontext(out) as stream:
            writer = csv.writer(stream, lineterminator="\n")
            if out_path:
                n = predictions.shape[1]
                writer.writerow(["prediction"] if n == 1 else [f"prediction_{i}" for i in range(n)])
            writer.writerows([str(value) for value in row] for row in predictions)
    if out_path is not None:
        print(f"wrote {len(predictions)} predictions to {out_path}", file=sys.stderr)
    return 0
