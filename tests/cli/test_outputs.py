"""Output paths never destroy a user's data: an output that is one of the
run's inputs is refused, and an existing file is replaced only when fastbp
wrote that kind of file there, or with --overwrite. A refusal is one line on
stderr, exit status 2, and the file's bytes unchanged."""
import os

import numpy as np
import pytest

import fastbp
from fastbp import cli

TINY = ["--quiet", "--hidden", "4", "--epochs", "1", "--test-split", "0", "--val-split", "0"]


def command(capsys, *args):
    """``fastbp ARGS`` in this process: (exit status, stderr)."""
    try:
        status = cli.main([*map(str, args)])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.fixture
def folder(tmp_path, capsys):
    """A CSV and arrays of data, a checkpoint trained on the CSV, and files
    of someone's that no run reads."""
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.6f},{b:.6f},{a - b:.6f}" for a, b in rng.standard_normal((40, 2)))
    (tmp_path / "data.csv").write_text("a,b,y\n" + rows + "\n")
    (tmp_path / "other.csv").write_text("name,score\nada,3\n")
    (tmp_path / "notes.png").write_text("not a picture\n")
    np.save(tmp_path / "X.npy", rng.standard_normal((40, 2)))
    np.save(tmp_path / "y.npy", rng.standard_normal(40))
    status, err = command(capsys, "train", "--data", tmp_path / "data.csv", "--target", "y", *TINY,
                         "--save", tmp_path / "model.npz")
    assert status == 0, err
    return tmp_path


def assert_refused(status, err, path, before, *parts):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    for part in parts:
        assert part in err, err
    assert path.read_bytes() == before, f"{path} changed"


def train(capsys, folder, *args):
    return command(capsys, "train", "--data", folder / "data.csv", "--target", "y", *TINY, *args)


def predict(capsys, folder, *args):
    return command(capsys, "predict", "--model", folder / "model.npz", "--data", folder / "data.csv", *args)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_refuses_to_write_over_its_data(capsys, folder, overwrite):
    before = (folder / "data.csv").read_bytes()
    status, err = predict(capsys, folder, "--out", folder / "data.csv", *overwrite)
    assert_refused(status, err, folder / "data.csv", before, "--out", "--data", "another path")


def test_predict_refuses_to_write_over_its_arrays_through_a_link(capsys, folder):
    os.symlink(folder / "y.npy", folder / "link.npy")
    for flag, name in (("--data", "X.npy"), ("--target", "y.npy")):
        before = (folder / name).read_bytes()
        out = folder / ("link.npy" if flag == "--target" else name)
        status, err = command(capsys, "predict", "--model", folder / "model.npz", "--data", folder / "X.npy",
                             "--target", folder / "y.npy", "--out", out, "--overwrite")
        assert_refused(status, err, folder / name, before, "--out", flag)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_train_refuses_to_save_over_its_data(capsys, folder, overwrite):
    before = (folder / "data.csv").read_bytes()
    status, err = train(capsys, folder, "--save", folder / "data.csv", *overwrite)
    assert_refused(status, err, folder / "data.csv", before, "--save", "--data")


def test_train_refuses_to_plot_over_its_checkpoint(capsys, folder):
    before = (folder / "model.npz").read_bytes()
    status, err = command(capsys, "train", "--resume", folder / "model.npz", "--epochs", "2", "--quiet",
                         "--plot", folder / "model.npz", "--overwrite")
    assert_refused(status, err, folder / "model.npz", before, "--plot", "--resume")


@pytest.mark.parametrize("flag, name", [("--save", "other.csv"), ("--plot", "notes.png")])
def test_train_refuses_to_replace_a_file_it_did_not_write(capsys, folder, flag, name):
    before = (folder / name).read_bytes()
    status, err = train(capsys, folder, flag, folder / name)
    assert_refused(status, err, folder / name, before, flag, "--overwrite")


def test_predict_refuses_to_replace_a_file_it_did_not_write(capsys, folder):
    for name in ("other.csv", "y.npy"):
        before = (folder / name).read_bytes()
        status, err = predict(capsys, folder, "--out", folder / name)
        assert_refused(status, err, folder / name, before, "--out", "--overwrite")


def test_overwrite_replaces_a_file_that_is_not_an_input(capsys, folder):
    status, err = train(capsys, folder, "--save", folder / "other.csv", "--overwrite")
    assert status == 0, err
    assert (folder / "other.csv").read_bytes()[:2] == b"PK"
    status, err = predict(capsys, folder, "--out", folder / "y.npy", "--overwrite")
    assert status == 0, err
    assert np.load(folder / "y.npy").shape == (40, 1)


def test_fastbp_replaces_its_own_files_without_overwrite(capsys, folder):
    fastbp.MLP([2, 1], seed=0).save(folder / "run.npz")  # a model file, then checkpoints
    for _ in range(2):
        status, err = train(capsys, folder, "--save", folder / "run.npz", "--plot", folder / "run.png")
        assert status == 0, err
    status, err = command(capsys, "train", "--resume", folder / "run.npz", "--save", folder / "run.npz",
                         "--epochs", "3", "--quiet", "--plot", folder / "run.png")
    assert status == 0, err
    assert fastbp.load_checkpoint(folder / "run.npz").epoch == 3
    for out in ("predictions.csv", "predictions.parquet"):
        for _ in range(2):
            status, err = predict(capsys, folder, "--out", folder / out)
            assert status == 0, err


def test_an_empty_file_is_replaced(capsys, folder):
    (folder / "empty.csv").write_bytes(b"")
    status, err = predict(capsys, folder, "--out", folder / "empty.csv")
    assert status == 0, err


@pytest.mark.parametrize("flag", ["--json", "--png"])
def test_bench_refuses_to_replace_a_file_it_did_not_write_before_timing(capsys, folder, flag):
    before = (folder / "other.csv").read_bytes()
    status, err = command(capsys, "bench", "--sizes", "2,2", "--rounds", "1", "--quiet",
                         "--json", folder / "bench.json", "--png", folder / "bench.png", flag, folder / "other.csv")
    assert_refused(status, err, folder / "other.csv", before, flag, "--overwrite")
