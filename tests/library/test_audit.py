"""Every public entry point against bad input: each gets a ValueError or
TypeError that names the argument, and leaves the model's parameters and
gradients, the optimizer's state and the files on disk as they were."""
import hashlib
import os
import re
import subprocess
import sys
import types

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


@pytest.fixture
def c(tmp_path):
    """A trained model, its optimizer, schedule and trainer, and files on disk."""
    model = fastbp.MLP([3, 5, 4], seed=0)
    optimizer = fastbp.Adam(model, lr=0.01)
    schedule = fastbp.StepLR(optimizer, step_size=2)
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer, schedule=schedule)
    X = np.random.default_rng(0).standard_normal((10, 3))
    y = np.arange(10) % 4
    trainer.fit(X, y, epochs=1, batch_size=4, seed=0)
    model.forward(X)  # a cached forward pass, for backward
    model.save(tmp_path / "model.npz")
    trainer.save(tmp_path / "checkpoint.npz")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "folder").mkdir()
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    return types.SimpleNamespace(model=model, optimizer=optimizer, schedule=schedule, trainer=trainer, X=X, y=y,
                                 folder=tmp_path, other=fastbp.MLP([3, 5, 4], seed=1))


def _state(c):
    """Everything bad input must leave alone: parameters, gradients,
    optimizer state and hyperparameters, the trainer's progress, the files."""
    files = {path.name: (path.read_bytes() if path.is_file() else None, path.stat().st_mode)
             for path in c.folder.iterdir()}
    arrays = [c.model._params, c.model._grads, c.optimizer._hyper, *c.optimizer._state, c.trainer._rng_state]
    return ([a.copy() for a in arrays], c.optimizer.step_count, c.trainer.epoch, len(c.trainer.history),
            c.schedule.state_dict(), files)


def _assert_same_state(before, after):
    arrays_before, *rest_before = before
    arrays_after, *rest_after = after
    for a, b in zip(arrays_before, arrays_after):
        np.testing.assert_array_equal(a, b)
    assert rest_before == rest_after


def _with(array, index, value):
    array = np.array(array, dtype=np.float64)
    array[index] = value
    return array


def _fit(**kwargs):
    return lambda c: c.trainer.fit(c.X, c.y, **kwargs)


def _path(c, name):
    return c.folder / name


