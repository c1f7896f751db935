"""fastbp predict --proba and --keep-columns: the output columns beside the predictions."""
import csv
import re
import os

import numpy as np
import pytest

import fastbp
from fastbp import cli
from tests.cli.test_cli import fastbp_cli
from tests.library.test_pipeline import rows, write

pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("columns")
    train = write(folder / "train.csv", rows(300, 0))
    assert cli.main(["train", "--data", train, "--target", "kind", "--features", "size,age,colour,shape",
                     "--impute", "median", "--hidden", "16", "--epochs", "3", "--quiet", "--save",
                     str(folder / "run.npz")]) == 0
    return folder, str(folder / "run.npz"), write(folder / "new.csv", rows(40, 1))


def read(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def test_proba_and_kept_columns_go_beside_the_labels(run):
    folder, model, new = run
    status, out, err = fastbp_cli("predict", "--model", model, "--data", new, "--proba", "--keep-columns", "id,age",
                                  "--out", folder / "out.csv")
    assert status == 0, err
    header, *lines = read(folder / "out.csv")
    assert header == ["id", "age", "prediction", "big", "blue one", "small"]
    source = rows(40, 1)
    # the ID goes through as its text, leading zeros and all
    assert [line[0] for line in lines] == [row[0] for row in source] and lines[0][0] == "00000"
    assert [float(line[1]) for line in lines] == [float(row[2]) for row in source]
    pipeline = fastbp.Pipeline.load(model)
    assert [line[2] for line in lines] == pipeline.predict(new).tolist()
    proba = np.array([[float(cell) for cell in line[3:]] for line in lines])
    np.testing.assert_allclose(proba, pipeline.predict_proba(new), rtol=1e-15)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


def test_parquet_and_standard_output_take_the_same_columns(run):
    folder, model, new = run
    status, out, err = fastbp_cli("predict", "--model", model, "--data", new, "--proba", "--keep-columns", "id",
                                  "--out", folder / "out.parquet")
    assert status == 0, err
    table = pa.parquet.read_table(folder / "out.parquet")
    assert table.column_names == ["id", "prediction", "big", "blue one", "small"]
    assert table.column("id").type == pa.string() and table.column("id")[1].as_py() == "00001"
    status, printed, err = fastbp_cli("predict", "--model", model, "--data", new, "--proba", "--keep-columns", "id")
    assert status == 0, err
    assert list(csv.reader(printed.splitlines())) == read_back(table)
    # without either flag the output is the predictions alone, no header
    status, plain, err = fastbp_cli("predict", "--model", model, "--data", new)
    assert plain.splitlines() == table.column("prediction").to_pylist()


def read_back(table):
    return [table.column_names] + [[str(value) for value in row.values()] for row in table.to_pylist()]


@pytest.mark.parametrize("extra, message", [
    (("--keep-columns", "id,code"), "--keep-columns: .* has no column 'code'"),
    (("--keep-columns", "prediction"), "more than one column named 'prediction'"),
    (("--proba", "--out", "out.npy"), "--out: .*is a .npy.* to add --proba columns"),
    (("--keep-columns", "id", "--out", "out.npy"), "to add --keep-columns columns"),
])
def test_columns_that_cannot_be_written_are_refused(run, extra, message):
    folder, model, new = run
    extra = [str(folder / part) if part.endswith(".npy") else part for part in extra]
    status, out, err = fastbp_cli("predict", "--model", model, "--data", new, *extra)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not os.path.exists(folder / "out.npy")


def test_proba_of_a_regressor_is_refused(tmp_path):
    X = np.random.default_rng(0).standard_normal((100, 2))
    train = write(tmp_path / "train.csv", [[a, b, a - b] for a, b in X], ["a", "b", "y"])
    assert cli.main(["train", "--data", train, "--target", "y", "--hidden", "4", "--epochs", "1", "--quiet",
                     "--save", str(tmp_path / "run.npz")]) == 0
    status, out, err = fastbp_cli("predict", "--model", tmp_path / "run.npz", "--data", train, "--proba")
    assert status == 2 and "--proba: the model in" in err and "is a regressor" in err, err
