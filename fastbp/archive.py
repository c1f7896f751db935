"""Model files and training checkpoints: NumPy .npz archives (no pickles)
with a format name and version, written atomically, and the state dicts
(``MLP.state_dict``, ``Trainer.state_dict``) they store. Nothing here knows
fastbp's classes: ``fastbp.files`` builds the objects from these dicts.

A model file (``format`` "fastbp-model", ``format_version`` 1) holds:
``sizes`` (int64), ``activations`` (JSON: a list of [name, params] per layer),
``bias`` (bool), ``dtype`` ("float32" / "float64"), ``params`` (the flat
parameter buffer, layer by layer: W (n_out, n_in) row-major, then b; a
layer norm's weight and bias after its dense layer) and, for a model with
layer norms, dropout or residual blocks, ``layers`` (JSON: its
``dropout`` rates, ``norm``, ``norm_eps``, ``residual`` and
``dropout_seed``).

A checkpoint (``format`` "fastbp-checkpoint", ``format_version`` 3) holds the
model's keys (``params``: the weights the model predicts with, the best
epoch's when a fit restored them) and what a run needs to go on exactly where
it stopped: ``optimizer`` (its name), ``optimizer_hyper`` (float64, the
kernel's scalars, the current learning rate first), ``optimizer_state_0..2``
(the rows of the optimizer's state in order, empty beyond its
rows; a row it does not update is zeros, or empty in files from before
state dicts), ``optimizer_step``, ``rng_state``
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

from fastbp._checks import as_path

MODEL_FORMAT = "fastbp-model"
CHECKPOINT_FORMAT = "fastbp-checkpoint"
MODEL_VERSION = 1
CHECKPOINT_VERSION = 3
# format -> (what to call it, the versions this fastbp reads)
MODEL = {MODEL_FORMAT: ("model", {1})}
CHECKPOINT = {CHECKPOINT_FORMAT: ("checkpoint", {1, 2, 3})}
# the optimizer state buffers a checkpoint holds (optimizer_state_0..2)
_STATE_KEYS = 3


class MissingFileError(FileNotFoundError, ValueError):
    """No file at the path given: a FileNotFoundError, as ``open`` and
    ``np.load`` raise, and a ValueError, as every other unreadable file."""


def atomic_savez(path, **arrays):
    """Write an .npz to ``path`` through a temporary file in the same folder
    and a rename, so that a reader never sees a half-written file."""
    atomic_write(path, lambda stream: np.savez(stream, **arrays))


def atomic_write(path, write):
    """``write(stream)`` into a temporary file in ``path``'s folder, then
    renamed to ``path``: a reader never sees a half-written file, and an
    error leaves nothing behind."""
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
            write(stream)
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
    """The file's arrays of an ``MLP.state_dict()``."""
    arrays = dict(sizes=np.array(model["sizes"], dtype=np.int64),
                  activations=np.array(json.dumps(model["activations"])), bias=np.array(model["bias"]),
                  dtype=np.array(model["dtype"]), params=model["params"])
    if "layers" in model:
        arrays["layers"] = np.array(json.dumps(model["layers"]))
    return arrays


def write_model(path, model):
    """Write ``model``, an ``MLP.state_dict()``, to ``path`` (see the module docstring)."""
    atomic_savez(path, format=np.array(MODEL_FORMAT), format_version=np.array(MODEL_VERSION), **_model_arrays(model))


def write_checkpoint(path, trainer):
    """Write ``trainer``, a ``Trainer.state_dict()``, to ``path`` (see the module docstring)."""
    optimizer, schedule, best, in_epoch = trainer["optimizer"], trainer["schedule"], trainer["best_params"], \
        trainer["in_epoch"]
    training = {
        "epoch": trainer["epoch"],
        "loss": [trainer["loss"]["kind"], trainer["loss"]["arguments"]],
        "max_grad_norm": trainer["max_grad_norm"],
        "schedule": None if schedule is None else [schedule["kind"], schedule["arguments"], schedule["state"]],
        "history": trainer["history"],
        "best": trainer["best"],
        "best_params_epoch": None if best is None else best["epoch"],
        "metadata": trainer["metadata"],
        "in_epoch": None if in_epoch is None else {key: value for key, value in in_epoch.items()
                                                   if key != "rng_state"},
    }
    try:
        training = json.dumps(training)
    except (TypeError, ValueError) as error:
        raise TypeError(f"trainer.metadata must hold JSON-serialisable values only ({error})") from None
    params = trainer["model"]["params"]
    empty, no_stream = np.zeros(0, dtype=params.dtype), np.zeros(0, dtype=np.uint64)
    # the optimizer's rows, and at least three (the keys every reader expects), those beyond its rows empty
    rows = list(optimizer["state"]) + [empty] * max(0, _STATE_KEYS - len(optimizer["state"]))
    atomic_savez(path, format=np.array(CHECKPOINT_FORMAT), format_version=np.array(CHECKPOINT_VERSION),
                 **_model_arrays(trainer["model"]), optimizer=np.array(optimizer["kind"]),
                 optimizer_hyper=np.array(list(optimizer["hyperparameters"].values()), dtype=np.float64),
                 optimizer_step=np.array(optimizer["step_count"]),
                 **{f"optimizer_state_{i}": row for i, row in enumerate(rows)},
                 rng_state=no_stream if trainer["rng_state"] is None else trainer["rng_state"],
                 training=np.array(training),
                 epoch_rng_state=no_stream if in_epoch is None else in_epoch["rng_state"],
                 best_params=empty if best is None else best["params"],
                 last_params=empty if trainer["last_params"] is None else trainer["last_params"])