# (id, call, error, the argument the message must name[, why it fails today,
# for a defect in a module this test file does not cover the fix of])
CASES = [
    # MLP constructor
    ("mlp sizes None", lambda c: fastbp.MLP(None), TypeError, "sizes"),
    ("mlp sizes one width", lambda c: fastbp.MLP([3]), ValueError, "sizes"),
    ("mlp sizes empty", lambda c: fastbp.MLP([]), ValueError, "sizes"),
    ("mlp width zero", lambda c: fastbp.MLP([3, 0, 2]), ValueError, r"sizes\[1\]"),
    ("mlp width negative", lambda c: fastbp.MLP([3, -2]), ValueError, r"sizes\[1\]"),
    ("mlp width float", lambda c: fastbp.MLP([3, 2.5]), TypeError, r"sizes\[1\]"),
    ("mlp width bool", lambda c: fastbp.MLP([3, True]), TypeError, r"sizes\[1\]"),
    ("mlp width string", lambda c: fastbp.MLP(["3", 2]), TypeError, r"sizes\[0\]"),
    ("mlp sizes string", lambda c: fastbp.MLP("32"), TypeError, "sizes"),
    ("mlp activation unknown", lambda c: fastbp.MLP([3, 4, 2], activation="swish"), ValueError, "activation"),
    ("mlp activation list length", lambda c: fastbp.MLP([3, 4, 2], activation=["relu", "tanh"]), ValueError,
     "activation"),
    ("mlp activation number", lambda c: fastbp.MLP([3, 4, 2], activation=1), TypeError, "activation"),
    ("mlp output activation None", lambda c: fastbp.MLP([3, 2], output_activation=None), TypeError,
     "output_activation"),
    ("mlp bias int", lambda c: fastbp.MLP([3, 2], bias=1), TypeError, "bias"),
    ("mlp dtype float16", lambda c: fastbp.MLP([3, 2], dtype="float16"), TypeError, "dtype"),
    ("mlp dtype int", lambda c: fastbp.MLP([3, 2], dtype="int64"), TypeError, "dtype"),
    ("mlp dtype typo", lambda c: fastbp.MLP([3, 2], dtype="flaot32"), TypeError, "dtype"),
    ("mlp dtype None", lambda c: fastbp.MLP([3, 2], dtype=None), TypeError, "dtype"),
    ("mlp seed negative", lambda c: fastbp.MLP([3, 2], seed=-1), ValueError, "seed"),
    ("mlp seed string", lambda c: fastbp.MLP([3, 2], seed="0"), TypeError, "seed"),
    ("mlp seed float", lambda c: fastbp.MLP([3, 2], seed=1.5), TypeError, "seed"),
    ("reset_parameters seed", lambda c: c.model.reset_parameters(seed=-3), ValueError, "seed"),
    ("activation parameter nan", lambda c: fastbp.Activation("elu", alpha=float("nan")), ValueError, "alpha"),
    # MLP forward / predict / backward
    ("forward 1-D", lambda c: c.model.forward(c.X[0]), ValueError, "x"),
    ("forward 3-D", lambda c: c.model.forward(c.X[None]), ValueError, "x"),
    ("forward columns", lambda c: c.model.forward(c.X[:, :2]), ValueError, "x"),
    ("forward empty", lambda c: c.model.forward(c.X[:0]), ValueError, "x"),
    ("forward nan", lambda c: c.model.forward(_with(c.X, (1, 2), np.nan)), ValueError, "x"),
    ("forward inf", lambda c: c.model.forward(_with(c.X, (0, 0), -np.inf)), ValueError, "x"),
    ("forward beyond float32", lambda c: c.model.forward(_with(c.X, (0, 0), 1e39)), ValueError, "x"),
    ("forward strings", lambda c: c.model.forward(c.X.astype(str)), TypeError, "x"),
    ("forward complex", lambda c: c.model.forward(c.X.astype(complex)), TypeError, "x"),
    ("forward None", lambda c: c.model.forward(None), TypeError, "x"),
    ("forward ragged", lambda c: c.model.forward([[1, 2, 3], [1, 2]]), TypeError, "x"),
    ("predict columns", lambda c: c.model.predict(np.ones((2, 4))), ValueError, "x"),
    ("predict nan", lambda c: c.model.predict(_with(c.X, (9, 0), np.nan)), ValueError, "x"),
    ("predict dict", lambda c: c.model.predict({"a": 1}), TypeError, "x"),
    ("backward rows", lambda c: c.model.backward(np.ones((9, 4))), ValueError, "dout"),
    ("backward columns", lambda c: c.model.backward(np.ones((10, 3))), ValueError, "dout"),
    ("backward nan", lambda c: c.model.backward(np.full((10, 4), np.nan)), ValueError, "dout"),
    ("backward None", lambda c: c.model.backward(None), TypeError, "dout"),
    # losses
    ("loss reduction none", lambda c: fastbp.MSELoss(reduction="none"), ValueError, "reduction"),
    ("loss reduction number", lambda c: fastbp.L1Loss(reduction=1), ValueError, "reduction"),
    ("huber delta zero", lambda c: fastbp.HuberLoss(delta=0), ValueError, "delta"),
    ("huber delta string", lambda c: fastbp.HuberLoss(delta="1"), TypeError, "delta"),
    ("huber delta inf", lambda c: fastbp.HuberLoss(delta=np.inf), ValueError, "delta"),
    ("label smoothing above 1", lambda c: fastbp.CrossEntropyLoss(label_smoothing=1.5), ValueError,
     "label_smoothing"),
    ("label smoothing negative", lambda c: fastbp.CrossEntropyLoss(label_smoothing=-0.1), ValueError,
     "label_smoothing"),
    ("mse pred nan", lambda c: fastbp.MSELoss()(_with(np.ones((3, 2)), (0, 1), np.nan), np.ones((3, 2))),
     ValueError, "pred"),
    ("mse pred empty", lambda c: fastbp.MSELoss()(np.ones((0, 2)), np.ones((0, 2))), ValueError, "pred"),
    ("mse pred 3-D", lambda c: fastbp.MSELoss()(np.ones((2, 2, 2)), np.ones((2, 2, 2))), ValueError, "pred"),
    ("mse pred strings", lambda c: fastbp.MSELoss()(np.array(["a", "b"]), np.ones(2)), TypeError, "pred"),
    ("mse target rows", lambda c: fastbp.MSELoss()(np.ones(3), np.ones(4)), ValueError, "target"),
    ("mse target columns", lambda c: fastbp.MSELoss()(np.ones((3, 2)), np.ones((3, 3))), ValueError, "target"),
    ("mse target inf", lambda c: fastbp.MSELoss()(np.ones((3, 2)), _with(np.ones((3, 2)), (2, 1), np.inf)),
     ValueError, "target"),
    ("mse target None", lambda c: fastbp.MSELoss()(np.ones((3, 2)), None), TypeError, "target"),
    ("huber target labels", lambda c: fastbp.HuberLoss()(np.ones((3, 4)), np.arange(3)), ValueError, "target"),
    ("bce target above 1", lambda c: fastbp.BCEWithLogitsLoss()(np.zeros(3), [0, 1, 2]), ValueError, "target"),
    ("bce target negative", lambda c: fastbp.BCEWithLogitsLoss()(np.zeros(3), [0, -1, 1]), ValueError, "target"),
    ("cross entropy labels fractional", lambda c: fastbp.CrossEntropyLoss()(np.ones((3, 4)), [0, 1.5, 2]),
     TypeError, "target"),
    ("cross entropy label too large", lambda c: fastbp.CrossEntropyLoss()(np.ones((3, 4)), [0, 4, 2]),
     ValueError, "target"),
    ("cross entropy label negative", lambda c: fastbp.CrossEntropyLoss()(np.ones((3, 4)), [0, -1, 2]),
     ValueError, "target"),
    ("cross entropy one-hot", lambda c: fastbp.CrossEntropyLoss()(np.ones((3, 4)), np.eye(4)[:3]),
     ValueError, "target"),
    ("cross entropy bool labels", lambda c: fastbp.CrossEntropyLoss()(np.ones((3, 4)), [True, False, True]),
     TypeError, "target"),
    ("cross entropy pred 1-D", lambda c: fastbp.CrossEntropyLoss()(np.ones(3), [0, 1, 2]), ValueError, "pred"),
    # optimizers
    ("sgd model", lambda c: fastbp.SGD("model"), TypeError, "model"),
    ("sgd lr negative", lambda c: fastbp.SGD(c.other, lr=-0.1), ValueError, "lr"),
    ("sgd lr nan", lambda c: fastbp.SGD(c.other, lr=np.nan), ValueError, "lr"),
    ("sgd lr inf", lambda c: fastbp.SGD(c.other, lr=np.inf), ValueError, "lr"),
    ("sgd lr string", lambda c: fastbp.SGD(c.other, lr="0.1"), TypeError, "lr"),
    ("sgd lr None", lambda c: fastbp.SGD(c.other, lr=None), TypeError, "lr"),
    ("sgd momentum negative", lambda c: fastbp.SGD(c.other, momentum=-0.5), ValueError, "momentum"),
    ("sgd weight decay negative", lambda c: fastbp.SGD(c.other, weight_decay=-1), ValueError, "weight_decay"),
    ("sgd dampening nan", lambda c: fastbp.SGD(c.other, dampening=np.nan), ValueError, "dampening"),
    ("sgd nesterov string", lambda c: fastbp.SGD(c.other, nesterov="yes"), TypeError, "nesterov"),
    ("sgd nesterov without momentum", lambda c: fastbp.SGD(c.other, nesterov=True), ValueError, "nesterov"),
    ("adam betas one", lambda c: fastbp.Adam(c.other, betas=(0.9,)), TypeError, "betas"),
    ("adam beta2 one", lambda c: fastbp.Adam(c.other, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    ("adam beta1 negative", lambda c: fastbp.Adam(c.other, betas=(-0.1, 0.9)), ValueError, r"betas\[0\]"),
    ("adam betas string", lambda c: fastbp.Adam(c.other, betas="ab"), TypeError, "betas"),
    ("adam eps zero", lambda c: fastbp.Adam(c.other, eps=0.0), ValueError, "eps"),
    ("adam amsgrad int", lambda c: fastbp.Adam(c.other, amsgrad=1), TypeError, "amsgrad"),
    ("adamw weight decay nan", lambda c: fastbp.AdamW(c.other, weight_decay=np.nan), ValueError, "weight_decay"),
    ("rmsprop alpha above 1", lambda c: fastbp.RMSprop(c.other, alpha=1.5), ValueError, "alpha"),
    ("rmsprop eps negative", lambda c: fastbp.RMSprop(c.other, eps=-1e-8), ValueError, "eps"),
    ("rmsprop momentum negative", lambda c: fastbp.RMSprop(c.other, momentum=-1), ValueError, "momentum"),
    ("rmsprop centered string", lambda c: fastbp.RMSprop(c.other, centered="no"), TypeError, "centered"),
    ("optimizer lr set negative", lambda c: setattr(c.optimizer, "lr", -1.0), ValueError, "lr"),
    ("optimizer lr set None", lambda c: setattr(c.optimizer, "lr", None), TypeError, "lr"),
    # schedules
    ("schedule optimizer", lambda c: fastbp.StepLR("adam", step_size=2), TypeError, "optimizer"),
    ("step size zero", lambda c: fastbp.StepLR(c.optimizer, step_size=0), ValueError, "step_size"),
    ("step size float", lambda c: fastbp.StepLR(c.optimizer, step_size=1.5), TypeError, "step_size"),
    ("step gamma zero", lambda c: fastbp.StepLR(c.optimizer, step_size=2, gamma=0), ValueError, "gamma"),
    ("step gamma nan", lambda c: fastbp.StepLR(c.optimizer, step_size=2, gamma=np.nan), ValueError, "gamma"),
    ("cosine T_max zero", lambda c: fastbp.CosineAnnealingLR(c.optimizer, T_max=0), ValueError, "T_max"),
    ("cosine T_max string", lambda c: fastbp.CosineAnnealingLR(c.optimizer, T_max="10"), TypeError, "T_max"),
    ("cosine eta_min negative", lambda c: fastbp.CosineAnnealingLR(c.optimizer, T_max=5, eta_min=-1),
     ValueError, "eta_min"),
    ("plateau mode", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, mode="up"), ValueError, "mode"),
    ("plateau factor one", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, factor=1.0), ValueError, "factor"),
    ("plateau patience negative", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, patience=-1), ValueError,
     "patience"),
    ("plateau threshold mode", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, threshold_mode="relative"),
     ValueError, "threshold_mode"),
    ("plateau cooldown float", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, cooldown=0.5), TypeError,
     "cooldown"),
    ("plateau min_lr negative", lambda c: fastbp.ReduceLROnPlateau(c.optimizer, min_lr=-1e-3), ValueError,
     "min_lr"),
    ("plateau step None", lambda c: fastbp.ReduceLROnPlateau(c.optimizer).step(None), TypeError, "metric"),
    ("plateau step nan", lambda c: fastbp.ReduceLROnPlateau(c.optimizer).step(np.nan), ValueError, "metric"),
    # Trainer constructor
    ("trainer model", lambda c: fastbp.Trainer("model", "mse", c.optimizer), TypeError, "model"),
    ("trainer loss name", lambda c: fastbp.Trainer(c.model, "hinge", c.optimizer), ValueError, "loss"),
    ("trainer loss number", lambda c: fastbp.Trainer(c.model, 3, c.optimizer), TypeError, "loss"),
    ("trainer optimizer name", lambda c: fastbp.Trainer(c.model, "mse", "adam"), TypeError, "optimizer"),
    ("trainer optimizer of another model", lambda c: fastbp.Trainer(c.model, "mse", fastbp.SGD(c.other)),
     ValueError, "optimizer"),
    ("trainer max_grad_norm zero", lambda c: fastbp.Trainer(c.model, "mse", c.optimizer, max_grad_norm=0),
     ValueError, "max_grad_norm"),
    ("trainer max_grad_norm nan", lambda c: fastbp.Trainer(c.model, "mse", c.optimizer, max_grad_norm=np.nan),
     ValueError, "max_grad_norm"),
    ("trainer schedule name", lambda c: fastbp.Trainer(c.model, "mse", c.optimizer, schedule="step"),
     TypeError, "schedule"),
    ("trainer schedule of another optimizer", lambda c: fastbp.Trainer(
        c.model, "mse", c.optimizer, schedule=fastbp.StepLR(fastbp.SGD(c.model), 2)), ValueError, "schedule"),
    # Trainer.fit
    ("fit X None", lambda c: c.trainer.fit(None, c.y), TypeError, "X"),
    ("fit X columns", lambda c: c.trainer.fit(c.X[:, :2], c.y), ValueError, "X"),
    ("fit X nan", lambda c: c.trainer.fit(_with(c.X, (3, 1), np.nan), c.y), ValueError, "X"),
    ("fit X empty", lambda c: c.trainer.fit(c.X[:0], c.y[:0]), ValueError, "X"),
    ("fit y short", lambda c: c.trainer.fit(c.X, c.y[:-1]), ValueError, "y"),
    ("fit y None", lambda c: c.trainer.fit(c.X, None), TypeError, "y|target"),
    ("fit y label too large", lambda c: c.trainer.fit(c.X, c.y + 1), ValueError, "y|target"),
    ("fit y strings", lambda c: c.trainer.fit(c.X, c.y.astype(str)), TypeError, "y|target"),
    ("fit epochs negative", _fit(epochs=-1), ValueError, "epochs"),
    ("fit epochs None", _fit(epochs=None), TypeError, "epochs"),
    ("fit epochs float", _fit(epochs=2.0), TypeError, "epochs"),
    ("fit batch_size zero", _fit(batch_size=0), ValueError, "batch_size"),
    ("fit batch_size bool", _fit(batch_size=True), TypeError, "batch_size"),
    ("fit shuffle string", _fit(shuffle="yes"), TypeError, "shuffle"),
    ("fit seed negative", _fit(seed=-1), ValueError, "seed"),
    ("fit seed string", _fit(seed="0"), TypeError, "seed"),
    ("fit seed float", _fit(seed=1.5), TypeError, "seed"),
    ("fit validation_split one", _fit(validation_split=1.0), ValueError, "validation_split"),
    ("fit validation_split negative", _fit(validation_split=-0.1), ValueError, "validation_split"),
    ("fit validation_split string", _fit(validation_split="0.1"), TypeError, "validation_split"),
    ("fit validation_data single", lambda c: c.trainer.fit(c.X, c.y, validation_data=(c.X,)), TypeError,
     "validation_data"),
    ("fit validation_data columns", lambda c: c.trainer.fit(c.X, c.y, validation_data=(c.X[:, :2], c.y)),
     ValueError, r"validation_data\[0\]"),
    ("fit validation_data and split", lambda c: c.trainer.fit(c.X, c.y, validation_data=(c.X, c.y),
                                                             validation_split=0.2), ValueError, "validation_data"),
    ("fit early_stopping zero", _fit(early_stopping=0), ValueError, "early_stopping"),
    ("fit min_delta negative", _fit(min_delta=-1.0), ValueError, "min_delta"),
    ("fit min_delta nan", _fit(min_delta=np.nan), ValueError, "min_delta"),
    ("fit restore_best string", _fit(restore_best="yes"), TypeError, "restore_best"),
    ("fit callbacks not callable", _fit(callbacks=[3]), TypeError, r"callbacks\[0\]"),
    ("fit callbacks number", _fit(callbacks=3), TypeError, "callbacks"),
    ("fit callbacks one function", _fit(callbacks=print), TypeError, "callbacks"),
    # Trainer predict / evaluate / score
    ("trainer predict columns", lambda c: c.trainer.predict(np.ones((2, 5))), ValueError, "X|x"),
    ("evaluate y short", lambda c: c.trainer.evaluate(c.X, c.y[:3]), ValueError, "y"),
    ("evaluate X inf", lambda c: c.trainer.evaluate(_with(c.X, (0, 0), np.inf), c.y), ValueError, "X"),
    ("score label too large", lambda c: c.trainer.score(c.X, c.y + 10), ValueError, "y|target"),
    ("score X 1-D", lambda c: c.trainer.score(c.X[0], c.y), ValueError, "X"),
    # save and load
    ("model save None", lambda c: c.model.save(None), TypeError, "path"),
    ("model save number", lambda c: c.model.save(3), TypeError, "path"),
    ("model save onto a folder", lambda c: c.model.save(_path(c, "folder")), ValueError, "path"),
    ("model save into a missing folder", lambda c: c.model.save(_path(c, "nowhere/model.npz")), ValueError, "path"),
    ("trainer save None", lambda c: c.trainer.save(None), TypeError, "path"),
    ("trainer save onto a folder", lambda c: c.trainer.save(_path(c, "folder")), ValueError, "path"),
    ("trainer save metadata", lambda c: (setattr(c.trainer, "metadata", {"f": open}),
                                         c.trainer.save(_path(c, "checkpoint.npz"))), TypeError, r"trainer\.metadata"),
    ("load None", lambda c: fastbp.load(None), TypeError, "path"),
    ("load number", lambda c: fastbp.load(3), TypeError, "path"),
    ("load missing", lambda c: fastbp.load(_path(c, "missing.npz")), ValueError, "path"),
    ("load folder", lambda c: fastbp.load(_path(c, "folder")), ValueError, "path"),
    ("load text", lambda c: fastbp.load(_path(c, "notes.txt")), ValueError, "notes.txt"),
    ("load foreign npz", lambda c: fastbp.load(_path(c, "foreign.npz")), ValueError, "foreign.npz"),
    ("trainer load None", lambda c: fastbp.Trainer.load(None), TypeError, "path"),
    ("trainer load a model file", lambda c: fastbp.Trainer.load(_path(c, "model.npz")), ValueError, "model.npz"),
    ("load_checkpoint missing", lambda c: fastbp.load_checkpoint(_path(c, "missing.npz")), ValueError, "path"),
]


