"""A training run as the command line makes it: settings to data, model,
optimizer and schedule; progress while it trains; a summary at the end.

Every setting is checked and every file read before anything trains or is
written, so that a bad argument changes nothing.
"""
import csv
import os
import re
import signal
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import nullcontext

import numba.core.event as numba_event
import numpy as np

from fastbp import data
from fastbp._checks import as_matrix
from fastbp.cuda import as_device
from fastbp.data import DataError
from fastbp.io import CHECKPOINT_FORMAT, MODEL_FORMAT, load_any, load_checkpoint
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
    "max_categories": None, "on_nonfinite": "raise",
}
# what a checkpoint fixes: giving one of these with --resume is an error
MODEL_SETTINGS = ("task", "hidden", "activation", "loss", "optimizer", "momentum", "weight_decay",
                  "max_grad_norm", "seed", "dtype", "standardize", "val_split", "test_split",
                  "features", "impute", "unknown_category", "max_categories")
CLASSIFY_LOSSES, REGRESS_LOSSES = ("cross_entropy", "bce_with_logits"), ("mse", "l1", "huber")
# without --save-every, the checkpoint is written at most this often (and at the end): a write costs
# more than an epoch of a small model
SAVE_SECONDS = 5.0


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
    # a setting newer than the checkpoint takes its default
    settings = {**DEFAULTS, **checkpoint_settings}
    if "data" in given or "dataset" in given:
        settings.update(data=given.get("data"), dataset=given.get("dataset", DEFAULTS["dataset"]),
                        target=given.get("target"))
    settings.update({key: value for key, value in given.items() if key not in ("data", "dataset", "target")})
    return settings


def build(settings, prepared):
    """A fresh Trainer for ``settings``. The library checks every value; what
    it refuses is a DataError naming the command-line flag."""
    try:
        return _build(settings, prepared)
    except DataError:
        raise
    except (TypeError, ValueError) as error:
        name, _, rest = str(error).partition(" ")
        raise DataError(f"{_flag(name)} {rest}" if name in DEFAULTS else str(error)) from None


def _build(settings, prepared):
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
    return Trainer(model, LOSSES[loss_name](), optimizer, max_grad_norm=settings["max_grad_norm"],
                   schedule=plan_schedule(settings["lr_schedule"], optimizer, settings["epochs"]))


def plan_schedule(name, optimizer, epochs):
    """The schedule ``name`` laid out over ``epochs`` from the optimizer's
    current rate: step divides it by 10 every third of them, cosine anneals it
    to 0 by the last, plateau waits for the validation loss."""
    epochs = max(1, epochs)
    return {"constant": lambda: None,
            "step": lambda: StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1),
            "cosine": lambda: CosineAnnealingLR(optimizer, T_max=epochs),
            "plateau": lambda: ReduceLROnPlateau(optimizer, factor=0.1, patience=5)}[name]()


def replan(trainer, settings, given):
    """Fit a resumed run's schedule to its new end: a --lr or --lr-schedule
    starts a new schedule over the remaining epochs; else a step or cosine
    schedule is laid out again for --epochs in all, at its current position,
    so that the rate is the one a run planned that long would have now.
    Returns what changed, for the header ("" for nothing)."""
    optimizer, old, total = trainer.optimizer, trainer.schedule, settings["epochs"]
    if given.get("lr") is not None or given.get("lr_schedule") is not None:
        # a schedule that has run its course leaves the rate near 0: start again from the run's first rate
        optimizer.lr = given["lr"] if given.get("lr") is not None else (old.base_lr if old else optimizer.lr)
        trainer.schedule = plan_schedule(settings["lr_schedule"], optimizer, total - trainer.epoch)
        return (f"new {settings['lr_schedule']} schedule from lr {optimizer.lr:g} over epochs "
                f"{trainer.epoch + 1}-{total}")
    if old is None or old.name not in ("step", "cosine"):
        return ""
    began = trainer.epoch - old.last_epoch
    new = plan_schedule(old.name, optimizer, total - began)
    if new.arguments() == old.arguments():
        return ""
    new.load_state_dict(old.state_dict())
    optimizer.lr = new.lr_at(new.last_epoch)
    trainer.schedule = new
    return f"{old.name} schedule re-planned for {total} epochs"


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
        if logs.get("skipped"):
            parts.append(f"{logs['skipped']} non-finite batches skipped")
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


