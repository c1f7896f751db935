"""ONNX export: what ONNX Runtime computes from the graph is what fastbp
computes, for the network alone under every activation and, end to end, for
``fastbp train`` files with their preprocessing inside; and ``fastbp
export`` refuses, in one line, what it must not write."""
import copy
import csv
import json
import sys

import numpy as np
import pytest

import fastbp
from fastbp import archive, cli
from fastbp.activations import NAMES, Activation
from fastbp.preprocessing import Preprocessing
from kernels.layers.table import KIND
from tests.cli.test_outputs import command

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pa = pytest.importorskip("pyarrow")
import pyarrow.csv  # noqa: E402

# (rtol, atol as a fraction of the largest |output|). An output near zero
# is a difference of larger terms, so its error is set by their size, not
# its own: Gemm sums in another order than the kernels, and in float32 ONNX
# Runtime's Tanh, Erf and Sigmoid are a few ulps off where the kernels work
# in double and round once. Seen: under 4e-7 of the largest output in
# float32, 6e-16 in float64.
TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-10, 1e-13)}

ACTIVATIONS = [Activation(name) for name in NAMES] + [
    Activation("gelu", approximate="tanh"), Activation("leaky_relu", negative_slope=0.3),
    Activation("elu", alpha=0.5), Activation("softplus", beta=2.0, threshold=1.5)]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows([header, *rows])


def run(path, feeds):
    """ONNX Runtime's outputs of the graph at ``path``, by name."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([output.name for output in session.get_outputs()], session.run(None, feeds)))


def assert_matches(actual, expected):
    rtol, atol = TOLERANCE[expected.dtype.type]
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * np.abs(expected).max())


def assert_standard(path, domains):
    """A valid model of opset 17 or later whose ops come from ``domains`` alone."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    versions = {opset.domain: opset.version for opset in model.opset_import}
    assert versions[""] >= 17 and set(versions) == domains
    assert {node.domain for node in model.graph.node} == domains


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
def test_the_network_alone_matches_predict(tmp_path, activation, dtype):
    rng = np.random.default_rng(len(repr(activation)))
    # softplus: large enough for inputs on both sides of the threshold
    spread = 3 * max(1.0, activation.params["threshold"] / activation.params["beta"]) \
        if activation.name == "softplus" else 3
    for depth, bias in ((1, True), (2, False), (3, True)):
        sizes = [int(width) for width in rng.integers(1, 9, depth + 1)]
        model = fastbp.MLP(sizes, activation=activation, output_activation=activation, bias=bias, dtype=dtype,
                           seed=depth)
        x = (spread * rng.standard_normal((16, sizes[0]))).astype(dtype)
        if activation.name == "softplus":
            W, b = model.params[0]
            scaled = activation.params["beta"] * (x @ W.T + (0 if b is None else b))
            assert (scaled > activation.params["threshold"]).any() and (scaled <= activation.params["threshold"]).any()
        model.to_onnx(tmp_path / "model.onnx")
        assert_standard(tmp_path / "model.onnx", {""})
        assert_matches(run(tmp_path / "model.onnx", {"input": x})["output"], model.predict(x))


@pytest.mark.parametrize("layers", [{"dropout": 0.2, "norm": "layer"}, {"residual": True},
                                    {"residual": True, "norm": "layer", "dropout": 0.1}])
def test_norms_dropout_and_residual_blocks_match_predict(tmp_path, layers, dtype):
    model = fastbp.MLP([4, 8, 8, 3], activation="gelu", dtype=dtype, seed=1, **layers)
    for weight, bias in model.norms:
        weight[...], bias[...] = 1.5, -0.25
    x = np.random.default_rng(2).standard_normal((16, 4)).astype(dtype)
    model.to_onnx(tmp_path / "model.onnx")
    assert_standard(tmp_path / "model.onnx", {""})
    # dropout is the identity at inference: the graph is predict's
    expected, tolerance = model.predict(x), {np.float64: 1e-11, np.float32: 1e-5}[dtype]
    np.testing.assert_allclose(run(tmp_path / "model.onnx", {"input": x})["output"], expected, rtol=tolerance,
                               atol=tolerance * np.abs(expected).max())


def test_an_opset_is_chosen_and_checked(tmp_path):
    model = fastbp.MLP([3, 2], seed=0)
    model.to_onnx(tmp_path / "model.onnx", opset=18)
    assert {opset.domain: opset.version for opset in onnx.load(str(tmp_path / "model.onnx")).opset_import} == {"": 18}
    with pytest.raises(ValueError, match="opset must be an integer from 17"):
        model.to_onnx(tmp_path / "old.onnx", opset=16)
    assert not (tmp_path / "old.onnx").exists()


