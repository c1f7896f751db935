"""Every public entry point against bad input: each gets a ValueError or
TypeError that names the argument, and leaves the model's parameters and
gradients, the optimizer's state and the files on disk as they were."""
import os

import numpy as np
import pytest

import fastbp


@pytest.mark.parametrize("target", [2.0, -1.0, 1.5, -1e-3])
def test_bce_with_logits_rejects_targets_outside_0_1(target):
    pred = np.zeros((3, 2))
    targets = np.full((3, 2), 0.5)
    targets[1, 0] = target
    with pytest.raises(ValueError, match=r"target must hold probabilities in \[0, 1\].*got " + str(target)):
        fastbp.BCEWithLogitsLoss()(pred, targets)


def test_bce_with_logits_fit_rejects_targets_outside_0_1_and_trains_nothing():
    model = fastbp.MLP([2, 1], seed=0)
    optimizer = fastbp.SGD(model, lr=0.1)
    trainer = fastbp.Trainer(model, fastbp.BCEWithLogitsLoss(), optimizer)
    before = model._params.copy()
    with pytest.raises(ValueError, match=r"target must hold probabilities in \[0, 1\]"):
        trainer.fit(np.ones((4, 2)), np.array([0, 1, 2, 1]), epochs=1)
    np.testing.assert_array_equal(model._params, before)
    assert optimizer.step_count == 0 and trainer.epoch == 0


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_model_files_and_checkpoints_get_the_umask_permissions(tmp_path, umask, mask):
    model = fastbp.MLP([2, 1], seed=0)
    trainer = fastbp.Trainer(model, "mse", fastbp.SGD(model))
    umask(mask)
    model.save(tmp_path / "model.npz")
    trainer.save(tmp_path / "checkpoint.npz")
    with open(tmp_path / "plain.txt", "w"):
        pass  # what every other file the user writes gets
    expected = 0o666 & ~mask
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in ("model.npz", "checkpoint.npz", "plain.txt")}
    assert modes == dict.fromkeys(modes, expected), {name: oct(mode) for name, mode in modes.items()}
