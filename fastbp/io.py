"""Model files and training checkpoints: NumPy .npz archives (no pickles)
with a format name and version.

A model file (``format`` "fastbp-model", ``format_version`` 1) holds:
``sizes`` (int64), ``activations`` (JSON: a list of [name, params] per layer),
``bias`` (bool), ``dtype`` ("float32" / "float64"), ``params`` (the flat
parameter buffer, layer by layer: W (n_out, n_in) row-major, then b).

A checkpoint (``format`` "fastbp-checkpoint", ``format_version`` 3) holds the
model's keys (``params``: the weights the model predicts with, the best
epoch's when a fit restored them) and what a run needs to go on exactly where
it stopped: ``optimizer`` (its name), ``optimizer_hyper`` (float64, the
kernel's scalars, the current learning rate first), ``optimizer_state_0..2``
(the moment buffers; empty when unused), ``optimizer_step``, ``rng_state``
(uint64, the shuffling stream), ``best_params`` (the best epoch's parameters;
empty before any epoch), ``last_params`` (the last epoch's parameters, which
training goes on from, when ``params`` holds restored best ones; else empty),
``epoch_rng_state`` (uint64: for a checkpoint written in the middle of an
epoch, the shuffling stream as it was before that epoch drew its order; else
empty) and ``training`` (JSON: epoch, loss name and arguments, max_grad_norm,
schedule name, arguments and state, the history, the best-params epoch, the
trainer's metadata, and ``in_epoch``: null at the end of an epoch, else where
in the next epoch the run stopped: ``position`` (the samples of its order
trained on), ``loss_sum`` (their loss sum), ``batch_size``, ``n_samples`` and
``shuffle``).

Version 1 checkpoints still load: they have no ``last_params`` and keep
``best_params`` only when early stopping asked for them. Version 1 and 2
checkpoints all end an epoch; a fastbp that reads only up to version 2
refuses a version 3 file rather than go on from the middle of an epoch as if
from its start.

``fastbp train`` keeps in that metadata ``settings`` (its options) and
``preprocessing``, what it learnt from the training split of its data
(``fastbp.preprocessing.Preprocessing.to_dict``), which ``fastbp predict``
applies to new data: ``task`` ("classify" / "regress"), ``target`` (the
target column's name, or null for arrays), ``columns`` (the input columns'
names in order, or null: by position), per input column ``categories``
(null for a numeric column, else its sorted categories, one-hot encoded in
that order), ``mean`` and ``scale`` (a numeric column's standardisation
``(x - mean) / scale``; 0 and 1 when off and for text columns), ``fill``
(null when a missing value is an error, else per column the value, number or
category, a missing entry takes), ``impute`` (the strategy that chose it:
"mean", "median", "most-frequent" or null), ``unknown_category`` ("error",
or "ignore": all zeros), ``classes`` (the sorted class labels, or null) and
``y_mean``, ``y_scale`` (the regression targets' standardisation, or null).
The model's inputs are the columns in order, each text column widened to
its categories. Files from before this layout hold ``features``,
``x_scaling`` and ``y_scaling`` instead and read the same.
"""
import json
import os
import secrets
import zipfile

import numpy as np

import kernels

from fastbp._checks import as_path
from fastbp.activations import Activation
from fastbp.history import History
from fastbp.losses import LOSSES
from fastbp.mlp import MLP
from fastbp.optim import OPTIMIZERS
from fastbp.schedules import SCHEDULES
from fastbp.trainer import Trainer

MODEL_FORMAT = "fastbp-model"
CHECKPOINT_FORMAT = "fastbp-checkpoint"
MODEL_VERSION = 1
CHECKPOINT_VERSION = 3
# format -> (what to call it, the versions this fastbp reads)
_MODEL = {MODEL_FORMAT: ("model", {1})}
_CHECKPOINT = {CHECKPOINT_FORMAT: ("checkpoint", {1, 2, 3})}


class MissingFileError(FileNotFoundError, ValueError):
    """No file at the path given: a FileNotFoundError, as ``open`` and
    ``np.load`` raise, and a ValueError, as every other unreadable file."""


