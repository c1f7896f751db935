"""ONNX export: a fastbp.MLP as a standard ONNX graph (the default domain,
plus ai.onnx.ml for text columns; no custom ops), with the preprocessing
``fastbp train`` fitted inside when it is given, so that ONNX Runtime, or any
runtime, predicts from a table's raw columns what ``fastbp predict`` does.

The network alone (``MLP.to_onnx``, or ``export`` without preprocessing):

- input "input" (N, sizes[0]) of the model's dtype (float or double);
- output "output" (N, sizes[-1]) of the model's dtype: ``model.predict``.

With the preprocessing of a ``fastbp train`` file (``fastbp export``), the
inputs are the table's raw columns, an input without columns left out:

- "numeric" (N, n_numeric) double: the numeric columns, in the order of the
  model's columns, NaN for a missing value;
- "text" (N, n_text) string: the text columns, in that order, the empty
  string "" for a missing value (a string tensor cannot hold None).

The model's metadata_props name them: "numeric_columns" and "text_columns",
JSON lists of the columns each input takes, in order (positions for data
without column names), and "classes". The outputs:

- to classify, "label" (N,) the predicted class in the data's own labels
  (string, int64 or double) and "probabilities" (N, n_classes) of the
  model's dtype, in the order of "classes";
- to regress, "prediction" (N, n_outputs) double, in the target's units.

The graph cannot refuse input as ``fastbp predict`` does: a category not seen
in training is encoded as all zeros (as ``--unknown-category ignore``), and a
model trained without --impute turns a missing value into NaN (numeric) or
all zeros (text).

Every formula is the kernels' (``kernels.activations``). Where ONNX Runtime
has no double kernel for an op (Erf, Elu) or takes a float attribute
(LeakyRelu's alpha), a double model's graph spells the function out in ops
it does have. Its outputs agree with ``predict`` to about 1e-15 of the
largest output; a float model's to about 1e-6, ONNX Runtime's float Tanh,
Erf and Sigmoid being approximations where the kernels work in double
(with layer norms, ONNX Runtime's LayerNormalization: about 1e-12 in
double).
"""
import functools
import json

import numpy as np

from fastbp.archive import atomic_write
from kernels.layers import ACTIVATION, DENSE, DROPOUT, LAYERNORM, RESIDUAL_ADD, RESIDUAL_START
from kernels.layers.table import KIND

# ai.onnx.ml's version of LabelEncoder (2) and OneHotEncoder (1) alike
ML_OPSET = 3
_SQRT_HALF = np.sqrt(0.5)
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_GELU_KAPPA = 0.044715
# Chebyshev terms of the double erfc; the 25th is below 1e-15
_ERFC_DEGREE = 24


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs onnx; install it with: pip install 'fastbp[onnx]'") from None
    return onnx


