"""Model files: a NumPy .npz archive (no pickles) with a format version.

Keys of format version 1:
``format`` ("fastbp-model"), ``format_version`` (1), ``sizes`` (int64),
``activations`` (JSON: a list of [name, params] per layer), ``bias`` (bool),
``dtype`` ("float32" / "float64"), ``params`` (the flat parameter buffer,
layer by layer: W (n_out, n_in) row-major, then b).
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from fastbp.activations import Activation
from fastbp.mlp import MLP

FORMAT = "fastbp-model"
FORMAT_VERSION = 1


def atomic_savez(path, **arrays):
    """Write an .npz to ``path`` through a temporary file in the same folder
    and a rename, so that a reader never sees a half-written file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: folder {folder!r} does not exist")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".fastbp-", suffix=".tmp")
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


def save_model(model, path):
    """Write ``model`` to ``path`` (see the module docstring for the format)."""
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastbp.MLP, got {type(model).__name__}")
    activations = json.dumps([[a.name, a.params] for a in model.activations])
    atomic_savez(path, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                 sizes=np.array(model.sizes, dtype=np.int64), activations=np.array(activations),
                 bias=np.array(model.bias), dtype=np.array(model.dtype.name), params=model._params)


def load(path):
    """Read a model written by ``MLP.save``; a missing, truncated, corrupt or
    foreign file, or one of another format version, raises a ValueError (or
    FileNotFoundError) that says which."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path!r} is not a readable fastbp model file ({error})") from None
    if str(contents.get("format", "")) != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (no {FORMAT!r} marker)")
    version = int(contents.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path!r} has model format version {version}; this fastbp reads version "
                         f"{FORMAT_VERSION}")
    try:
        activations = [Activation(name, **params) for name, params in json.loads(str(contents["activations"]))]
        model = MLP([int(s) for s in contents["sizes"]], activation=activations[:-1],
                    output_activation=activations[-1], bias=bool(contents["bias"]), dtype=str(contents["dtype"]))
        params = contents["params"]
        if params.shape != model._params.shape or params.dtype != model.dtype:
            raise ValueError(f"params of shape {params.shape} and dtype {params.dtype} do not fit the layer sizes")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path!r} is a damaged fastbp model file ({error})") from None
    model._params[...] = params
    return model