def check_output(flag, path, inputs=None, overwrite=False):
    """An output path that may be written, checked before anything is read at
    length or written: its folder exists; it is none of the run's ``inputs``
    ({flag: path or None}), which not even ``overwrite`` allows; and a file
    already there is empty or of the kind fastbp writes at ``flag`` (see
    REPLACEABLE), else it is replaced only with ``overwrite``."""
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"{flag}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{flag}: {path!r} is a folder, expected a file path")
    for source, other in (inputs or {}).items():
        if other is not None and _same_file(path, other):
            raise DataError(f"{flag}: {path!r} is the {source} file; fastbp never writes over what it reads: "
                            f"give another path")
    if os.path.isfile(path) and os.path.getsize(path) and not overwrite:
        what, written_by_fastbp = REPLACEABLE[flag]
        try:
            ours = written_by_fastbp(path)
        except OSError:  # unreadable: nothing shows that fastbp wrote it
            ours = False
        if not ours:
            raise DataError(f"{flag}: {path!r} exists and is not {what}; give another path, or add --overwrite "
                            f"to replace it")
    return path


def _same_file(path, other):
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist
        return os.path.realpath(path) == os.path.realpath(other)


def _head(path, size):
    with open(path, "rb") as stream:
        return stream.read(size)


def _is_fastbp_archive(path):
    if _head(path, 2) != b"PK":  # np.load would read a .npy whole
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return str(archive["format"]) in (MODEL_FORMAT, CHECKPOINT_FORMAT)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


