"""fastbp.Pipeline: a run fastbp train wrote, predicting from DataFrames,
Arrow tables and files in the data's own labels, exactly as fastbp predict."""
import csv

import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp.data import DataError
from tests.cli.test_cli import fastbp_cli

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

HEADER = ["id", "size", "age", "colour", "shape", "kind"]


def rows(n, seed):
    """Rows whose kind depends on size and colour, with missing sizes and colours."""
    rng = np.random.default_rng(seed)
    size, age = rng.standard_normal(n), rng.uniform(0, 90, n)
    colour = rng.choice(["red", "green", "blue"], n)
    shape = rng.choice(["round", "square"], n)
    kind = np.where(size + (colour == "red") > 0.5, "big", np.where(colour == "blue", "blue one", "small"))
    table = []
    for i in range(n):
        table.append([f"{i:05d}", "" if i % 11 == 3 else f"{size[i]:.4f}", f"{age[i]:.1f}",
                      "" if i % 13 == 5 else colour[i], shape[i], kind[i]])
    return table


def write(path, table, header=HEADER):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(table)
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    train = write(folder / "train.csv", rows(300, 0))
    new = write(folder / "new.csv", rows(60, 1))
    assert cli.main(["train", "--data", train, "--target", "kind", "--features", "size,age,colour,shape",
                     "--impute", "median", "--hidden", "16", "--epochs", "5", "--quiet", "--test-split", "0",
                     "--save", str(folder / "run.npz")]) == 0
    return folder, str(folder / "run.npz"), new


def pd_table(path, pipeline):
    """The model's columns of a CSV as pandas reads them (an empty cell is missing)."""
    return pa.Table.from_pandas(pd.read_csv(path)[pipeline.columns], preserve_index=False)


def cli_labels(model, data, *extra):
    status, out, err = fastbp_cli("predict", "--model", model, "--data", data, *extra)
    assert status == 0, err
    return out.splitlines()


def test_predicts_as_the_command_line_from_every_kind_of_input(run):
    folder, model, new = run
    expected = cli_labels(model, new)
    pipeline = fastbp.Pipeline.load(model)
    assert isinstance(pipeline.model, fastbp.MLP) and pipeline.classes == ["big", "blue one", "small"]
    frame = pd.read_csv(new, dtype={"id": str})
    for data in (new, frame, pa.Table.from_pandas(frame), frame[["shape", "kind", "colour", "age", "size"]]):
        labels = pipeline.predict(data)
        assert labels.tolist() == expected, type(data)
    # fastbp.load keeps returning the bare model
    assert isinstance(fastbp.load(model), fastbp.MLP)


def test_probabilities_are_the_softmax_of_the_outputs(run):
    torch = pytest.importorskip("torch")
    folder, model, new = run
    pipeline = fastbp.Pipeline.load(model)
    frame = pd.read_csv(new)
    proba = pipeline.predict_proba(frame)
    outputs = pipeline.model.predict(pipeline.transform(pd_table(new, pipeline)))
    expected = torch.softmax(torch.from_numpy(outputs.astype(np.float64)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, rtol=1e-12, atol=1e-15)
    classes = np.array(pipeline.classes)
    assert classes[np.argmax(proba, axis=1)].tolist() == pipeline.predict(frame).tolist()


def test_binary_cross_entropy_gives_both_classes_probabilities(tmp_path):
    table = [row for row in rows(300, 2) if row[-1] != "blue one"]
    train = write(tmp_path / "train.csv", table)
    model = str(tmp_path / "run.npz")
    assert cli.main(["train", "--data", train, "--target", "kind", "--features", "size,age,colour,shape",
                     "--impute", "mean", "--loss", "bce_with_logits", "--hidden", "8", "--epochs", "3", "--quiet",
                     "--save", model]) == 0
    pipeline = fastbp.Pipeline.load(model)
    proba = pipeline.predict_proba(train)
    logit = pipeline.model.predict(pipeline.transform(pd_table(train, pipeline)))[:, 0]
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-15)
    assert pipeline.predict(train).tolist() == np.where(logit > 0, "small", "big").tolist()


def test_a_regressor_answers_in_the_targets_units(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 2))
    price = 1000 + 300 * X[:, 0] - 50 * X[:, 1]
    train = write(tmp_path / "train.csv", [[a, b, p] for (a, b), p in zip(X, price)], ["a", "b", "price"])
    model = str(tmp_path / "run.npz")
    assert cli.main(["train", "--data", train, "--target", "price", "--hidden", "8", "--epochs", "3", "--quiet",
                     "--save", model]) == 0
    pipeline = fastbp.Pipeline.load(model)
    predictions = pipeline.predict(pd.read_csv(train))
    assert predictions.shape == (200, 1) and abs(np.median(predictions) - 1000) < 500
    np.testing.assert_allclose(predictions[:, 0], np.array(cli_labels(model, train), float), rtol=1e-12)
    with pytest.raises(ValueError, match="predict_proba needs a classifier; this pipeline is a regressor"):
        pipeline.predict_proba(train)


def test_a_bare_model_takes_its_rows_as_they_are(tmp_path):
    model = fastbp.MLP([3, 5, 2], seed=0)
    model.save(tmp_path / "model.npz")
    pipeline = fastbp.Pipeline.load(tmp_path / "model.npz")
    X = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_array_equal(pipeline.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="bare model"):
        pipeline.predict_proba(X)


def test_bad_input_names_what_is_wrong(run):
    folder, model, new = run
    pipeline = fastbp.Pipeline.load(model)
    frame = pd.read_csv(new)
    with pytest.raises(DataError, match="lacks the model's column 'colour'"):
        pipeline.predict(frame.drop(columns="colour"))
    with pytest.raises(DataError, match="text columns .*'colour', 'shape'.*rather than a matrix"):
        pipeline.predict(np.zeros((3, 4)))
    with pytest.raises(DataError, match="column 'size' must be numeric"):
        pipeline.predict(frame.assign(size="large"))
    with pytest.raises(TypeError, match="data must be a pandas DataFrame, an Arrow table, a file path or a matrix"):
        pipeline.predict([[1, 2, 3, 4]])
    unseen = frame.assign(shape="oval")
    with pytest.raises(DataError, match="column 'shape' .* holds 'oval' \\(row 0\\), a category not seen"):
        pipeline.predict(unseen)
    assert len(fastbp.Pipeline.load(model, unknown_category="ignore").predict(unseen)) == len(frame)
