"""Model files: round trip, atomic writes, and clear errors for bad files."""
import json
import os

import numpy as np
import pytest

import fastbp
from fastbp import archive


@pytest.fixture
def model():
    return fastbp.MLP([5, 7, 3], activation=fastbp.Activation("elu", alpha=0.3),
                      output_activation="sigmoid", dtype="float64", seed=4)


def test_round_trip_predicts_the_same(model, tmp_path):
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert loaded.sizes == model.sizes and loaded.activations == model.activations
    assert loaded.dtype == model.dtype and loaded.bias == model.bias
    x = np.random.default_rng(0).standard_normal((4, 5))
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert not [name for name in os.listdir(tmp_path) if name != "model.npz"]  # no temporary left


def test_a_failed_write_leaves_the_old_file(model, tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def broken_savez(stream, **arrays):
        stream.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(archive.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        fastbp.MLP([2, 2]).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_bad_files_give_clear_errors(model, tmp_path):
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    with pytest.raises(FileNotFoundError, match="no model or checkpoint file at"):
        fastbp.load(tmp_path / "missing.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fastbp model or checkpoint file"):
        fastbp.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable fastbp model or checkpoint file"):
        fastbp.load(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.ones(3))
    with pytest.raises(ValueError, match="not a fastbp model or checkpoint file"):
        fastbp.load(foreign)
    with np.load(good) as stored:
        contents = dict(stored)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**contents, "format_version": np.array(2)})
    with pytest.raises(ValueError, match="format version 2; this fastbp reads version 1"):
        fastbp.load(newer)
    misfit = tmp_path / "misfit.npz"
    np.savez(misfit, **{**contents, "params": contents["params"][:-1]})
    with pytest.raises(ValueError, match="damaged fastbp file .* do not fit the layer sizes"):
        fastbp.load(misfit)
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, **{**contents, "activations": np.array(json.dumps([["swish", {}], ["sigmoid", {}]]))})
    with pytest.raises(ValueError, match="damaged fastbp file"):
        fastbp.load(unknown)


def test_save_into_a_missing_folder_is_an_error(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.save(tmp_path / "nowhere" / "model.npz")