def _is_predictions(path):
    """A .csv or .parquet whose columns are the ones _Writer names; a .npy
    carries no names, so nothing shows that fastbp wrote it."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        names = _head(path, 1 << 16).split(b"\n")[0].rstrip(b"\r").decode("latin-1").split(",")
    elif extension == ".parquet":
        try:
            import pyarrow.parquet

            names = pyarrow.parquet.read_schema(path).names
        except (OSError, ValueError):
            return False
    else:
        return False
    return names in (["prediction"], [f"prediction_{i}" for i in range(len(names))])


def _is_png(path):
    return _head(path, 8) == b"\x89PNG\r\n\x1a\n"


# flag -> (what fastbp writes there, whether the file at a path is one of those)
REPLACEABLE = {
    "--save": ("a fastbp model or checkpoint", _is_fastbp_archive),
    "--out": ("a CSV or Parquet file of fastbp predictions", _is_predictions),
    "--plot": ("a PNG image", _is_png),
    "--png": ("a PNG image", _is_png),
    "--json": ("a fastbp bench result", lambda path: re.match(rb'\{\s*"ceiling"', _head(path, 64)) is not None),
}


def data_inputs(data_path, target):
    """The files a --data and --target read: --target is a file for a .npy only."""
    extension = None if data_path is None else os.path.splitext(data_path)[1].lower()
    if extension == ".npz" and target is not None:
        raise DataError(f"--target: {data_path!r} is a .npz, whose targets are its array 'y'; drop --target {target}")
    return {"--data": data_path, "--target": target if extension == ".npy" else None}


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


class Saver:
    """The --save callback: a checkpoint every ``every`` epochs, or (``every``
    None) at most once every SAVE_SECONDS; the run writes the last one itself."""

    def __init__(self, path, every):
        self.path, self.every, self.epoch, self.time = path, every, None, time.perf_counter()

    def __call__(self, trainer, logs):
        due = trainer.epoch % self.every == 0 if self.every else time.perf_counter() - self.time >= SAVE_SECONDS
        if due:
            self.write(trainer)

    def write(self, trainer):
        trainer.save(self.path)
        self.epoch, self.time = trainer.epoch, time.perf_counter()


class StopOnInterrupt:
    """A context and callback: inside it, Ctrl-C ends training after the
    current epoch, where the trainer's state is whole and can be saved; a
    second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.pressed, self.previous = False, None

    def __enter__(self):
        # only Python's own handler is replaced: not one a caller installed, nor an ignored SIGINT
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self.press)
        return self

    def __exit__(self, *exception):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def press(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nstopping after this epoch (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __call__(self, trainer, logs):
        trainer.stop_training = trainer.stop_training or self.pressed


class CompileNotice(numba_event.Listener):
    """Says once, on stderr, that the kernels are compiling: Numba announces a
    compilation before it starts and only when its cache holds no machine code
    for it, so a run with a warm cache says nothing."""

    def __init__(self):
        self.said = False

    def on_start(self, event):
        if not self.said:
            self.said = True
            print("compiling kernels (first run only; cached after)", file=sys.stderr, flush=True)

    def on_end(self, event):
        pass


def train(given, resume=None, save=None, plot=None, quiet=False, threads=None, out=None, save_every=None,
           overwrite=False, device="cpu", distributed=False, checkpoint_every=None):
    """The ``fastbp train`` command; returns the exit status."""
    with numba_event.install_listener("numba:compile", CompileNotice()):
        status = _train(given, resume, save, plot, quiet, threads, out or sys.stdout, save_every, overwrite, device,
                        distributed, checkpoint_every)
    if distributed:
        from fastbp.distributed import shutdown

        shutdown()
    return status


def _join_process_group(device):
    """(rank, world size) of this process in the torchrun launch --distributed trains across."""
    if device != "cpu":
        raise DataError(f"--distributed trains on the CPU (gloo), got --device {device}; drop one of the two")
    from fastbp.distributed import init

    try:
        return init()
    except (ImportError, RuntimeError) as error:
        raise DataError(f"--distributed: {error}") from None


def _train(given, resume, save, plot, quiet, threads, out, save_every, overwrite, device, distributed=False,
           checkpoint_every=None):
    started = time.perf_counter()
    try:
        as_device("--device", device)
    except RuntimeError as error:
        raise DataError(f"--device {device}: {error}") from None
    rank, world_size = _join_process_group(device) if distributed else (0, 1)
    if save_every is not None and save is None:
        raise DataError(f"--save-every {save_every} needs --save PATH, the checkpoint to write")
    if checkpoint_every is not None and save is None:
        raise DataError(f"--checkpoint-every {checkpoint_every} needs --save PATH, the checkpoint to write")
    if checkpoint_every is not None and distributed:
        raise DataError(f"--checkpoint-every {checkpoint_every} works in one process only; with --distributed, "
                        f"--save writes at the end of epochs")
    if checkpoint_every is not None and device == "cuda":
        raise DataError(f"--checkpoint-every {checkpoint_every} works on the CPU only; on the GPU, use "
                        f"--save-every N (epochs)")
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
        if settings["epochs"] <= trainer.epoch:
            raise DataError(f"--epochs {settings['epochs']}: the checkpoint has trained {trainer.epoch} epochs "
                            f"already; ask for more")
        stopped = trainer._epoch_state
        if stopped is not None and settings["batch_size"] != stopped["batch_size"]:
            raise DataError(f"--batch-size {settings['batch_size']}: the checkpoint stopped in the middle of epoch "
                            f"{trainer.epoch + 1}, in batches of {stopped['batch_size']}; resume with "
                            f"--batch-size {stopped['batch_size']}")
        if stopped is not None and device == "cuda":
            raise DataError(f"--device cuda: the checkpoint stopped in the middle of epoch {trainer.epoch + 1}, "
                            f"which only the CPU goes on from; resume on the CPU")
    else:
        settings = resolve(given)
        if settings["epochs"] < 1:
            raise DataError(f"--epochs {settings['epochs']} trains nothing; ask for at least 1")
    # saving over the checkpoint a run resumes from is how it goes on
    inputs = data_inputs(settings["data"], settings["target"])
    save = check_output("--save", save, inputs, overwrite)
    plot = check_output("--plot", plot, {**inputs, "--resume": resume, "--save": save}, overwrite)
    if plot is not None and os.path.splitext(plot)[1].lower() != ".png":
        raise DataError(f"--plot: {str(plot)!r} must end in .png, the format of the chart")
    if settings["batch_size"] % world_size:
        down = max(settings["batch_size"] // world_size, 1) * world_size
        raise DataError(f"--batch-size {settings['batch_size']} is the global batch and must be a multiple of the "
                        f"number of processes ({world_size}); use {down} or {down + world_size}")
    if rank:
        # rank 0 alone prints and writes; the others train their shard in silence
        out, quiet, save, plot = open(os.devnull, "w"), True, None, None
    if resume is not None:
        prepared = Prepared(settings, trainer.metadata["preprocessing"])
        change = replan(trainer, settings, given)
    else:
        prepared = Prepared(settings)
        trainer = build(settings, prepared)
        change = ""
    if distributed:
        from fastbp.distributed import DistributedTrainer

        trainer = DistributedTrainer.wrap(trainer)
    limit = thread_limit(threads)
    data_seconds = time.perf_counter() - started
    X_train, y_train = prepared.part("train")
    stopped = trainer._epoch_state
    if stopped is not None and len(X_train) != stopped["n_samples"]:
        raise DataError(f"--data: {prepared.source} gives {len(X_train)} training samples, but the checkpoint "
                        f"stopped in the middle of an epoch over {stopped['n_samples']}; resume on the data it "
                        f"was trained on")
    X_val, y_val = prepared.part("val")
    X_test, y_test = prepared.part("test")
    y_train, y_val, y_test = (targets_for(trainer, y) for y in (y_train, y_val, y_test))
    model = trainer.model.to(device)
    print(describe_counts(prepared), file=out)
    print(f"model: MLP {list(model.sizes)} {settings['activation']}, {model.dtype.name}, "
          f"{model.n_params:,} parameters; {settings['optimizer']} lr {trainer.optimizer.lr:g}, "
          f"{trainer.loss.name} loss, batch {settings['batch_size']}, {settings['lr_schedule']} schedule"
          + (", standardized inputs" + (" and targets" if prepared.task == "regress" else "")
             if settings["standardize"] else "")
          + (", on the GPU" if device == "cuda" else "")
          + (f", across {world_size} processes" if distributed else "")
          + (f"; resuming at epoch {trainer.epoch}" if resume else "") + (f", {change}" if change else ""),
          file=out, flush=True)
    trainer.metadata = {"settings": settings, "preprocessing": prepared.preprocessing}
    progress = Progress(settings["epochs"], trainer.epoch, quiet, len(X_train))
    saver, stopper = Saver(save, save_every) if save else None, StopOnInterrupt()
    jit = numba_event.TimingListener()
    fit_started = time.perf_counter()
    test_score, aborted = None, False
    try:
        with limit, numba_event.install_listener("numba:compiler_lock", jit), stopper:
            trainer.fit(X_train, y_train, epochs=settings["epochs"] - trainer.epoch,
                        batch_size=settings["batch_size"], seed=settings["seed"] if resume is None else None,
                        validation_data=(X_val, y_val) if len(X_val) else None,
                        early_stopping=settings["early_stopping"], callbacks=[progress, stopper] + ([saver] if saver else []),
                        checkpoint_every=checkpoint_every, checkpoint_path=save if checkpoint_every else None,
                        on_nonfinite=settings["on_nonfinite"])
            if len(X_test) and not stopper.pressed:
                test_score = trainer.score(X_test, y_test)
    except KeyboardInterrupt:
        # a second Ctrl-C, mid-epoch: the trainer's state is not whole and is not saved
        aborted = stopper.pressed
        if not aborted:  # raised by a callback, after its epoch
            stopper.pressed = True
    finally:
        progress.close()
    fit_seconds = time.perf_counter() - fit_started
    jit_seconds = jit.duration if jit.done else 0.0
    interrupted = stopper.pressed

    history, metric = trainer.history, trainer.history.metric
    best = history.best_epoch
    if best is not None and not aborted:
        index = best - 1
        monitored = (f"val_loss {history.val_loss[index]:.4f}, val_{metric} {history.val_metric[index]:.4f}"
                     if history.has_validation else f"loss {history.loss[index]:.4f}")
        asked = settings["epochs"]
        why = (f" run (interrupted, {asked} asked for)" if interrupted else
               f" run (early stopping, {asked} asked for; best weights restored)" if trainer.epoch < asked else "")
        print(f"best epoch {best} of {trainer.epoch}{why}: {monitored}", file=out)
    if test_score is not None:
        detail = f" ({int(round(test_score * len(X_test)))}/{len(X_test)} correct)" if metric == "accuracy" else ""
        print(f"test {metric} {test_score:.4f}{detail}", file=out)
    if save and not aborted:
        saver.write(trainer)
    if interrupted:
        held = trainer.epoch if save and not aborted else saver.epoch if save else None
        kept = f"; {save} holds epoch {held}: --resume {save} --epochs {settings['epochs']} goes on" if held else ""
        where = f"in epoch {trainer.epoch + 1}" if aborted else f"after epoch {trainer.epoch}"
        print(f"fastbp: interrupted {where}{kept}", file=sys.stderr)
        return 130
    print(f"time {time.perf_counter() - started:.2f} s: data {data_seconds:.2f} s, training and evaluation "
          f"{fit_seconds:.2f} s (of which JIT compile and cache load {jit_seconds:.2f} s)", file=out)
    if save:
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