def test_what_the_graph_cannot_express_is_refused_by_name(tmp_path):
    model = fastbp.MLP([3, 4, 2], seed=0)
    model.activations[0] = copy.copy(model.activations[0])
    model.activations[0].name = "mish"
    with pytest.raises(ValueError, match="layer 0's activation 'mish' has no ONNX form"):
        model.to_onnx(tmp_path / "model.onnx")
    model = fastbp.MLP([3, 4, 2], seed=0)
    model._layers[1, KIND] = 7
    with pytest.raises(ValueError, match="layer 1 is of kind 7, which ONNX export does not know"):
        model.to_onnx(tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


# ---- fastbp export of fastbp train files ----------------------------------------

def table(n, seed, unseen=False):
    """A CSV of text and numeric columns with gaps, columns of both kinds
    interleaved; ``unseen`` puts a city training never saw in a few rows.
    Returns the label column's source: x = area / 50 + rooms + a city's offset."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["Lyon", "Nice", "Paris, FR"], n).astype(object)
    area, rooms = rng.normal(100, 30, n), rng.integers(1, 6, n).astype(float)
    kind = rng.choice(["flat", "house"], n).astype(object)
    score = area / 50 + rooms + np.array([{"Lyon": 0.0, "Nice": 1.0, "Paris, FR": 2.0}[c] for c in city])
    city[rng.random(n) < 0.1], kind[rng.random(n) < 0.1], area[rng.random(n) < 0.1] = None, None, np.nan
    if unseen:
        city[:5] = "Brest"
    rows = [["" if value is None or value != value else value for value in row]
            for row in zip(city, area, kind, rooms)]
    return rows, score


def trained(folder, labels, *options, n=150, seed=0):
    """fastbp train on a CSV of ``table`` with the target ``labels(score)``;
    returns the paths of the model and of a CSV of new rows to predict."""
    rows, score = table(n, seed)
    header = ["city", "area", "kind", "rooms", "y"]
    write_csv(folder / "train.csv", header, [row + [label] for row, label in zip(rows, labels(score))])
    new_rows, _ = table(40, seed + 1, unseen=True)
    write_csv(folder / "new.csv", header[:-1], new_rows)
    status = cli.main(["train", "--data", str(folder / "train.csv"), "--target", "y", "--impute", "median",
                       "--epochs", "2", "--hidden", "8", "--quiet", "--save", str(folder / "run.npz"), *options])
    assert status == 0
    return folder / "run.npz", folder / "new.csv"


def feeds(path, model_file):
    """The graph's inputs from the CSV at ``path``, read as fastbp reads
    it, the columns the ones its metadata names; missing text as ""."""
    meta = {prop.key: json.loads(prop.value) for prop in model_file.metadata_props}
    types = {**{name: pa.float64() for name in meta["numeric_columns"]},
             **{name: pa.string() for name in meta["text_columns"]}}
    read = pa.csv.read_csv(path, convert_options=pa.csv.ConvertOptions(strings_can_be_null=True, column_types=types))
    numeric = np.column_stack([read.column(name).to_numpy(zero_copy_only=False) for name in meta["numeric_columns"]])
    text = np.array([pa.compute.fill_null(read.column(name), "").to_pylist() for name in meta["text_columns"]],
                    dtype=object).T
    return {"numeric": numeric, "text": text}, meta


def exported(capsys, model_path, new_path):
    """(ONNX Runtime's outputs on the CSV at ``new_path``, the metadata,
    fastbp predict's predictions as written to CSV, and the model's raw
    outputs on the same rows)."""
    onnx_path = model_path.with_suffix(".onnx")
    status, err = command(capsys, "export", "--model", model_path, "--onnx", onnx_path)
    assert status == 0 and err.endswith(f"wrote {onnx_path}\n"), err
    assert_standard(onnx_path, {"", "ai.onnx.ml"})
    inputs, meta = feeds(new_path, onnx.load(str(onnx_path)))
    status, err = command(capsys, "predict", "--model", model_path, "--data", new_path, "--out",
                          model_path.with_name("pred.csv"), "--unknown-category", "ignore")
    assert status == 0, err
    with open(model_path.with_name("pred.csv"), newline="") as stream:
        written = [row for row in csv.reader(stream)][1:]
    model, trainer = fastbp.files.load_any(model_path)
    steps = Preprocessing.from_dict(trainer.metadata["preprocessing"])
    steps.unknown_category = "ignore"
    table = pa.csv.read_csv(new_path, convert_options=pa.csv.ConvertOptions(
        strings_can_be_null=True, column_types={"city": pa.string(), "kind": pa.string(), "area": pa.float64(),
                                                "rooms": pa.float64()}))
    outputs = model.predict(steps.transform(table.select(steps.names), dtype=model.dtype))
    return run(onnx_path, inputs), meta, written, outputs


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_string_labels_and_their_probabilities(tmp_path, capsys):
    classes = np.array(["low", "mid", "top"])
    model_path, new_path = trained(tmp_path, lambda score: classes[np.digitize(score, [4, 5.5])])
    got, meta, written, outputs = exported(capsys, model_path, new_path)
    assert meta == {"numeric_columns": ["area", "rooms"], "text_columns": ["city", "kind"],
                    "classes": ["low", "mid", "top"]}
    assert got["label"].tolist() == [row[0] for row in written]
    assert len(set(got["label"])) > 1
    assert_matches(got["probabilities"], softmax(outputs))


@pytest.mark.parametrize("labels, options", [
    (lambda score: np.where(score > 5, 7, 3), ["--loss", "bce_with_logits", "--dtype", "float64"]),
    (lambda score: np.where(score > 5, 2.5, 0.5), ["--task", "classify"]),
], ids=["int64 bce_with_logits float64", "double labels"])
def test_numeric_labels(tmp_path, capsys, labels, options):
    model_path, new_path = trained(tmp_path, labels, *options)
    got, meta, written, outputs = exported(capsys, model_path, new_path)
    assert got["label"].dtype == (np.int64 if "--loss" in options else np.float64)
    assert got["label"].tolist() == [type(meta["classes"][0])(row[0]) for row in written]
    if "--loss" in options:
        positive = 1 / (1 + np.exp(-outputs))
        assert_matches(got["probabilities"], np.hstack([1 - positive, positive]))
    else:
        assert_matches(got["probabilities"], softmax(outputs))


def test_a_regression_in_the_targets_units(tmp_path, capsys):
    model_path, new_path = trained(tmp_path, lambda score: 1000 * score)
    got, meta, written, outputs = exported(capsys, model_path, new_path)
    assert "classes" not in meta
    expected = np.array([[float(row[0])] for row in written])
    assert got["prediction"].shape == (40, 1) and got["prediction"].dtype == np.float64
    # in double from the float32 outputs, so only as close as those are
    np.testing.assert_allclose(got["prediction"], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


# ---- what fastbp export refuses ----------------------------------------------------

@pytest.fixture
def saved(tmp_path, capsys):
    """A fastbp train file (a regression on a CSV with no text columns)."""
    rng = np.random.default_rng(0)
    write_csv(tmp_path / "data.csv", ["a", "b", "y"], [[a, b, a - b] for a, b in rng.standard_normal((40, 2))])
    status, err = command(capsys, "train", "--data", tmp_path / "data.csv", "--target", "y", "--quiet", "--hidden",
                          "4", "--epochs", "1", "--save", tmp_path / "run.npz")
    assert status == 0, err
    return tmp_path


def assert_refused(status, err, *parts):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    for part in parts:
        assert part in err, err


def test_a_missing_folder_or_the_model_itself_is_refused(saved, capsys):
    before = (saved / "run.npz").read_bytes()
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "no" / "m.onnx"),
                   "--onnx: folder", "does not exist")
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "run.npz",
                            "--overwrite"), "is the --model file")
    assert (saved / "run.npz").read_bytes() == before and not (saved / "no").exists()


def test_an_unwritable_folder_is_refused(saved, capsys, monkeypatch):
    def refuse(folder):  # as os.open in a folder without write permission (root writes anywhere)
        raise PermissionError(13, "Permission denied", folder)

    monkeypatch.setattr(archive, "_create_temporary", refuse)
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx"),
                   "--onnx:", "Permission denied")
    assert not (saved / "m.onnx").exists()


def test_an_existing_file_is_replaced_only_with_overwrite_unless_fastbp_exported_it(saved, capsys):
    (saved / "m.onnx").write_text("someone's notes\n")
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx"),
                   "exists and is not an ONNX model fastbp exported", "--overwrite")
    assert (saved / "m.onnx").read_text() == "someone's notes\n"
    assert command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx", "--overwrite")[0] == 0
    assert onnx.load(str(saved / "m.onnx")).producer_name == "fastbp"
    # its own export, replaced without --overwrite
    assert command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx")[0] == 0


def test_a_refused_activation_writes_nothing(saved, capsys, monkeypatch):
    load = fastbp.Pipeline.load

    def renamed(path):
        pipeline = load(path)
        activations = pipeline.model.activations
        activations[-1] = copy.copy(activations[-1])
        activations[-1].name = "mish"
        return pipeline

    monkeypatch.setattr(fastbp.Pipeline, "load", staticmethod(renamed))
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx"),
                   "--onnx: layer 1's activation 'mish' has no ONNX form")
    assert sorted(path.name for path in saved.iterdir()) == ["data.csv", "run.npz"]


def test_a_model_without_preprocessing_exports_the_network_with_a_note(tmp_path, capsys):
    model = fastbp.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=0)
    model.save(tmp_path / "model.npz")
    status, err = command(capsys, "export", "--model", tmp_path / "model.npz", "--onnx", tmp_path / "m.onnx")
    assert status == 0, err
    note, wrote = err.splitlines()
    assert note.startswith("note: ") and "holds no preprocessing; exporting the network alone" in note
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert_matches(run(tmp_path / "m.onnx", {"input": x})["output"], model.predict(x))


def test_without_onnx_installed_export_says_how_to_install_it(saved, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert_refused(*command(capsys, "export", "--model", saved / "run.npz", "--onnx", saved / "m.onnx"),
                   "pip install 'fastbp[onnx]'")
    assert not (saved / "m.onnx").exists()