@pytest.mark.parametrize("call, error, argument", [
    pytest.param(*case[1:4], id=case[0], marks=[pytest.mark.xfail(strict=True, reason=r) for r in case[4:]])
    for case in CASES])
def test_bad_input_is_named_and_changes_nothing(c, call, error, argument):
    metadata = c.trainer.metadata
    before = _state(c)
    with pytest.raises(error) as raised:
        call(c)
    message = str(raised.value)
    assert re.search(rf"(?<![\w.]){argument}(?!\w)", message), f"{argument!r} not named in: {message}"
    c.trainer.metadata = metadata
    _assert_same_state(before, _state(c))


def test_fit_takes_callbacks_none_as_no_callbacks(c):
    history = c.trainer.fit(c.X, c.y, epochs=1, batch_size=4, seed=0, callbacks=None)
    assert len(history.loss) == 2




def test_values_beyond_float32_are_named_as_such_not_as_inf():
    model = fastbp.MLP([2, 1], seed=0)  # float32
    with pytest.raises(ValueError, match=r"x holds 1e\+39 at index \(1, 0\), beyond the range of float32.*float64"):
        model.forward(np.array([[0.0, 1.0], [1e39, 0.0]]))


# The command line: every bad option is exit status 2 and one line on stderr naming it, and no file changes.