class _Graph:
    """The nodes and constants of a graph being built; each op's output is
    named after the op and its position."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.constants = onnx, [], []

    def constant(self, value, dtype):
        name = f"constant_{len(self.constants)}"
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, *inputs, output=None, domain="", **attributes):
        output = output or f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], domain=domain, **attributes))
        return output


def export(path, model, preprocessing=None, loss_name=None, opset=17):
    """Write ``model`` (a fastbp.MLP) to ``path`` as an ONNX graph (needs
    fastbp[onnx]), atomically: an error leaves no file.

    Args:
        path: the .onnx file to write.
        model: the fastbp.MLP.
        preprocessing: a fastbp.preprocessing.Preprocessing, or None for
            the network alone.
        loss_name: the loss the model was trained with; "bce_with_logits"
            (one output) decides its class by logit > 0, others by argmax.
        opset: the default domain's opset, 17 or later.

    Inputs and outputs: without ``preprocessing``, "input" (N, sizes[0])
    and "output" (N, sizes[-1]), both of the model's dtype. With it,
    "numeric" (N, n_numeric) double, NaN for missing, and "text" (N,
    n_text) string, "" for missing: the numeric and the text columns in the
    model's order, named in metadata_props "numeric_columns" and
    "text_columns" (JSON); out come "label" (N,) and "probabilities" (N,
    n_classes), or "prediction" (N, n_outputs) double. See the module's
    docstring for what the graph does with missing and unseen values.

    Raises ValueError for what the graph cannot express: an activation or
    a layer kind it does not know, a text column with "" as a category.
    """
    onnx = _require_onnx()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 17 <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be an integer from 17 to {onnx.defs.onnx_opset_version()}, got {opset!r}")
    graph, dtype = _Graph(onnx), model.dtype
    tensor = onnx.helper.make_tensor_value_info
    element = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    metadata, opsets = {}, [onnx.helper.make_opsetid("", opset)]
    if preprocessing is None:
        inputs = [tensor("input", element, ["N", model.sizes[0]])]
        graph.op("Identity", _network(graph, "input", model), output="output")
        outputs = [tensor("output", element, ["N", model.sizes[-1]])]
    else:
        if preprocessing.n_features != model.sizes[0]:
            raise ValueError(f"preprocessing makes {preprocessing.n_features} features, but the model takes "
                             f"{model.sizes[0]}")
        features, inputs, metadata = _features(graph, tensor, preprocessing, dtype)
        outputs = _decoded(graph, tensor, _network(graph, features, model), preprocessing, loss_name, model)
        if preprocessing.task == "classify":
            metadata["classes"] = json.dumps(preprocessing.classes)
        if any(node.domain == "ai.onnx.ml" for node in graph.nodes):
            opsets.append(onnx.helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    proto = onnx.helper.make_model(onnx.helper.make_graph(graph.nodes, "fastbp", inputs, outputs, graph.constants),
                                   opset_imports=opsets, producer_name="fastbp", doc_string=__doc__)
    # the oldest IR version that holds these opsets, so that older runtimes read the file too
    proto.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda stream: stream.write(data))


def _features(graph, tensor, steps, dtype):
    """(the model's input (N, n_features), the graph's inputs, the
    metadata naming their columns) from the raw columns, as
    ``Preprocessing.transform`` makes it."""
    onnx = graph.onnx
    labels = steps.names if steps.names is not None else list(range(steps.n_columns))
    numeric = [j for j, categories in enumerate(steps.categories) if categories is None]
    text = [j for j, categories in enumerate(steps.categories) if categories is not None]
    inputs, pieces = [], []
    if numeric:
        inputs.append(tensor("numeric", onnx.TensorProto.DOUBLE, ["N", len(numeric)]))
        x = "numeric"
        if steps.fill is not None:
            fill = graph.constant([steps.fill[j] for j in numeric], np.float64)
            x = graph.op("Where", graph.op("IsNaN", x), fill, x)
        x = graph.op("Sub", x, graph.constant(steps.mean[numeric], np.float64))
        x = graph.op("Div", x, graph.constant(steps.scale[numeric], np.float64))
        pieces.append(graph.op("Cast", x, to=onnx.helper.np_dtype_to_tensor_dtype(dtype)))
    if text:
        inputs.append(tensor("text", onnx.TensorProto.STRING, ["N", len(text)]))
    for k, j in enumerate(text):
        categories = steps.categories[j]
        if "" in categories:
            raise ValueError(f"column {steps.column_name(j)} has the empty string as a category, and the graph "
                             f"reads \"\" as a missing value")
        column = graph.op("Gather", "text", graph.constant(k, np.int64), axis=1)
        fill = None if steps.fill is None else steps.fill[j]
        if fill is not None:
            # "" (missing) becomes the fill category and the known ones stay; any other value becomes "",
            # which the encoder does not know either
            column = graph.op("LabelEncoder", column, domain="ai.onnx.ml", keys_strings=categories + [""],
                              values_strings=categories + [fill], default_string="")
        # zeros=1: an unknown category is all zeros, where zeros=0 would fail the run
        encoded = graph.op("OneHotEncoder", column, domain="ai.onnx.ml", cats_strings=categories, zeros=1)
        pieces.append(encoded if dtype == np.float32 else graph.op("Cast", encoded, to=onnx.TensorProto.DOUBLE))
    x = graph.op("Concat", *pieces, axis=1) if len(pieces) > 1 else pieces[0]
    # x holds the numeric columns, then each text column's one-hot block; the model takes them in column order
    where, start = {j: [k] for k, j in enumerate(numeric)}, len(numeric)
    for j in text:
        where[j] = list(range(start, start + len(steps.categories[j])))
        start += len(steps.categories[j])
    order = [position for j in range(steps.n_columns) for position in where[j]]
    if order != sorted(order):
        x = graph.op("Gather", x, graph.constant(order, np.int64), axis=1)
    metadata = {"numeric_columns": json.dumps([labels[j] for j in numeric]),
                "text_columns": json.dumps([labels[j] for j in text])}
    return x, inputs, metadata


def _network(graph, x, model):
    """The network's output (N, sizes[-1]) from its input ``x``, layer by
    layer of its table: a dense layer a Gemm with W (n_out, n_in)
    transposed, then its activation; a layer norm LayerNormalization over
    the features; a residual connection an Add of its start's inputs;
    dropout nothing (the graph is the model in evaluation)."""
    dense, norms, starts = iter(model.params), iter(model.norms), []
    for i, (kind, act) in enumerate(zip(model._layers[:, KIND], model._row_activations)):
        if kind == DENSE:
            W, b = next(dense)
            weights = [graph.constant(W, model.dtype)] + ([] if b is None else [graph.constant(b, model.dtype)])
            x = graph.op("Gemm", x, *weights, transB=1)
        elif kind == LAYERNORM:
            weight, bias = next(norms)
            x = graph.op("LayerNormalization", x, graph.constant(weight, model.dtype),
                         graph.constant(bias, model.dtype), axis=-1, epsilon=model.norm_eps)
        elif kind == RESIDUAL_START:
            starts.append(x)
        elif kind == RESIDUAL_ADD:
            x = graph.op("Add", x, starts.pop())
        elif kind not in (DROPOUT, ACTIVATION):
            raise ValueError(f"layer {i} is of kind {kind}, which ONNX export does not know")
        if act is not None:
            x = _activation(graph, x, act, model.dtype, i)
    return x


def _activation(graph, x, activation, dtype, layer):
    """``activation`` of ``x`` in ops, by the formula of ``kernels.activations``."""
    op, params, double = graph.op, activation.params, dtype == np.float64

    def constant(value):
        return graph.constant(value, dtype)

    name = activation.name
    if name == "identity":
        return x
    if name == "relu":
        return op("Relu", x)
    if name == "sigmoid":
        return op("Sigmoid", x)
    if name == "tanh":
        return op("Tanh", x)
    if name == "silu":
        return op("Mul", x, op("Sigmoid", x))
    if name == "leaky_relu":
        slope = params["negative_slope"]
        # LeakyRelu's alpha is a float attribute: rounded, for a double model
        return op("Where", op("Greater", x, constant(0)), x, op("Mul", x, constant(slope))) if double \
            else op("LeakyRelu", x, alpha=slope)
    if name == "elu":
        if not double:
            return op("Elu", x, alpha=params["alpha"])
        # alpha * expm1(x), expm1 as 2t / (1 - t) with t = tanh(x/2): exp(x) - 1 would lose small x
        t = op("Tanh", op("Mul", x, constant(0.5)))
        expm1 = op("Div", op("Mul", constant(2), t), op("Sub", constant(1), t))
        return op("Where", op("Greater", x, constant(0)), x, op("Mul", constant(params["alpha"]), expm1))
    if name == "gelu":
        if params["approximate"] == "tanh":
            cube = op("Mul", op("Mul", op("Mul", constant(_GELU_KAPPA), x), x), x)
            one_plus = op("Add", constant(1), op("Tanh", op("Mul", constant(_SQRT_2_OVER_PI), op("Add", x, cube))))
        else:
            z = op("Mul", x, constant(_SQRT_HALF))
            one_plus = _one_plus_erf(graph, z) if double else op("Add", constant(1), op("Erf", z))
        return op("Mul", op("Mul", constant(0.5), x), one_plus)
    if name == "softplus":
        beta = constant(params["beta"])
        scaled = op("Mul", beta, x)
        # max(s, 0) + log1p(exp(-|s|)), as the kernel: exp never overflows
        tail = _log1p(graph, op("Exp", op("Neg", op("Abs", scaled))), dtype)
        smooth = op("Div", op("Add", op("Max", scaled, constant(0)), tail), beta)
        return op("Where", op("Greater", scaled, constant(params["threshold"])), x, smooth)
    raise ValueError(f"layer {layer}'s activation {name!r} has no ONNX form in fastbp's exporter")


def _log1p(graph, u, dtype):
    """log(1 + u) to full precision for small u too (Kahan's: log(w) * u / (w - 1), w = 1 + u)."""
    op, one = graph.op, graph.constant(1, dtype)
    w = op("Add", one, u)
    return op("Where", op("Equal", w, one), u, op("Mul", op("Log", w), op("Div", u, op("Sub", w, one))))


@functools.cache
def _erfc_series():
    """Chebyshev coefficients of P(y) = log(erfc(a) / t) + a^2 over y = 2t - 1
    in (-1, 1], t = 2 / (2 + a) (Numerical Recipes' erfccheb), fitted to
    scipy's erfcx(a) = exp(a^2) erfc(a)."""
    from scipy.special import erfcx

    def series(y):
        a = 4.0 / (y + 1.0) - 2.0
        return np.log(erfcx(a)) + np.log1p(a / 2.0)

    return np.polynomial.chebyshev.chebinterpolate(series, _ERFC_DEGREE)


def _one_plus_erf(graph, z):
    """1 + erf(z) in double, which ONNX Runtime's Erf lacks: erfc(|z|), or
    2 - erfc(z) for z >= 0, with erfc(a) = t exp(P(2t - 1) - a^2), P
    summed by Clenshaw's recurrence: within 1e-14 of erfc for |z| < 6, and
    1e-13 beyond, where the rounding of a^2 sets the error."""
    op = graph.op

    def constant(value):
        return graph.constant(value, np.float64)

    a = op("Abs", z)
    t = op("Div", constant(2), op("Add", constant(2), a))
    y = op("Sub", op("Mul", constant(2), t), constant(1))
    twice_y = op("Add", y, y)
    coefficients = _erfc_series()
    # b_k = c_k + 2y b_(k+1) - b_(k+2), down to k = 1; P(y) = c_0 + y b_1 - b_2
    b1, b2 = constant(coefficients[-1]), constant(0)
    for c in coefficients[-2:0:-1]:
        b1, b2 = op("Sub", op("Add", op("Mul", twice_y, b1), constant(c)), b2), b1
    series = op("Sub", op("Add", op("Mul", y, b1), constant(coefficients[0])), b2)
    erfc = op("Mul", t, op("Exp", op("Sub", series, op("Mul", a, a))))
    return op("Where", op("Less", z, constant(0)), erfc, op("Sub", constant(2), erfc))


def _decoded(graph, tensor, logits, steps, loss_name, model):
    """The outputs from the network's ``logits``, as ``Preprocessing.decode``."""
    onnx, op, dtype = graph.onnx, graph.op, model.dtype
    element = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    n_out = model.sizes[-1]
    if steps.task != "classify":
        if n_out != len(steps.y_mean):
            raise ValueError(f"the model has {n_out} outputs, but the preprocessing scales {len(steps.y_mean)} targets")
        x = logits if dtype == np.float64 else op("Cast", logits, to=onnx.TensorProto.DOUBLE)
        x = op("Mul", x, graph.constant(steps.y_scale, np.float64))
        op("Add", x, graph.constant(steps.y_mean, np.float64), output="prediction")
        return [tensor("prediction", onnx.TensorProto.DOUBLE, ["N", n_out])]
    classes = steps.classes
    binary = loss_name == "bce_with_logits"
    if n_out != (1 if binary else len(classes)):
        raise ValueError(f"the model has {n_out} outputs for {len(classes)} classes"
                         + (" (bce_with_logits takes one)" if binary else ""))
    # the labels as fastbp.data.class_list gives them: all str, int or float
    table = np.array(classes, dtype={str: object, int: np.int64, float: np.float64}[type(classes[0])])
    if binary:
        logit = op("Gather", logits, graph.constant(0, np.int64), axis=1)
        index = op("Cast", op("Greater", logit, graph.constant(0, dtype)), to=onnx.TensorProto.INT64)
        positive = op("Sigmoid", logits)
        op("Concat", op("Sub", graph.constant(1, dtype), positive), positive, axis=1, output="probabilities")
    else:
        index = op("ArgMax", logits, axis=1, keepdims=0)
        op("Softmax", logits, axis=1, output="probabilities")
    op("Gather", graph.constant(table, table.dtype), index, axis=0, output="label")
    label_type = onnx.TensorProto.STRING if table.dtype == object else onnx.helper.np_dtype_to_tensor_dtype(table.dtype)
    return [tensor("label", label_type, ["N"]), tensor("probabilities", element, ["N", len(classes)])]
