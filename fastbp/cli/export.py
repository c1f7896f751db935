"""The ``fastbp export`` command: a saved model as an ONNX graph that takes
the table's raw columns, the preprocessing ``fastbp train`` fitted inside
(see ``fastbp.interop.onnx`` for its inputs and outputs)."""
import sys

from fastbp.data import DataError
from fastbp.pipeline import Pipeline
from fastbp.cli.safety import check_output


def export(model_path, onnx_path, overwrite=False):
    """The ``fastbp export`` command; returns the exit status."""
    onnx_path = check_output("--onnx", onnx_path, {"--model": model_path}, overwrite)
    try:
        pipeline = Pipeline.load(model_path)
    except (OSError, ValueError) as error:
        raise DataError(f"--model: {error}") from None
    steps, model = pipeline.preprocessing, pipeline.model
    if steps is None:
        print(f"note: {model_path!r} holds no preprocessing; exporting the network alone, which takes "
              f"\"input\" ({model.sizes[0]} features of {model.dtype.name})", file=sys.stderr)
    elif steps.unknown_category == "error" and any(c is not None for c in steps.categories):
        print("note: the graph encodes a category not seen in training as all zeros (as --unknown-category "
              "ignore); it cannot refuse one", file=sys.stderr)
    try:
        pipeline.to_onnx(onnx_path)
    except (ImportError, OSError, ValueError) as error:
        raise DataError(f"--onnx: {error}") from None
    print(f"wrote {onnx_path}", file=sys.stderr)
    return 0
