"""fastbp predict on a user's own files, and the defaults fastbp train takes for them."""
import csv
import os

import numpy as np
import pytest

from fastbp import cli
from fastbp.cli import settings
from tests.cli.test_cli import fastbp_cli

FEATURES = ["rooms", "area", "age"]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


@pytest.fixture(scope="module")
def sold(tmp_path_factory):
    """A model trained on a CSV whose label depends on 'area' only, and the
    rows it was trained on (features by name, and the label)."""
    folder = tmp_path_factory.mktemp("sold")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    labels = np.where(X[:, 1] > 0, "yes", "no")
    columns = {name: X[:, j] for j, name in enumerate(FEATURES)}
    write_csv(folder / "train.csv", FEATURES + ["sold"], [list(row) + [label] for row, label in zip(X, labels)])
    assert cli.main(["train", "--data", str(folder / "train.csv"), "--target", "sold", "--quiet", "--hidden", "16",
                     "--lr", "0.01", "--test-split", "0", "--save", str(folder / "model.npz")]) == 0
    return folder, columns, labels


def predict(folder, header, columns, labels=None, extra=()):
    """fastbp predict on a CSV of ``columns`` in the order of ``header``."""
    rows = [[columns[name][i] for name in header] for i in range(len(next(iter(columns.values()))))]
    if labels is not None:
        header, rows = header + ["sold"], [row + [label] for row, label in zip(rows, labels)]
    path = write_csv(folder / "new.csv", header, rows)
    return fastbp_cli("predict", "--model", folder / "model.npz", "--data", path, *extra)


def test_columns_are_matched_by_name(sold):
    folder, columns, labels = sold
    status, in_order, err = predict(folder, FEATURES, columns, labels)
    assert status == 0, err
    accuracy = float(err.split("accuracy ")[1].split()[0])
    assert accuracy > 0.95, err
    status, reordered, err = predict(folder, FEATURES[::-1], columns, labels)
    assert status == 0, err
    assert reordered == in_order and f"accuracy {accuracy:.4f}" in err, err


def test_extra_columns_are_ignored_with_a_note(sold):
    folder, columns, labels = sold
    status, expected, _ = predict(folder, FEATURES, columns)
    assert status == 0
    # pandas' index column as read_csv names it, written back with the frame, and a column of text
    extra = {"Unnamed: 0": np.arange(len(labels)), "city": np.array(["Paris"] * len(labels)), **columns}
    status, out, err = predict(folder, ["Unnamed: 0", "age", "city", "rooms", "area"], extra)
    assert status == 0, err
    assert out == expected
    assert err.splitlines()[0] == "note: ignoring 2 columns the model was not trained on: 'Unnamed: 0', 'city'"


def test_an_unnamed_index_column_is_named_in_the_note(sold):
    folder, columns, labels = sold
    pandas = pytest.importorskip("pandas")
    pandas.DataFrame(columns).to_csv(folder / "indexed.csv")  # index=True: a first column with an empty name
    status, out, err = fastbp_cli("predict", "--model", folder / "model.npz", "--data", folder / "indexed.csv")
    assert status == 0, err
    assert "note: ignoring 1 column the model was not trained on: '' (unnamed" in err, err
    assert len(out.splitlines()) == len(labels)


@pytest.mark.parametrize("header, sources, message", [
    (["a", "b", "c"], FEATURES, "--data: {path} lacks the model's columns 'rooms', 'area', 'age' (it has 'a', "
                                "'b', 'c'); rename the CSV's columns to match, or give one with the columns the model "
                                "was trained on"),
    (["age", "rooms"], ["age", "rooms"], "--data: {path} lacks the model's column 'area' (it has 'age', 'rooms'); "),
])
def test_missing_columns_are_refused_in_one_line(sold, header, sources, message, tmp_path):
    folder, columns, labels = sold
    renamed = {new: columns[old] for new, old in zip(header, sources)}
    out_path = tmp_path / "p.csv"
    status, out, err = predict(folder, header, renamed, extra=["--out", out_path])
    assert status == 2 and err.count("\n") == 1, err
    assert message.replace("{path}", repr(str(folder / "new.csv"))) in err, err
    assert not out_path.exists()