def atomic_savez(path, **arrays):
    """Write an .npz to ``path`` through a temporary file in the same folder
    and a rename, so that a reader never sees a half-written file."""
    path = as_path("path", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MissingFileError(f"path: folder {folder!r} does not exist; create it first (os.makedirs) or "
                               f"save elsewhere")
    if os.path.isdir(path):
        raise ValueError(f"path: {path!r} is a folder; give a file name, e.g. {os.path.join(path, 'model.npz')!r}")
    handle, temporary = _create_temporary(folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _create_temporary(folder):
    """(file descriptor, path) of a new file in ``folder``, opened for writing.

    Not tempfile.mkstemp: its files are mode 0600, which the rename would
    carry over; asking for 0666 lets the kernel apply the user's umask (and
    any default ACL), as for every other file the user writes.
    """
    while True:
        path = os.path.join(folder, f".fastbp-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue


def _model_arrays(model):
    activations = json.dumps([[a.name, a.params] for a in model.activations])
    return dict(sizes=np.array(model.sizes, dtype=np.int64), activations=np.array(activations),
                bias=np.array(model.bias), dtype=np.array(model.dtype.name), params=model._params)


def save_model(model, path):
    """Write ``model`` to ``path`` (see the module docstring for the format)."""
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastbp.MLP, got {type(model).__name__}")
    atomic_savez(path, format=np.array(MODEL_FORMAT), format_version=np.array(MODEL_VERSION),
                 **_model_arrays(model))


def save_checkpoint(trainer, path):
    """Write ``trainer``'s whole state to ``path`` (see the module docstring)."""
    optimizer, schedule = trainer.optimizer, trainer.schedule
    best, in_epoch = trainer._best_params, trainer._epoch_state
    training = {
        "epoch": trainer.epoch,
        "loss": [trainer.loss.name, trainer.loss.arguments()],
        "max_grad_norm": trainer.max_grad_norm,
        "schedule": None if schedule is None else [schedule.name, schedule.arguments(), schedule.state_dict()],
        "history": trainer.history.as_dict(),
        "best": trainer._best,
        "best_params_epoch": None if best is None else best[0],
        "metadata": trainer.metadata,
        "in_epoch": None if in_epoch is None else {key: value for key, value in in_epoch.items()
                                                   if key != "rng_state"},
    }
    try:
        training = json.dumps(training)
    except (TypeError, ValueError) as error:
        raise TypeError(f"trainer.metadata must hold JSON-serialisable values only ({error})") from None
    rng_state = trainer._rng_state if trainer._rng_state is not None else np.zeros(0, dtype=np.uint64)
    empty = np.zeros(0, dtype=trainer.model.dtype)
    atomic_savez(path, format=np.array(CHECKPOINT_FORMAT), format_version=np.array(CHECKPOINT_VERSION),
                 **_model_arrays(trainer.model), optimizer=np.array(optimizer.name),
                 optimizer_hyper=optimizer._hyper, optimizer_step=np.array(optimizer.step_count),
                 **{f"optimizer_state_{i}": optimizer._state[i] if i < len(optimizer._state)
                    else np.zeros(0, dtype=optimizer._state.dtype) for i in range(3)},
                 rng_state=rng_state, training=np.array(training),
                 epoch_rng_state=np.zeros(0, dtype=np.uint64) if in_epoch is None else in_epoch["rng_state"],
                 best_params=empty if best is None else best[1],
                 last_params=empty if trainer._last_params is None else trainer._last_params)


def _read(path, formats):
    """The arrays of a file in one of ``formats`` (format name -> (what to
    call it, the versions read))."""
    path = as_path("path", path)
    what = " or ".join(name for name, _ in formats.values())
    if not os.path.isfile(path):
        raise MissingFileError(f"path: no {what} file at {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):
            raise ValueError("it holds one .npy array, not an .npz archive")
        with archive:
            contents = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path!r} is not a readable fastbp {what} file ({error})") from None
    found = str(contents.get("format", ""))
    if found == MODEL_FORMAT and found not in formats:
        raise ValueError(f"{path!r} is not a fastbp checkpoint file: it is a model file (MLP.save), which holds no "
                         f"training state to go on from; use fastbp.load to read the model")
    if found not in formats:
        raise ValueError(f"{path!r} is not a fastbp {what} file (no {' or '.join(map(repr, formats))} marker)")
    version = int(contents.get("format_version", -1))
    name, versions = formats[found]
    if version not in versions:
        readable = " and ".join(map(str, sorted(versions)))
        raise ValueError(f"{path!r} has {name} format version {version}; this fastbp reads "
                         f"version{'s' if len(versions) > 1 else ''} {readable}")
    return path, contents


def _model(path, contents):
    try:
        activations = [Activation(name, **params) for name, params in json.loads(str(contents["activations"]))]
        model = MLP([int(s) for s in contents["sizes"]], activation=activations[:-1],
                    output_activation=activations[-1], bias=bool(contents["bias"]), dtype=str(contents["dtype"]))
        params = contents["params"]
        if params.shape != model._params.shape or params.dtype != model.dtype:
            raise ValueError(f"params of shape {params.shape} and dtype {params.dtype} do not fit the layer sizes")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path!r} is a damaged fastbp file ({error})") from None
    model._params[...] = params
    return model


def load(path):
    """The model in a model file (``MLP.save``) or a checkpoint
    (``Trainer.save``); a missing, truncated, corrupt or foreign file, or one of
    another format version, raises a ValueError that says which (for a
    missing file, a ``MissingFileError``: also a FileNotFoundError)."""
    return _model(*_read(path, {**_MODEL, **_CHECKPOINT}))


def _fitting(path, name, array, size, dtype):
    if array.ndim != 1 or array.size not in size or array.dtype != dtype:
        raise ValueError(f"{path!r} is a damaged fastbp file ({name} has shape {array.shape} and dtype "
                         f"{array.dtype}; expected one of the sizes {sorted(size)} and dtype {dtype})")
    return array.copy()


def load_checkpoint(path):
    """The fastbp.Trainer a checkpoint holds, ready to ``fit`` on exactly as
    the run that wrote it would have; bad files raise as in ``load``."""
    return _trainer(*_read(path, _CHECKPOINT))


def load_any(path):
    """(model, trainer) from a model file (trainer None) or a checkpoint."""
    path, contents = _read(path, {**_MODEL, **_CHECKPOINT})
    if str(contents["format"]) == MODEL_FORMAT:
        return _model(path, contents), None
    trainer = _trainer(path, contents)
    return trainer.model, trainer


def _trainer(path, contents):
    model = _model(path, contents)
    n, dtype = model.n_params, model.dtype
    try:
        training = json.loads(str(contents["training"]))
        optimizer = OPTIMIZERS[str(contents["optimizer"])](model)
        optimizer._hyper[...] = _fitting(path, "optimizer_hyper", contents["optimizer_hyper"],
                                         {optimizer._hyper.size}, np.float64)
        rows = [_fitting(path, f"optimizer_state_{i}", contents[f"optimizer_state_{i}"], {0, n}, dtype)
                for i in range(3)]
        k = kernels.state_rows(optimizer.code, optimizer._hyper)
        for i in range(k):
            if rows[i].size != n:
                raise ValueError(f"optimizer_state_{i} is empty but {optimizer!r} updates it")
        optimizer._state = np.stack(rows[:k]) if k else np.zeros((0, n), dtype=dtype)
        optimizer.step_count = int(contents["optimizer_step"])
        loss_name, loss_arguments = training["loss"]
        trainer = Trainer(model, LOSSES[loss_name](**loss_arguments), optimizer,
                          max_grad_norm=training["max_grad_norm"])
        if training["schedule"] is not None:
            name, arguments, state = training["schedule"]
            trainer.schedule = SCHEDULES[name](optimizer, **arguments)
            trainer.schedule.load_state_dict(state)
        trainer.epoch = int(training["epoch"])
        trainer.history = History.from_dict(training["history"])
        trainer.metadata = training["metadata"]
        trainer._best = None if training["best"] is None else (int(training["best"][0]), float(training["best"][1]))
        rng_state = contents["rng_state"]
        trainer._rng_state = None if rng_state.size == 0 else _fitting(path, "rng_state", rng_state, {1}, np.uint64)
        if training["best_params_epoch"] is not None:
            trainer._best_params = (int(training["best_params_epoch"]),
                                    _fitting(path, "best_params", contents["best_params"], {n}, dtype))
        last = _fitting(path, "last_params", contents.get("last_params", np.zeros(0, dtype)), {0, n}, dtype)
        trainer._last_params = last if last.size else None
        in_epoch = training.get("in_epoch")
        if in_epoch is not None:
            trainer._epoch_state = {
                "rng_state": _fitting(path, "epoch_rng_state", contents["epoch_rng_state"], {1}, np.uint64),
                "position": int(in_epoch["position"]), "loss_sum": float(in_epoch["loss_sum"]),
                "skipped": tuple(int(count) for count in in_epoch.get("skipped", (0, 0))),
                "batch_size": int(in_epoch["batch_size"]), "n_samples": int(in_epoch["n_samples"]),
                "shuffle": bool(in_epoch["shuffle"])}
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ValueError(f"{path!r} is a damaged fastbp checkpoint ({type(error).__name__}: {error})") from None
    return trainer
