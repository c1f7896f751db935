"""The old module names keep working for a release, with a DeprecationWarning
naming the new one."""
import importlib

import pytest

import fastbp


def reimport(name):
    """Import ``name`` again, so that its module-level warning is raised in this test."""
    module = importlib.import_module(name)
    return importlib.reload(module)


def test_fastbp_io_names_fastbp_files(tmp_path):
    with pytest.warns(DeprecationWarning, match="fastbp.files"):
        io = reimport("fastbp.io")
    model = fastbp.MLP([2, 3], seed=0)
    io.save_model(model, tmp_path / "model.npz")
    assert io.load(tmp_path / "model.npz").sizes == model.sizes
    assert io.load_checkpoint is fastbp.files.load_checkpoint and io.MODEL_FORMAT == "fastbp-model"


def test_fastbp_sklearn_names_fastbp_interop_sklearn():
    pytest.importorskip("sklearn")
    from fastbp.interop import sklearn as new

    with pytest.warns(DeprecationWarning, match="fastbp.interop.sklearn"):
        old = reimport("fastbp.sklearn")
    assert old.MLPClassifier is new.MLPClassifier and old.MLPRegressor is new.MLPRegressor


def test_fastbp_distributed_names_fastbp_backends_distributed():
    from fastbp.backends import distributed as new

    with pytest.warns(DeprecationWarning, match="fastbp.backends.distributed"):
        old = reimport("fastbp.distributed")
    assert old.DistributedTrainer is new.DistributedTrainer and old.init is new.init and old.shutdown is new.shutdown