def test_data_without_names_goes_by_position(sold, tmp_path):
    folder, columns, labels = sold
    X = np.column_stack([columns[name] for name in FEATURES])
    np.save(tmp_path / "X.npy", X)
    status, out, err = fastbp_cli("predict", "--model", folder / "model.npz", "--data", tmp_path / "X.npy")
    assert status == 0, err
    assert np.mean(np.array(out.splitlines()) == labels) > 0.95
    # a model trained without names reads a CSV by position, whatever its header says
    np.savez(tmp_path / "train.npz", X=X, y=labels)
    assert cli.main(["train", "--data", str(tmp_path / "train.npz"), "--quiet", "--hidden", "16", "--lr", "0.01",
                     "--save", str(tmp_path / "m.npz")]) == 0
    write_csv(tmp_path / "new.csv", ["x", "y", "z"], X)
    status, out, err = fastbp_cli("predict", "--model", tmp_path / "m.npz", "--data", tmp_path / "new.csv")
    assert status == 0 and "note" not in err, err
    assert np.mean(np.array(out.splitlines()) == labels) > 0.95


def houses(path, n=1000, seed=0):
    """A CSV of house prices around 300 +- 160 from features of unlike units,
    among them a zip code, large and of no use, as real tables have."""
    rng = np.random.default_rng(seed)
    area, rooms, year = rng.normal(120, 40, n), rng.integers(1, 7, n), rng.integers(1900, 2021, n)
    lat, long, zipcode = rng.normal(47.5, 0.1, n), rng.normal(-122.2, 0.1, n), rng.integers(98001, 98200, n)
    price = (300 + 120 * (area - 120) / 40 + 30 * (rooms - 3.5) / 1.7 + 60 * (year - 1960) / 35
             + 80 * (lat - 47.5) / 0.1 - 50 * (long + 122.2) / 0.1 + rng.normal(0, 15, n))
    return write_csv(path, ["area", "rooms", "year_built", "lat", "long", "zipcode", "price"],
                     np.column_stack([area, rooms, year, lat, long, zipcode, price]))


def test_a_regression_on_a_csv_is_standardized_by_default(tmp_path, capsys):
    data, model = houses(tmp_path / "houses.csv"), tmp_path / "m.npz"
    assert cli.main(["train", "--data", str(data), "--target", "price", "--quiet", "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert "standardized inputs and targets" in out.splitlines()[1], out
    assert float(out.split("test r2 ")[1].split()[0]) >= 0.95, out  # 0.003 unscaled
    # predictions in the target's own units
    assert cli.main(["predict", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "p.csv")]) == 0
    assert float(capsys.readouterr().err.split("r2 ")[1].split()[0]) >= 0.95
    prices = np.array([float(row[0]) for row in read_csv(tmp_path / "p.csv")[1:]])
    assert 250 < prices.mean() < 350 and 120 < prices.std() < 200
    assert cli.main(["train", "--data", str(data), "--target", "price", "--quiet", "--epochs", "1",
                     "--no-standardize"]) == 0
    assert "standardized" not in capsys.readouterr().out


@pytest.mark.parametrize("given, expected", [({}, False), ({"dataset": "digits"}, False),
                                             ({"dataset": "wine"}, True), ({"dataset": "diabetes"}, True),
                                             ({"data": "houses.csv"}, True),
                                             ({"data": "houses.csv", "standardize": False}, False),
                                             ({"dataset": "wine", "standardize": False}, False)])
def test_standardisation_defaults(given, expected):
    assert settings.resolve(dict.fromkeys(settings.DEFAULTS) | given)["standardize"] is expected


def test_labels_with_commas_and_quotes_are_quoted(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 2))
    labels = np.where(X[:, 0] > 0, "Paris, FR", 'the "Big Apple"')
    write_csv(tmp_path / "cities.csv", ["x0", "x1", "city"], [list(row) + [label] for row, label in zip(X, labels)])
    assert cli.main(["train", "--data", str(tmp_path / "cities.csv"), "--target", "city", "--quiet", "--hidden", "8",
                     "--lr", "0.01", "--save", str(tmp_path / "m.npz")]) == 0
    status, out, err = fastbp_cli("predict", "--model", tmp_path / "m.npz", "--data", tmp_path / "cities.csv",
                                  "--out", tmp_path / "p.csv")
    assert status == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert rows[0] == ["prediction"] and all(len(row) == 1 for row in rows)
    predicted = np.array([row[0] for row in rows[1:]])
    assert set(predicted) == {"Paris, FR", 'the "Big Apple"'} and np.mean(predicted == labels) > 0.9
    pandas = pytest.importorskip("pandas")
    assert pandas.read_csv(tmp_path / "p.csv")["prediction"].tolist() == predicted.tolist()
    status, out, err = fastbp_cli("predict", "--model", tmp_path / "m.npz", "--data", tmp_path / "cities.csv")
    assert status == 0, err
    assert list(csv.reader(out.splitlines())) == [[label] for label in predicted]