def read(path, formats):
    """(path, the arrays) of a file in one of ``formats`` (format name ->
    (what to call it, the versions read)); refuses any other file, and a
    version this fastbp does not read, naming it."""
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


def damaged(path, error):
    return ValueError(f"{path!r} is a damaged fastbp file ({error})")


def model_state(path, contents):
    """The ``MLP.state_dict()`` a file's arrays hold."""
    try:
        state = {"sizes": [int(s) for s in contents["sizes"]],
                 "activations": [[str(name), dict(params)] for name, params in
                                 json.loads(str(contents["activations"]))],
                 "bias": bool(contents["bias"]), "dtype": str(contents["dtype"]), "params": contents["params"].copy()}
        sizes, params = state["sizes"], state["params"]
        n = sum(n_out * (n_in + state["bias"]) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        if "layers" in contents:
            # the model these layers make checks the parameters' length
            state["layers"] = dict(json.loads(str(contents["layers"])))
            n = params.shape[0] if params.ndim == 1 else -1
        if params.shape != (n,) or params.dtype.name != state["dtype"]:
            raise ValueError(f"params of shape {params.shape} and dtype {params.dtype} do not fit the layer sizes")
    except (KeyError, TypeError, ValueError) as error:
        raise damaged(path, error) from None
    return state


def _fitting(path, name, array, size, dtype):
    if array.ndim != 1 or array.size not in size or array.dtype != dtype:
        raise ValueError(f"{path!r} is a damaged fastbp file ({name} has shape {array.shape} and dtype "
                         f"{array.dtype}; expected one of the sizes {sorted(size)} and dtype {dtype})")
    return array.copy()


def checkpoint_state(path, contents, optimizer_layout):
    """(the ``Trainer.state_dict()`` a checkpoint's arrays hold, the rows of
    the optimizer state it left empty). ``optimizer_layout(kind)`` gives an
    optimizer kind's (hyperparameter names, which of them are flags, number
    of state rows)."""
    model = model_state(path, contents)
    n, dtype = model["params"].size, model["params"].dtype
    try:
        training = json.loads(str(contents["training"]))
        kind = str(contents["optimizer"])
        names, flags, n_state = optimizer_layout(kind)
        hyper = _fitting(path, "optimizer_hyper", contents["optimizer_hyper"], {len(names)}, np.float64)
        rows = [_fitting(path, f"optimizer_state_{i}", contents[f"optimizer_state_{i}"] if i < _STATE_KEYS else
                         contents.get(f"optimizer_state_{i}", np.zeros(0, dtype)), {0, n}, dtype)
                for i in range(max(_STATE_KEYS, n_state))]
        empty = [i for i, row in enumerate(rows[:n_state]) if row.size == 0]
        optimizer = {"kind": kind,
                     "hyperparameters": {name: bool(value) if name in flags else float(value)
                                         for name, value in zip(names, hyper)},
                     "step_count": int(contents["optimizer_step"]),
                     "state": np.array([row if row.size else np.zeros(n, dtype) for row in rows[:n_state]],
                                       dtype=dtype).reshape(n_state, n)}
        loss_name, loss_arguments = training["loss"]
        schedule = training["schedule"]
        rng_state = contents["rng_state"]
        best_epoch = training["best_params_epoch"]
        # version 1 has no last_params
        last = _fitting(path, "last_params", contents.get("last_params", np.zeros(0, dtype)), {0, n}, dtype)
        in_epoch = training.get("in_epoch")
        state = {
            "model": model, "optimizer": optimizer,
            "loss": {"kind": loss_name, "arguments": loss_arguments},
            "schedule": None if schedule is None else dict(zip(("kind", "arguments", "state"), schedule)),
            "max_grad_norm": training["max_grad_norm"],
            "epoch": int(training["epoch"]),
            "history": training["history"],
            "metadata": training["metadata"],
            "rng_state": None if rng_state.size == 0 else _fitting(path, "rng_state", rng_state, {1}, np.uint64),
            "best": None if training["best"] is None else [int(training["best"][0]), float(training["best"][1]),
                                                           *training["best"][2:3]],
            "best_params": None if best_epoch is None else {
                "epoch": int(best_epoch),
                "params": _fitting(path, "best_params", contents["best_params"], {n}, dtype)},
            "last_params": last if last.size else None,
            "in_epoch": None if in_epoch is None else {
                "rng_state": _fitting(path, "epoch_rng_state", contents["epoch_rng_state"], {1}, np.uint64),
                "position": int(in_epoch["position"]), "loss_sum": float(in_epoch["loss_sum"]),
                "skipped": [int(count) for count in in_epoch.get("skipped", (0, 0))],
                "batch_size": int(in_epoch["batch_size"]), "n_samples": int(in_epoch["n_samples"]),
                "shuffle": bool(in_epoch["shuffle"])},
        }
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ValueError(f"{path!r} is a damaged fastbp checkpoint ({type(error).__name__}: {error})") from None
    return state, empty
