"""Files as fastbp reads them: CSV and Parquet through Arrow, checked against
pandas on the same files; text columns, missing values, memory-mapped arrays
and bad files."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from fastbp import _checks, cli, data, io, preprocessing
from fastbp.cli import prepare
from fastbp.cli import settings as cli_settings
from fastbp.cli import predict as cli_predict
from fastbp.preprocessing import Preprocessing
from tests.cli.test_cli import fastbp_cli

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
import pyarrow.parquet  # noqa: E402


def frame(n=3000, seed=0, missing=True):
    """Columns as real tables have them: integers, floats, text, and gaps."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["Paris, FR", "Lyon", "Nice", "Lille"], n)
    rooms = rng.integers(1, 7, n).astype(float)
    area = rng.normal(120, 40, n)
    if missing:
        area[rng.random(n) < 0.05] = np.nan
        city = np.where(rng.random(n) < 0.03, None, city)
    # an integer column until row n - 10, where decimals start: Arrow infers
    # a CSV's types from the first block only
    floors = np.concatenate([rng.integers(0, 5, n - 10), rng.normal(2, 1, 10)])
    label = np.where(area > 120, "big", "small")
    return pd.DataFrame({"rooms": rooms, "area": area, "city": city, "floors": floors, "label": label})


def expected(df, train, impute):
    """What pandas makes of ``df``'s features: text one-hot encoded over the
    training rows' categories, gaps filled with the training rows' statistic."""
    features = df.drop(columns="label")
    columns = []
    for name in features:
        column = features[name]
        if column.dtype == object or isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(column):
            column = column.astype(object)
            fill = column.iloc[train].mode().iloc[0]
            column = column.where(column.notna(), fill)
            categories = sorted(column.iloc[train].unique())
            columns.append(pd.get_dummies(pd.Categorical(column, categories=categories)).to_numpy(float))
        else:
            known = column.iloc[train]
            fill = {"mean": known.mean(), "median": known.median(), "most-frequent": known.mode().iloc[0]}[impute]
            columns.append(column.fillna(fill).to_numpy(float)[:, None])
    return np.hstack(columns)


def read(path, impute, train, standardize=False, dtype=np.float64, target="label"):
    table, y, _ = data.read_table(str(path), os.path.splitext(path)[1], target, float_type="float64")
    y = data.target_values(y, str(path), target)
    steps = Preprocessing.fit(table, y, train, "classify", table.column_names, target, standardize, impute)
    return steps, steps.transform(table, dtype=dtype), y


@pytest.mark.parametrize("impute", ["mean", "median", "most-frequent"])
@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_reader_encoder_and_imputer_agree_with_pandas(tmp_path, extension, impute):
    df = frame(n=60000)  # a few MB: Arrow reads the CSV in several blocks
    path = tmp_path / f"houses{extension}"
    df.to_csv(path, index=False) if extension == ".csv" else df.astype({"city": "category"}).to_parquet(path)
    train = np.random.default_rng(1).permutation(len(df))[:45000]
    steps, X, y = read(path, impute, train)
    back = pd.read_csv(path) if extension == ".csv" else pd.read_parquet(path)
    np.testing.assert_allclose(X, expected(back, train, impute), rtol=1e-12)
    assert steps.categories[2] == sorted(back["city"].iloc[train].dropna().unique())
    assert y.tolist() == back["label"].tolist()
    assert X.flags.c_contiguous


def test_standardisation_is_on_training_rows_and_a_constant_column_keeps_scale_one(tmp_path):
    df = frame(n=500, missing=False).assign(flat=7.0)
    df.to_csv(tmp_path / "a.csv", index=False)
    train = np.arange(100, 500)
    steps, X, _ = read(tmp_path / "a.csv", None, train, standardize=True, dtype=np.float32)
    numeric = df[["rooms", "area", "floors"]].to_numpy()
    scaled = (numeric - numeric[train].mean(axis=0)) / numeric[train].std(axis=0)
    np.testing.assert_allclose(X[:, [0, 1, 6]], scaled, rtol=1e-5, atol=1e-5)
    assert X.dtype == np.float32 and np.all(X[:, 7] == 0) and steps.scale[4] == 1.0
    assert "constant in the training split (kept, scale 1): column 'flat'" in steps.notes[0]


