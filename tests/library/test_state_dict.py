"""state_dict / load_state_dict of MLP, the optimizers, the schedules and
Trainer: copies out and in, a round trip that trains on bit for bit, and bad
states refused with the key named, leaving the object as it was."""
import pickle

import numpy as np
import pytest

import fastbp
from fastbp.optim import OPTIMIZERS
from fastbp.schedules import SCHEDULES

SCHEDULE_ARGUMENTS = {"step": {"step_size": 1, "gamma": 0.5}, "cosine": {"T_max": 4}, "plateau": {"patience": 0}}


def data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 3))
    return X, (X[:, 0] > 0).astype(np.int64)


def make_trainer(kind="adam", schedule="step", seed=2):
    model = fastbp.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=seed)
    optimizer = OPTIMIZERS[kind](model, lr=0.01)
    schedule = None if schedule is None else SCHEDULES[schedule](optimizer, **SCHEDULE_ARGUMENTS[schedule])
    return fastbp.Trainer(model, "cross_entropy", optimizer, schedule=schedule)


def same(a, b):
    """Two state dicts hold the same values (arrays compared bit for bit)."""
    return pickle.dumps(a) == pickle.dumps(b)


def test_state_dicts_are_copies():
    trainer = make_trainer()
    trainer.fit(*data(), epochs=2, batch_size=8, seed=0)
    state = trainer.state_dict()
    state["model"]["params"][...] = 0
    state["optimizer"]["state"][...] = 0
    assert np.abs(trainer.model.params[0][0]).sum() > 0 and np.abs(trainer.optimizer.state_dict()["state"]).sum() > 0
    loaded = make_trainer(seed=9)
    state = trainer.state_dict()
    loaded.load_state_dict(state)
    state["model"]["params"][...] = 0
    np.testing.assert_array_equal(loaded.model.state_dict()["params"], trainer.model.state_dict()["params"])


# LBFGS has no minibatch step: its checkpoints are tested in tests/library/test_lbfgs.py
@pytest.mark.parametrize("kind", sorted(set(OPTIMIZERS) - {"lbfgs"}))
@pytest.mark.parametrize("schedule", [None, *sorted(SCHEDULES)])
def test_a_trainer_rebuilt_from_its_state_dict_trains_on_bit_for_bit(kind, schedule):
    X, y = data()
    straight, first = make_trainer(kind, schedule), make_trainer(kind, schedule)
    straight.fit(X, y, epochs=4, batch_size=8, seed=3)
    first.fit(X, y, epochs=2, batch_size=8, seed=3)
    resumed = fastbp.Trainer.from_state_dict(first.state_dict())
    assert same(resumed.state_dict(), first.state_dict())
    resumed.fit(X, y, epochs=2, batch_size=8)
    for part in ("model", "optimizer"):
        assert same(resumed.state_dict()[part], straight.state_dict()[part])
    assert resumed.history.loss == straight.history.loss


def test_an_optimizer_state_dict_names_its_hyperparameters():
    model = fastbp.MLP([2, 3])
    state = fastbp.Adam(model, lr=0.5, amsgrad=True).state_dict()
    assert state["kind"] == "adam" and state["step_count"] == 0
    assert state["hyperparameters"]["lr"] == 0.5 and state["hyperparameters"]["amsgrad"] is True
    assert state["state"].shape == (3, model.n_params)
    assert fastbp.SGD(model).state_dict()["state"].shape == (1, model.n_params)


def bad(state, *path_and_value):
    """A deep copy of ``state`` with the entry at ``path`` set to ``value`` (or removed for ...)."""
    state = pickle.loads(pickle.dumps(state))
    *path, value = path_and_value
    target = state
    for key in path[:-1]:
        target = target[key]
    if value is Ellipsis:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return state


@pytest.mark.parametrize("path_and_value, error, message", [
    (("model", "params", np.zeros(3)), ValueError, r"state\['params'\] must be an array of shape"),
    (("model", "sizes", [3, 5, 2]), ValueError, r"state\['sizes'\]: expected \[3, 4, 2\], got \[3, 5, 2\]"),
    (("model", "dtype", "float32"), ValueError, r"state\['dtype'\]: expected 'float64'"),
    (("optimizer", "kind", "sgd"), ValueError, r"state\['kind'\]: expected 'adam', got 'sgd'"),
    (("optimizer", "state", np.zeros((3, 22), np.float32)), ValueError, r"state\['state'\] must be an array"),
    (("optimizer", "hyperparameters", "amsgrad", True), ValueError, "build the optimizer with amsgrad=True"),
    (("optimizer", "hyperparameters", "lr", -1.0), ValueError, r"state\['hyperparameters'\]\['lr'\] must be"),
    (("optimizer", "step_count", 1.5), TypeError, r"state\['step_count'\] must be an integer"),
    (("schedule", "state", "last_epoch", ...), KeyError, r"missing \['last_epoch'\]"),
    (("schedule", "arguments", "gamma", 0.1), ValueError, r"state\['schedule'\]\['arguments'\]"),
    (("loss", "kind", "mse"), ValueError, r"state\['loss'\]"),
    (("epoch", -1), ValueError, r"state\['epoch'\] must be >= 0"),
    (("rng_state", np.zeros(2, np.uint64)), ValueError, r"state\['rng_state'\] must be an array of shape \(1,\)"),
    (("in_epoch", {"position": 3}), KeyError, r"state\['in_epoch'\]: expected the keys"),
    (("unknown", 1), KeyError, r"unknown \['unknown'\]"),
])
def test_a_bad_state_is_refused_and_changes_nothing(path_and_value, error, message):
    X, y = data()
    source, target = make_trainer(seed=4), make_trainer()
    source.fit(X, y, epochs=2, batch_size=8, seed=1)
    target.fit(X, y, epochs=1, batch_size=8, seed=0)
    before = target.state_dict()
    with pytest.raises(error, match=message):
        target.load_state_dict(bad(source.state_dict(), *path_and_value))
    assert same(target.state_dict(), before)


def test_a_schedule_takes_the_position_of_another_planned_otherwise():
    optimizer = fastbp.SGD(fastbp.MLP([2, 2]), lr=1.0)
    old, new = fastbp.StepLR(optimizer, step_size=2), fastbp.StepLR(optimizer, step_size=3)
    old.step(), old.step()
    new.load_state_dict(old.state_dict())
    assert new.last_epoch == 2 and new.step_size == 3
    with pytest.raises(TypeError, match=r"state\['last_epoch'\] must be an integer"):
        new.load_state_dict({**old.state_dict(), "last_epoch": "2"})
    assert new.last_epoch == 2
