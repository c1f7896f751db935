"""What keeps a command from spoiling files or losing work: every output
path checked before anything is read at length or written, and Ctrl-C
handled at the end of an epoch, where the run's state is whole."""
import os
import re
import signal
import sys
import threading
import zipfile

import numpy as np

from fastbp.data import DataError
from fastbp.archive import CHECKPOINT_FORMAT, MODEL_FORMAT


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


def _is_onnx_export(path):
    """An ONNX model that fastbp produced: a ModelProto begins with its
    fields in order, ir_version (field 1, a one-byte varint) then
    producer_name (field 2, length-prefixed)."""
    head = _head(path, 10)
    return head[:1] == b"\x08" and head[2:] == b"\x12\x06fastbp"


# flag -> (what fastbp writes there, whether the file at a path is one of those)
REPLACEABLE = {
    "--save": ("a fastbp model or checkpoint", _is_fastbp_archive),
    "--out": ("a CSV or Parquet file of fastbp predictions", _is_predictions),
    "--plot": ("a PNG image", _is_png),
    "--png": ("a PNG image", _is_png),
    "--onnx": ("an ONNX model fastbp exported", _is_onnx_export),
    "--json": ("a fastbp bench result", lambda path: re.match(rb'\{\s*"ceiling"', _head(path, 64)) is not None),
}


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