@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A folder with a CSV and a .npz to train on, a model trained on the CSV,
    and files that are no model, no data or no fastbp output."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    rows = "".join(f"{a},{b},{c},{'yes' if b > 0 else 'no'}\n" for a, b, c in X)
    (folder / "data.csv").write_text("rooms,area,age,sold\n" + rows)
    (folder / "two_columns.csv").write_text("rooms,age\n" + "".join(f"{a},{c}\n" for a, _, c in X))
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text("rooms,area,age,sold\n")
    (folder / "data.txt").write_text("rooms,area,age,sold\n" + rows)
    (folder / "notes.txt").write_text("not a model")
    (folder / "out.csv").write_text("my own notes, not predictions\n")
    np.savez(folder / "data.npz", X=X, y=(X[:, 1] > 0).astype(int))
    np.savez(folder / "foreign.npz", weights=np.ones(3))
    from fastbp import cli
    assert cli.main(["train", "--data", str(folder / "data.csv"), "--target", "sold", "--quiet", "--hidden", "4",
                     "--epochs", "1", "--test-split", "0", "--save", str(folder / "model.npz")]) == 0
    model = (folder / "model.npz").read_bytes()
    (folder / "corrupt.npz").write_bytes(model[:len(model) // 2])
    return folder


def _hashes(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _cli(argv):
    """``fastbp ARGV`` in this process: (exit status, stderr), stderr captured by the caller."""
    from fastbp import cli
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


TRAIN = ["train", "--quiet", "--hidden", "4", "--epochs", "1"]
ON_CSV = ["--data", "{d}/data.csv", "--target", "sold"]
PREDICT = ["predict", "--model", "{d}/model.npz"]
# (id, argv with {d} for the folder, what the one line must say: the option first, then what was received)
CLI_CASES = [
    ("epochs not a number", ["train", "--epochs", "ten"], r"--epochs.*'ten'"),
    ("epochs negative", ["train", "--epochs=-1"], r"--epochs.*-1"),
    ("epochs zero", ["train", "--epochs", "0"], r"--epochs 0"),
    ("batch-size not a number", [*TRAIN, "--batch-size", "big"], r"--batch-size.*'big'"),
    ("batch-size negative", [*TRAIN, "--batch-size=-8"], r"--batch-size.*-8"),
    ("batch-size zero", [*TRAIN, "--batch-size", "0"], r"--batch-size.*got 0"),
    ("lr not a number", [*TRAIN, "--lr", "fast"], r"--lr.*'fast'"),
    ("lr zero", [*TRAIN, "--lr", "0"], r"--lr.*got 0"),
    ("lr negative", [*TRAIN, "--lr=-0.1"], r"--lr.*-0.1"),
    ("lr inf", [*TRAIN, "--lr", "inf"], r"--lr.*got inf"),
    ("optimizer unknown", [*TRAIN, "--optimizer", "adagrad"], r"--optimizer.*'adagrad'"),
    ("loss unknown", [*TRAIN, "--loss", "hinge"], r"--loss.*'hinge'"),
    ("loss of the other task", [*TRAIN, "--loss", "mse"], r"--loss mse"),
    ("activation unknown", [*TRAIN, "--activation", "swish"], r"--activation.*'swish'"),
    ("hidden zero width", [*TRAIN[:2], "--hidden", "16,0"], r"--hidden.*'16,0'"),
    ("hidden not numbers", [*TRAIN[:2], "--hidden", "a,b"], r"--hidden.*'a,b'"),
    ("hidden negative", [*TRAIN[:2], "--hidden=-4"], r"--hidden.*'-4'"),
    ("seed negative", [*TRAIN, "--seed=-1"], r"--seed.*-1"),
    ("seed not an integer", [*TRAIN, "--seed", "1.5"], r"--seed.*'1.5'"),
    ("val-split one", [*TRAIN, "--val-split", "1"], r"--val-split.*got 1"),
    ("val-split negative", [*TRAIN, "--val-split=-0.1"], r"--val-split.*-0.1"),
    ("test-split one", [*TRAIN, "--test-split", "1.0"], r"--test-split.*got 1"),
    ("splits leave nothing to train", [*TRAIN, "--val-split", "0.5", "--test-split", "0.6"],
     r"--test-split 0.6 and --val-split 0.5"),
    ("dtype unknown", [*TRAIN, "--dtype", "float16"], r"--dtype.*'float16'"),
    ("dataset unknown", [*TRAIN, "--dataset", "mnist"], r"--dataset.*'mnist'"),
    ("data and dataset", [*TRAIN, *ON_CSV, "--dataset", "iris"], r"--dataset.*--data"),
    ("data missing", [*TRAIN, "--data", "{d}/missing.csv"], r"--data.*missing.csv"),
    ("data empty", [*TRAIN, "--data", "{d}/empty.csv", "--target", "sold"], r"--data.*empty.csv.*empty"),
    ("data extension", [*TRAIN, "--data", "{d}/data.txt", "--target", "sold"], r"--data.*data.txt"),
    ("data a folder", [*TRAIN, "--data", "{d}"], r"--data"),
    ("target names no column", [*TRAIN, "--data", "{d}/data.csv", "--target", "price"], r"--target.*'price'"),
    ("csv without target", [*TRAIN, "--data", "{d}/data.csv"], r"--target"),
    ("features names a column twice", [*TRAIN, *ON_CSV, "--features", "rooms,area,rooms"], r"--features.*'rooms'"),
    ("target of a npz", [*TRAIN, "--data", "{d}/data.npz", "--target", "sold"], r"--target.*data.npz"),
    ("plot not a png", [*TRAIN, "--plot", "{d}/chart.txt"], r"--plot.*chart.txt.*\.png"),
    ("features names no column", [*TRAIN, *ON_CSV, "--features", "rooms,floor"], r"--features.*'floor'"),
    ("momentum with adam", [*TRAIN, "--optimizer", "adam", "--momentum", "0.5"], r"--momentum"),
    ("momentum one", [*TRAIN, "--optimizer", "sgd", "--momentum", "1"], r"--momentum.*got 1"),
    ("weight-decay negative", [*TRAIN, "--weight-decay=-1"], r"--weight-decay.*-1"),
    ("max-grad-norm zero", [*TRAIN, "--max-grad-norm", "0"], r"--max-grad-norm.*got 0"),
    ("early-stopping zero", [*TRAIN, "--early-stopping", "0"], r"--early-stopping.*got 0"),
    ("threads zero", [*TRAIN, "--threads", "0"], r"--threads.*got 0"),
    ("max-categories zero", [*TRAIN, *ON_CSV, "--max-categories", "0"], r"--max-categories.*got 0"),
    ("save-every without save", [*TRAIN, "--save-every", "2"], r"--save-every 2 needs --save"),
    ("checkpoint-every without save", [*TRAIN, "--checkpoint-every", "2"], r"--checkpoint-every 2 needs --save"),
    ("save onto a file fastbp did not write", [*TRAIN, "--save", "{d}/notes.txt"], r"--save.*notes.txt.*--overwrite"),
    ("save onto the data", [*TRAIN, *ON_CSV, "--save", "{d}/data.csv", "--overwrite"], r"--save.*data.csv"),
    ("save into a missing folder", [*TRAIN, "--save", "{d}/nowhere/m.npz"], r"--save.*nowhere"),
    ("plot onto a file fastbp did not write", [*TRAIN, "--plot", "{d}/out.csv"], r"--plot.*out.csv"),
    ("resume a text file", ["train", "--resume", "{d}/notes.txt", "--epochs", "3"], r"--resume.*notes.txt"),
    ("resume a corrupt model", ["train", "--resume", "{d}/corrupt.npz", "--epochs", "3"], r"--resume.*corrupt.npz"),
    ("resume a foreign npz", ["train", "--resume", "{d}/foreign.npz", "--epochs", "3"], r"--resume.*foreign.npz"),
    ("resume a missing file", ["train", "--resume", "{d}/missing.npz", "--epochs", "3"], r"--resume.*missing.npz"),
    ("resume and a new width", ["train", "--resume", "{d}/model.npz", "--epochs", "3", "--hidden", "8"],
     r"--hidden.*--resume"),
    ("resume to fewer epochs", ["train", "--resume", "{d}/model.npz", "--epochs", "1"], r"--epochs 1"),
    ("train unknown option", [*TRAIN, "--epocs", "3"], r"--epocs"),
    ("predict without data", PREDICT, r"--data"),
    ("predict without model", ["predict", "--data", "{d}/data.csv"], r"--model"),
    ("predict with a text file", ["predict", "--model", "{d}/notes.txt", "--data", "{d}/data.csv"],
     r"--model.*notes.txt"),
    ("predict with a corrupt model", ["predict", "--model", "{d}/corrupt.npz", "--data", "{d}/data.csv"],
     r"--model.*corrupt.npz"),
    ("predict with a foreign npz", ["predict", "--model", "{d}/foreign.npz", "--data", "{d}/data.csv"],
     r"--model.*foreign.npz"),
    ("predict with the data as model", ["predict", "--model", "{d}/data.csv", "--data", "{d}/data.csv"],
     r"--model.*data.csv"),
    ("predict data lacks a column", [*PREDICT, "--data", "{d}/two_columns.csv"], r"--data.*lacks.*'area'"),
    ("predict data missing", [*PREDICT, "--data", "{d}/missing.csv"], r"--data.*missing.csv"),
    ("predict data empty", [*PREDICT, "--data", "{d}/empty.csv"], r"--data.*empty.csv"),
    ("predict data header only", [*PREDICT, "--data", "{d}/header.csv"], r"--data.*header.csv.*no rows"),
    ("predict target of a npz", [*PREDICT, "--data", "{d}/data.npz", "--target", "sold"], r"--target.*data.npz"),
    ("predict data extension", [*PREDICT, "--data", "{d}/data.txt"], r"--data.*data.txt"),
    ("predict data of another width", [*PREDICT, "--data", "{d}/foreign.npz"], r"--data"),
    ("predict target names no column", [*PREDICT, "--data", "{d}/data.csv", "--target", "price"],
     r"--target.*'price'"),
    ("predict out extension", [*PREDICT, "--data", "{d}/data.csv", "--out", "{d}/p.txt"], r"--out.*p.txt"),
    ("predict out onto a file fastbp did not write", [*PREDICT, "--data", "{d}/data.csv", "--out", "{d}/out.csv"],
     r"--out.*out.csv.*--overwrite"),
    ("predict out onto the data", [*PREDICT, "--data", "{d}/data.csv", "--out", "{d}/data.csv", "--overwrite"],
     r"--out.*data.csv"),
    ("export without onnx", ["export", "--model", "{d}/model.npz"], r"--onnx"),
    ("export with a corrupt model", ["export", "--model", "{d}/corrupt.npz", "--onnx", "{d}/m.onnx"],
     r"--model.*corrupt.npz"),
    ("export onto its model", ["export", "--model", "{d}/model.npz", "--onnx", "{d}/model.npz", "--overwrite"],
     r"--onnx.*model.npz.*--model file"),
    ("export onto a file fastbp did not write", ["export", "--model", "{d}/model.npz", "--onnx", "{d}/data.csv"],
     r"--onnx.*data.csv.*--overwrite"),
    ("export into a missing folder", ["export", "--model", "{d}/model.npz", "--onnx", "{d}/nowhere/m.onnx"],
     r"--onnx.*nowhere"),
    ("predict unknown-category", [*PREDICT, "--data", "{d}/data.csv", "--unknown-category", "skip"],
     r"--unknown-category.*'skip'"),
    ("check an option", ["check", "--fast"], r"--fast"),
    ("bench sizes one width", ["bench", "--sizes", "784"], r"--sizes.*'784'"),
    ("bench sizes zero width", ["bench", "--sizes", "784,0,10"], r"--sizes.*'784,0,10'"),
    ("bench configs unknown", ["bench", "--configs", "huge"], r"--configs.*'huge'"),
    ("bench rounds zero", ["bench", "--rounds", "0"], r"--rounds.*got 0"),
    ("bench batch without sizes", ["bench", "--batch", "32", "--json", "{d}/b.json", "--png", "{d}/b.png"],
     r"--batch.*--sizes"),
    ("bench sweep and sizes", ["bench", "--sweep", "--sizes", "4,2"], r"--sizes.*--sweep"),
    ("bench json onto the data", ["bench", "--json", "{d}/data.csv"], r"--json.*data.csv.*--overwrite"),
    ("bench json into a missing folder", ["bench", "--json", "{d}/nowhere/b.json"], r"--json.*nowhere"),
    ("command unknown", ["fit"], r"'fit'"),
]
# a few through the console entry point itself, as a user runs them
CLI_IN_SUBPROCESS = {"batch-size zero", "resume a corrupt model", "predict with a text file", "bench rounds zero"}


def _assert_one_line_naming(status, err, pattern):
    assert status == 2, f"exit status {status}; stderr: {err}"
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    assert re.search(pattern, err), f"{pattern!r} not in: {err}"


@pytest.mark.parametrize("argv, pattern", [pytest.param(*case[1:], id=case[0]) for case in CLI_CASES])
def test_a_bad_command_line_is_one_line_naming_the_option_and_changes_no_file(cli_files, capsys, argv, pattern):
    argv = [arg.replace("{d}", str(cli_files)) for arg in argv]
    before = _hashes(cli_files)
    status = _cli(argv)
    _assert_one_line_naming(status, capsys.readouterr().err, pattern)
    assert _hashes(cli_files) == before


@pytest.mark.parametrize("argv, pattern", [pytest.param(*case[1:], id=case[0]) for case in CLI_CASES
                                           if case[0] in CLI_IN_SUBPROCESS])
def test_the_console_command_reports_bad_input_without_a_traceback(cli_files, argv, pattern):
    argv = [arg.replace("{d}", str(cli_files)) for arg in argv]
    before = _hashes(cli_files)
    result = subprocess.run([sys.executable, "-m", "fastbp", *argv], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    _assert_one_line_naming(result.returncode, result.stderr, pattern)
    assert _hashes(cli_files) == before


# The scikit-learn estimators: bad parameters are caught at fit, as scikit-learn does, bad X and y at fit,
# predict and score; a fitted estimator keeps its coefficients.

@pytest.fixture
def estimators():
    """A fitted classifier and regressor, with the data they were fitted on."""
    from fastbp.interop.sklearn import MLPClassifier, MLPRegressor
    X = np.random.default_rng(0).standard_normal((30, 3))
    y = np.arange(30) % 3
    with pytest.warns(Warning):  # max_iter reached
        classifier = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
        regressor = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, X[:, 0])
    return types.SimpleNamespace(classifier=classifier, regressor=regressor, X=X, y=y)


def _refit(**params):
    """A fit of the fitted classifier with ``params`` changed."""
    return lambda e: e.classifier.set_params(**params).fit(e.X, e.y)


def _new(**params):
    from fastbp.interop.sklearn import MLPClassifier
    return lambda e: MLPClassifier(**params).fit(e.X, e.y)


# (id, call, error, the parameter the message must name)
SKLEARN_CASES = [
    ("hidden_layer_sizes zero", _refit(hidden_layer_sizes=(0,)), ValueError, r"hidden_layer_sizes\[0\]"),
    ("hidden_layer_sizes negative", _refit(hidden_layer_sizes=(5, -3)), ValueError, r"hidden_layer_sizes\[1\]"),
    ("hidden_layer_sizes float", _new(hidden_layer_sizes=(5.5,)), TypeError, r"hidden_layer_sizes\[0\]"),
    ("hidden_layer_sizes string", _new(hidden_layer_sizes="10"), TypeError, "hidden_layer_sizes"),
    ("hidden_layer_sizes other widths on warm_start", _refit(hidden_layer_sizes=(7,), warm_start=True), ValueError,
     "hidden_layer_sizes"),
    ("learning_rate_init zero", _refit(learning_rate_init=0.0), ValueError, "learning_rate_init"),
    ("learning_rate_init negative", _new(learning_rate_init=-1e-3), ValueError, "learning_rate_init"),
    ("max_iter zero", _refit(max_iter=0), ValueError, "max_iter"),
    ("max_iter float", _new(max_iter=10.0), TypeError, "max_iter"),
    ("batch_size zero", _refit(batch_size=0), ValueError, "batch_size"),
    ("batch_size string", _new(batch_size="all"), TypeError, "batch_size"),
    ("activation unknown", _refit(activation="swish"), ValueError, "activation"),
    ("solver unknown", _refit(solver="newton"), ValueError, "solver"),
    ("sample_weight short", lambda e: e.classifier.fit(e.X, e.y, sample_weight=np.ones(29)), ValueError,
     "sample_weight"),
    ("class_weight for no class of y", lambda e: e.classifier.set_params(class_weight={"nope": 2.0}).fit(e.X, e.y),
     ValueError, "class_weight"),
    ("sample_weight negative", lambda e: e.classifier.fit(e.X, e.y, sample_weight=-np.ones(30)), ValueError,
     "sample_weight"),
    ("learning_rate unknown", _new(learning_rate="fast"), ValueError, "learning_rate"),
    ("alpha negative", _refit(alpha=-1.0), ValueError, "alpha"),
    ("alpha nan", _new(alpha=np.nan), ValueError, "alpha"),
    ("validation_fraction one", _refit(early_stopping=True, validation_fraction=1.0), ValueError,
     "validation_fraction"),
    ("validation_fraction zero", _new(early_stopping=True, validation_fraction=0.0), ValueError,
     "validation_fraction"),
    ("momentum above 1", _new(solver="sgd", momentum=1.5), ValueError, "momentum"),
    ("beta_1 one", _new(beta_1=1.0), ValueError, "beta_1"),
    ("beta_2 negative", _new(beta_2=-0.5), ValueError, "beta_2"),
    ("epsilon zero", _new(epsilon=0.0), ValueError, "epsilon"),
    ("tol negative", _new(tol=-1.0), ValueError, "tol"),
    ("n_iter_no_change zero", _new(n_iter_no_change=0), ValueError, "n_iter_no_change"),
    ("shuffle string", _new(shuffle="yes"), TypeError, "shuffle"),
    ("dtype float16", _new(dtype="float16"), TypeError, "dtype"),
    ("regressor loss", lambda e: e.regressor.set_params(loss="huber").fit(e.X, e.X[:, 0]), ValueError, "loss"),
    # X and y at fit
    ("fit X nan", lambda e: e.classifier.fit(_with(e.X, (2, 1), np.nan), e.y), ValueError, "X"),
    ("fit X inf", lambda e: e.regressor.fit(_with(e.X, (0, 0), np.inf), e.X[:, 0]), ValueError, "X"),
    ("fit X 1-D", lambda e: e.classifier.fit(e.X[:, 0], e.y), ValueError, "X"),
    ("fit X 3-D", lambda e: e.classifier.fit(e.X[None], e.y), ValueError, "X"),
    ("fit X empty", lambda e: e.classifier.fit(e.X[:0], e.y[:0]), ValueError, "X"),
    ("fit X strings", lambda e: e.classifier.fit(e.X.astype(str).astype(object) + "m", e.y), ValueError, "X"),
    ("fit X None", lambda e: e.classifier.fit(None, e.y), ValueError, "X"),
    ("fit y None", lambda e: e.classifier.fit(e.X, None), ValueError, "y"),
    ("fit y short", lambda e: e.classifier.fit(e.X, e.y[:-1]), ValueError, "y"),
    ("fit y nan", lambda e: e.regressor.fit(e.X, _with(e.X[:, 0], 3, np.nan)), ValueError, "y"),
    ("fit y strings for the regressor", lambda e: e.regressor.fit(e.X, np.array(["cheap", "dear"])[e.y % 2]),
     ValueError, "y"),
    ("fit y continuous for the classifier", lambda e: e.classifier.fit(e.X, e.X[:, 0]), ValueError, "y"),
    ("fit y poisson negative", lambda e: e.regressor.set_params(loss="poisson").fit(e.X, e.X[:, 0] - 9), ValueError,
     "y"),
    ("fit y 3-D", lambda e: e.regressor.fit(e.X, e.X[:, :, None]), ValueError, "y"),
    ("partial_fit without classes", lambda e: type(e.classifier)().partial_fit(e.X, e.y), ValueError, "classes"),
    ("partial_fit y one-hot", lambda e: e.classifier.partial_fit(e.X, np.eye(3)[e.y]), ValueError, "y"),
    ("partial_fit labels outside classes", lambda e: e.classifier.partial_fit(e.X, e.y + 5), ValueError, "y"),
    # predict and score
    ("predict before fit", lambda e: type(e.classifier)().predict(e.X), ValueError, "fit"),
    ("predict_proba before fit", lambda e: type(e.classifier)().predict_proba(e.X), ValueError, "fit"),
    ("regressor score before fit", lambda e: type(e.regressor)().score(e.X, e.X[:, 0]), ValueError, "fit"),
    ("predict features", lambda e: e.classifier.predict(e.X[:, :2]), ValueError, "X"),
    ("regressor predict features", lambda e: e.regressor.predict(np.ones((2, 4))), ValueError, "X"),
    ("predict nan", lambda e: e.classifier.predict(_with(e.X, (0, 2), np.nan)), ValueError, "X"),
    ("predict_proba 1-D", lambda e: e.classifier.predict_proba(e.X[0]), ValueError, "X"),
    ("predict strings", lambda e: e.regressor.predict(e.X.astype(str).astype(object) + "m"), ValueError, "X"),
    ("score y short", lambda e: e.classifier.score(e.X, e.y[:-2]), ValueError, "y"),
    ("regressor score y of two targets", lambda e: e.regressor.score(e.X, e.X[:, :2]), ValueError, "y"),
    ("regressor score y short", lambda e: e.regressor.score(e.X, e.X[:-2, 0]), ValueError, "y"),
]


@pytest.mark.parametrize("call, error, parameter", [pytest.param(*case[1:], id=case[0]) for case in SKLEARN_CASES])
def test_bad_estimator_input_is_named_and_keeps_the_fitted_coefficients(estimators, call, error, parameter):
    fitted = [estimators.classifier, estimators.regressor]
    before = [(e.coefs_, e.intercepts_, e.n_features_in_, e.n_iter_, list(e.loss_curve_)) for e in fitted]
    classes = estimators.classifier.classes_.copy()
    with pytest.raises(error) as raised:
        call(estimators)
    message = str(raised.value)
    assert re.search(rf"(?<![\w.]){parameter}(?!\w)", message), f"{parameter!r} not named in: {message}"
    for (coefs, intercepts, *rest), e in zip(before, fitted):
        for a, b in zip(coefs + intercepts, e.coefs_ + e.intercepts_):
            np.testing.assert_array_equal(a, b)
        assert rest == [e.n_features_in_, e.n_iter_, list(e.loss_curve_)]
    np.testing.assert_array_equal(classes, estimators.classifier.classes_)


def test_the_audit_tries_every_entry_point_with_many_kinds_of_bad_input():
    tables = {"python api": CASES, "command line": CLI_CASES, "scikit-learn": SKLEARN_CASES}
    counts = {name: len({case[0] for case in table}) for name, table in tables.items()}  # distinct ids
    assert counts["python api"] >= 165 and counts["command line"] >= 84 and counts["scikit-learn"] >= 56, counts
    assert counts == {name: len(table) for name, table in tables.items()}, "a case id repeats"