def test_the_preprocessing_survives_its_dict_and_json(tmp_path):
    df = frame(n=400)
    df.to_csv(tmp_path / "a.csv", index=False)
    steps, X, _ = read(tmp_path / "a.csv", "median", np.arange(300), standardize=True)
    table, _, _ = data.read_table(str(tmp_path / "a.csv"), ".csv", "label")
    again = Preprocessing.from_dict(json.loads(json.dumps(steps.to_dict())))
    np.testing.assert_array_equal(again.transform(table, dtype=np.float64), X)
    # files written before text columns and imputation existed read the same
    old = {"task": "regress", "classes": None, "x_scaling": {"mean": [1.0, 2.0], "scale": [2.0, 4.0]},
           "y_scaling": {"mean": [10.0], "scale": [5.0]}, "features": ["a", "b"], "target": "y"}
    steps = Preprocessing.from_dict(old)
    np.testing.assert_array_equal(steps.transform(np.array([[3.0, 6.0]])), [[1.0, 1.0]])
    np.testing.assert_array_equal(steps.decode(np.array([[1.0]]), "mse"), [[15.0]])


def test_train_and_predict_with_text_columns_and_gaps(tmp_path):
    df = frame(n=2000)
    df.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "m.npz"
    status, out, err = fastbp_cli("train", "--data", tmp_path / "train.csv", "--target", "label", "--impute", "median",
                                  "--quiet", "--epochs", "5", "--save", model)
    assert status == 0, err
    assert "2000 samples, 7 features, 2 classes" in out and "one-hot encoded: 'city' (4)" in out, out
    assert "missing values filled with the training split's median: 'area' (" in out, out
    saved = json.loads(str(np.load(model)["training"]))["metadata"]["preprocessing"]
    assert saved["columns"] == ["rooms", "area", "city", "floors"] and saved["impute"] == "median"
    assert saved["categories"][2] == ["Lille", "Lyon", "Nice", "Paris, FR"]
    # the same rows from a Parquet file predict the same, whatever the output's format
    df.drop(columns="label").to_parquet(tmp_path / "new.parquet")
    status, printed, err = fastbp_cli("predict", "--model", model, "--data", tmp_path / "train.csv")
    assert status == 0 and "accuracy" in err, err
    for name in ("p.csv", "p.parquet"):
        status, _, err = fastbp_cli("predict", "--model", model, "--data", tmp_path / "new.parquet",
                                    "--out", tmp_path / name)
        assert status == 0, err
        written = pd.read_csv(tmp_path / name) if name.endswith(".csv") else pd.read_parquet(tmp_path / name)
        assert written["prediction"].tolist() == printed.split()
    # a category the training split never saw
    df.loc[5, "city"] = "Brest"
    df.to_csv(tmp_path / "brest.csv", index=False)
    status, _, err = fastbp_cli("predict", "--model", model, "--data", tmp_path / "brest.csv", "--out",
                                tmp_path / "q.csv")
    assert status == 2 and err.count("\n") == 1 and not (tmp_path / "q.csv").exists()
    assert "column 'city'" in err and "'Brest' (row 5), a category not seen in training" in err, err
    status, out, err = fastbp_cli("predict", "--model", model, "--data", tmp_path / "brest.csv",
                                  "--unknown-category", "ignore")
    assert status == 0 and len(out.split()) == len(df), err


def test_predict_streams_a_file_in_batches(tmp_path, monkeypatch, capsys):
    df = frame(n=40000, missing=False)
    df.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "m.npz"
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), "--target", "label", "--quiet", "--epochs", "1",
                     "--hidden", "8", "--save", str(model)]) == 0
    sizes = []
    batches = data.batches

    def counted(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(data, "batches", counted)
    capsys.readouterr()
    assert cli_predict.predict(str(model), str(tmp_path / "train.csv"), out_path=str(tmp_path / "p.npy")) == 0
    assert len(sizes) > 1 and sum(sizes) == len(df) and max(sizes) < len(df)
    trainer = io.load_checkpoint(model)
    steps = Preprocessing.from_dict(trainer.metadata["preprocessing"])
    table, _, _ = data.read_table(str(tmp_path / "train.csv"), ".csv", "label")
    whole = steps.decode(trainer.model.predict(steps.transform(table)), "cross_entropy")
    assert np.load(tmp_path / "p.npy").ravel().tolist() == whole.tolist()


def test_a_memory_mapped_npy_is_never_copied_whole(tmp_path, monkeypatch):
    n, d = 20000, 100  # 8 MB of float32
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((n, d)).astype(np.float32) * 3 + 1)
    np.save(tmp_path / "y.npy", rng.integers(0, 3, n))
    monkeypatch.setattr(preprocessing, "BLOCK_VALUES", 4096)
    settings = cli_settings.resolve({"data": str(tmp_path / "X.npy"), "target": str(tmp_path / "y.npy")})
    tracemalloc.start()
    prepared = prepare.Prepared(settings)
    X_train, _ = prepared.part("train")
    X_train = _checks.as_matrix("X", X_train, np.float32, d)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = n * d * 4
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB of Python allocations for {size / 1e6:.0f} MB of data"
    assert isinstance(prepared.X, np.memmap) and np.shares_memory(X_train, prepared.X)
    assert X_train.shape == (prepared.size("train"), d)
    source = np.load(tmp_path / "X.npy")
    order = np.random.default_rng(0).permutation(n)
    train = order[n - prepared.size("train"):]
    scaled = (source[order[-10:]] - source[train].mean(axis=0)) / source[train].std(axis=0)
    np.testing.assert_allclose(X_train[-10:], scaled, rtol=1e-4, atol=1e-4)


