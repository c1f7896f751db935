"""Files written by fastbp 0.1.0 (tests/data, see write_legacy_files.py) load
with today's code and training goes on from them exactly as the run that
wrote them went on; a file of a newer format version is refused."""
import numpy as np
import pytest

import fastbp
from tests.data import write_legacy_files as legacy

KINDS = sorted(legacy.KINDS)


def rows(history):
    """The history without the wall-clock times."""
    return {key: value for key, value in history.as_dict().items() if key != "seconds"}


def assert_same_run(ours, theirs):
    np.testing.assert_array_equal(ours.model._params, theirs.model._params)
    assert len(ours.optimizer._state) == len(theirs.optimizer._state)
    for mine, other in zip(ours.optimizer._state, theirs.optimizer._state):
        np.testing.assert_array_equal(mine, other)
    assert ours.optimizer.step_count == theirs.optimizer.step_count
    assert ours.optimizer.lr == theirs.optimizer.lr
    assert ours.epoch == theirs.epoch and rows(ours.history) == rows(theirs.history)
    assert ours.metadata == theirs.metadata
    np.testing.assert_array_equal(ours._rng_state, theirs._rng_state)


def test_a_version_1_model_file_loads():
    model, expected = fastbp.load(legacy.HERE / "model_v1.npz"), legacy.make_model()
    assert model.sizes == expected.sizes and model.activations == expected.activations
    assert model.dtype == expected.dtype and model.bias == expected.bias
    np.testing.assert_array_equal(model._params, expected._params)


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_3_checkpoint_loads_and_training_goes_on(kind):
    reference = legacy.make_trainer(kind)
    legacy.fit(reference, 2, seed=5)
    loaded = fastbp.load_checkpoint(legacy.HERE / f"checkpoint_v3_{kind}.npz")
    assert_same_run(loaded, reference)
    for each in (loaded, reference):
        legacy.fit(each, 2)
    assert_same_run(loaded, reference)


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_3_mid_epoch_checkpoint_goes_on_from_its_step(kind):
    reference = legacy.make_trainer(kind)
    legacy.fit(reference, 3, seed=5)
    loaded = fastbp.Trainer.load(legacy.HERE / f"checkpoint_v3_{kind}_mid_epoch.npz")
    assert loaded.epoch == 1 and loaded.optimizer.step_count == 4
    legacy.fit(loaded, 2)
    assert_same_run(loaded, reference)


def test_a_version_3_checkpoint_that_restored_the_best_epoch_goes_on_from_the_last():
    reference = legacy.make_trainer("adam")
    legacy.fit_restoring_the_best(reference, 8, seed=5)
    loaded = fastbp.load_checkpoint(legacy.HERE / "checkpoint_v3_adam_restored_best.npz")
    assert_same_run(loaded, reference)
    np.testing.assert_array_equal(loaded._last_params, reference._last_params)
    assert loaded._best == reference._best and loaded._best_params[0] == reference._best_params[0] == 7
    np.testing.assert_array_equal(loaded._best_params[1], reference._best_params[1])
    for each in (loaded, reference):
        legacy.fit_restoring_the_best(each, 4)
    assert_same_run(loaded, reference)
    np.testing.assert_array_equal(loaded._last_params, reference._last_params)


@pytest.mark.parametrize("name, read", [("model_v1.npz", fastbp.load),
                                        ("checkpoint_v3_sgd.npz", fastbp.load_checkpoint)])
def test_a_file_of_a_newer_format_version_is_refused(tmp_path, name, read):
    with np.load(legacy.HERE / name) as archive:
        contents = dict(archive)
    np.savez(tmp_path / "newer.npz", **{**contents, "format_version": np.array(99)})
    with pytest.raises(ValueError, match="format version 99; this fastbp reads"):
        read(tmp_path / "newer.npz")