def peak_rss(*args, resident_bytes=data.RESIDENT_BYTES):
    """(bytes of peak RSS, exit status, output) of ``fastbp args`` with
    ``data.RESIDENT_BYTES`` set, run by a fresh parent whose only child it
    is, so that its RUSAGE_CHILDREN maximum is the run's high-water mark
    (VmHWM) at exit."""
    child = [sys.executable, "-c", "import sys; from fastbp import cli, data; data.RESIDENT_BYTES = int(sys.argv[1]); "
             "sys.exit(cli.main(sys.argv[2:]))", str(resident_bytes), *map(str, args)]
    parent = ("import resource, subprocess, sys; status = subprocess.run(sys.argv[1:]).returncode; "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, status)")
    result = subprocess.run([sys.executable, "-c", parent, *child], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    kilobytes, status = result.stdout.split()[-2:]
    return int(kilobytes) * 1024, int(status), result.stdout + result.stderr


def test_a_memory_mapped_npy_trains_in_bounded_memory_to_the_in_memory_parameters(tmp_path):
    # rows read at random between two drops of the mapping's pages stay a
    # fraction of the file; the source and its preprocessed copy, both mapped,
    # would be resident whole twice over without the drops
    d, size = 50, 64 << 20
    runs = {}
    for name, n in (("small", 2000), ("large", size // (d * 4))):
        rng = np.random.default_rng(0)
        X = np.lib.format.open_memmap(tmp_path / f"{name}X.npy", mode="w+", dtype=np.float32, shape=(n, d))
        for start in range(0, n, 100_000):
            X[start:start + 100_000] = rng.standard_normal((min(100_000, n - start), d))
        y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
        X.flush()
        np.save(tmp_path / f"{name}y.npy", y)
        args = ["train", "--target", tmp_path / f"{name}y.npy", "--hidden", "8", "--epochs", "1", "--batch-size",
                "256", "--quiet", "--lr-schedule", "constant", "--save", tmp_path / f"{name}.npz"]
        # what the run may keep resident of its mapped files: a quarter of them
        runs[name] = peak_rss(*args, "--data", tmp_path / f"{name}X.npy", resident_bytes=size // 4)
        assert runs[name][1] == 0, runs[name][2]
    del X
    growth = runs["large"][0] - runs["small"][0]
    assert growth < size * 3 / 4, f"{size >> 20} MB of data raised the peak RSS by {growth / 2**20:.0f} MB"
    np.savez(tmp_path / "Xy.npz", X=np.load(tmp_path / "largeX.npy"), y=np.load(tmp_path / "largey.npy"))
    status, out, err = fastbp_cli("train", "--data", tmp_path / "Xy.npz", "--hidden", "8", "--epochs", "1",
                                  "--batch-size", "256", "--quiet", "--lr-schedule", "constant", "--save",
                                  tmp_path / "memory.npz")
    assert status == 0, err
    mapped, _ = io.load_any(str(tmp_path / "large.npz"))
    in_memory, _ = io.load_any(str(tmp_path / "memory.npz"))
    assert mapped._params.tobytes() == in_memory._params.tobytes()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_a_memory_mapped_X_trains_in_stretches_to_the_parameters_of_one_call(tmp_path, monkeypatch, loss):
    # stretches of 3 batches, cut again by checkpoints every 2 steps
    monkeypatch.setattr(data, "RESIDENT_BYTES", 2 * 48 * 7 * 4)  # 48 rows of 7 float32 gathered at a time
    import fastbp

    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(1000, 7))
    X[:] = rng.standard_normal((1000, 7))
    y = rng.integers(0, 3, 1000) if loss == "cross_entropy" else rng.standard_normal((1000, 3))
    assert data.mapped_rows(X, 16) == 48
    stretches = []
    monkeypatch.setattr(data, "release", lambda array: stretches.append(len(array)))
    params = []
    for inputs in (X, np.array(X)):  # the memmap is writeable: fit takes it as it is
        model = fastbp.MLP([7, 5, 3], seed=0)
        trainer = fastbp.Trainer(model, loss, fastbp.Adam(model))
        trainer.fit(inputs, y, epochs=2, batch_size=16, seed=0, checkpoint_every=2,
                    checkpoint_path=tmp_path / "c.npz")
        params.append(model._params.tobytes())
    assert params[0] == params[1]
    assert len(stretches) > 2 * 1000 // 48


def test_gather_reads_a_mapped_matrix_in_file_order_a_region_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RESIDENT_BYTES", 2 * 100 * 7 * 4)  # regions of 100 rows
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(1000, 7))
    X[:] = np.random.default_rng(0).standard_normal((1000, 7))
    rows = np.random.default_rng(1).permutation(1000)[:300]
    released = []
    real = data.release
    monkeypatch.setattr(data, "release", lambda array: (released.append(array), real(array)))
    out = np.full((400, 7), np.nan, dtype=np.float32)
    data.gather(X, rows, out)
    np.testing.assert_array_equal(out[:300], np.asarray(X)[rows])
    assert np.isnan(out[300:]).all()
    # one release per region the rows fall in, each within its region, in file order
    regions = sorted(set(rows // 100))
    assert len(released) == len(regions)
    for region, part in zip(regions, released):
        first = (np.lib.array_utils.byte_bounds(part)[0] - np.lib.array_utils.byte_bounds(X)[0]) // 28
        assert region * 100 <= first < first + len(part) <= (region + 1) * 100


def test_the_finite_check_does_not_mask_the_whole_matrix():
    X = np.ones((20000, 50), dtype=np.float32)
    tracemalloc.start()
    _checks.as_matrix("X", X, np.float32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < X.size / 4, f"{peak} bytes allocated to check {X.size} values"
    X[15000, 7] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(first at index \(15000, 7\): nan\)"):
        _checks.as_matrix("X", X, np.float32)


def test_a_constant_feature_trains_and_is_mentioned(tmp_path):
    df = frame(n=600, missing=False).assign(flat=1.0)
    df.to_csv(tmp_path / "a.csv", index=False)
    status, out, err = fastbp_cli("train", "--data", tmp_path / "a.csv", "--target", "label", "--quiet",
                                  "--epochs", "3", "--features", "area,flat,city")
    assert status == 0, err
    assert "600 samples, 6 features" in out and "note: constant in the training split (kept, scale 1): column " \
                                                "'flat'" in out, out
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.8, out


def nested(path):
    pa.parquet.write_table(pa.table({"a": [1.0, 2.0], "tags": [[1, 2], [3]], "label": ["x", "y"]}), path)


def dated(path):
    path.write_text("a,day,label\n1,2024-01-01,x\n2,2024-01-02,y\n")


BAD_FILES = {
    "parquet named csv": ("data.csv", lambda p: frame(50).to_parquet(p), [],
                          "is a Parquet file, not a CSV file; give it the extension .parquet"),
    "csv named parquet": ("data.parquet", lambda p: frame(50).to_csv(p), [], "is not a Parquet file (it begins"),
    "ragged": ("data.csv", lambda p: p.write_text("a,b,label\n1,2,x\n3,4\n5,6,y\n"), [],
               "is ragged or truncated: line 3 has 2 fields, the header has 3"),
    "truncated": ("data.csv", lambda p: p.write_text(frame(200).to_csv(index=False)[:-9]), [],
                  "is ragged or truncated: line 201 has"),
    "nested": ("data.parquet", nested, [], "column 'tags' of '{path}' is nested (list<element: int64>)"),
    "all-missing target": ("data.csv", lambda p: p.write_text("a,b,label\n1,2,\n3,4,\n"), [],
                           "--target: column 'label' of '{path}' is all missing"),
    "date column": ("data.csv", dated, [], "column 'day' of '{path}' is date32[day], neither numeric nor "
                                           "categorical"),
    "too many categories": ("data.csv", lambda p: frame(200, missing=False).to_csv(p, index=False),
                            ["--max-categories", "3"], "--max-categories: column 'city' of '{path}' has 4 categories"),
    "missing values": ("data.csv", lambda p: frame(200).to_csv(p, index=False), [],
                       "--data: '{path}' has missing values in columns 'area' ("),
    "unknown feature": ("data.csv", lambda p: frame(50).to_csv(p, index=False), ["--features", "area,garden"],
                        "--features: '{path}' has no column 'garden'; its columns are"),
    "mixed column": ("data.csv", lambda p: p.write_text("a,b,label\n1,2,x\n2,3,y\n3,oops,x\n"), [],
                     "--data: column 'b' of '{path}' must be numeric; line 4 has 'oops'"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_one_line_and_exit_2_and_nothing_written(tmp_path, name):
    filename, write, args, message = BAD_FILES[name]
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / filename
    write(path)
    before = sorted(os.listdir(folder))
    status, out, err = fastbp_cli("train", "--data", path, "--target", "label", "--quiet", "--epochs", "1",
                                  "--save", tmp_path / "m.npz", *args)
    assert status == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    assert message.replace("{path}", str(path)) in err, err
    assert sorted(os.listdir(folder)) == before and not (tmp_path / "m.npz").exists()
