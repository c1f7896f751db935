"""Training features: schedules against torch's, validation and history,
early stopping, callbacks, continuing a fit, and checkpoints that resume
bit for bit."""
import numpy as np
import pytest
import torch

import fastbp


def classification(n=120, n_in=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    y = np.argmax(X[:, :classes] + 0.3 * rng.standard_normal((n, classes)), axis=1)
    return X, y


def make_trainer(optimizer="adam", schedule=None, dtype="float64", **optimizer_kwargs):
    model = fastbp.MLP([6, 16, 3], activation="tanh", dtype=dtype, seed=3)
    optimizer = {"adam": fastbp.Adam, "sgd": fastbp.SGD, "rmsprop": fastbp.RMSprop,
                 "adamw": fastbp.AdamW}[optimizer](model, lr=0.01, **optimizer_kwargs)
    if schedule == "cosine":
        schedule = fastbp.CosineAnnealingLR(optimizer, T_max=7, eta_min=1e-4)
    elif schedule == "plateau":
        schedule = fastbp.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=0.05)
    elif schedule == "step":
        schedule = fastbp.StepLR(optimizer, step_size=3, gamma=0.5)
    return fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer, max_grad_norm=5.0, schedule=schedule)


@pytest.mark.parametrize("name, make_ours, make_torch", [
    ("step", lambda o: fastbp.StepLR(o, step_size=3, gamma=0.3),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.3)),
    ("cosine", lambda o: fastbp.CosineAnnealingLR(o, T_max=7, eta_min=1e-3),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-3)),
    ("plateau", lambda o: fastbp.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1, min_lr=0.02),
     lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1, min_lr=0.02)),
    ("plateau_max_abs", lambda o: fastbp.ReduceLROnPlateau(o, mode="max", threshold=0.1, threshold_mode="abs",
                                                            patience=1),
     lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", threshold=0.1, threshold_mode="abs",
                                                          patience=1)),
])
def test_schedules_set_torchs_learning_rates(name, make_ours, make_torch):
    ours = make_ours(fastbp.SGD(fastbp.MLP([2, 1]), lr=0.1))
    parameter = torch.nn.Parameter(torch.zeros(1))
    theirs = make_torch(torch.optim.SGD([parameter], lr=0.1))
    metrics = [1.0, 0.9, 0.95, 0.95, 0.94, 0.97, 0.5, 0.6, 0.6, 0.7, 0.3, 0.3, 0.31, 0.4, 0.4, 0.4, 0.4, 0.1, 0.2, 0.3]
    ours_lr, torch_lr = [], []
    for metric in metrics:
        ours.step(metric)
        theirs.optimizer.step()  # torch expects an update before each schedule step
        theirs.step(metric) if "plateau" in name else theirs.step()
        ours_lr.append(ours.optimizer.lr)
        torch_lr.append(theirs.optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(ours_lr, torch_lr, rtol=1e-12, atol=0)
    assert len(set(ours_lr)) > 2  # the schedule did change the rate


def test_history_validation_and_metrics():
    X, y = classification()
    trainer = make_trainer()
    history = trainer.fit(X, y, epochs=4, batch_size=16, validation_split=0.25, seed=0)
    assert history.metric == "accuracy" and history.epoch == [1, 2, 3, 4] and len(history) == 4
    X_val, y_val = X[90:], y[90:]  # validation_split takes the end of the data
    assert history.val_loss[-1] == pytest.approx(trainer.evaluate(X_val, y_val), rel=1e-12)
    expected = np.mean(trainer.predict(X_val).argmax(axis=1) == y_val)
    assert history.val_metric[-1] == expected == trainer.score(X_val, y_val)
    assert history.lr == [0.01] * 4 and all(s > 0 for s in history.seconds)
    more = trainer.fit(X[:90], y[:90], epochs=2, validation_data=(X_val, y_val))
    assert more is history and history.epoch == [1, 2, 3, 4, 5, 6]


def test_r2_matches_scikit_learn():
    from sklearn.metrics import r2_score
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 6))
    Y = X[:, :2] @ rng.standard_normal((2, 2)) + 0.1 * rng.standard_normal((50, 2))
    model = fastbp.MLP([6, 8, 2], dtype="float64", seed=0)
    trainer = fastbp.Trainer(model, "mse", fastbp.Adam(model, lr=0.01))
    history = trainer.fit(X, Y, epochs=3, batch_size=10, validation_data=(X, Y))
    assert history.metric == "r2"
    assert history.val_metric[-1] == pytest.approx(r2_score(Y, trainer.predict(X)), rel=1e-12)
    constant = np.ones((50, 2))
    assert trainer.score(X, constant) == r2_score(constant, trainer.predict(X))


def test_early_stopping_stops_and_restores_the_best_weights():
    X, y = classification()
    # Validation labels the model cannot learn: the validation loss is best early and then worsens.
    X_val, y_val = X[:40], (y[:40] + 1) % 3
    trainer = make_trainer()
    seen = {}
    history = trainer.fit(X, y, epochs=50, batch_size=16, seed=0, validation_data=(X_val, y_val),
                          early_stopping=3, callbacks=[lambda t, logs: seen.update({logs["epoch"]: t.model._params.copy()})])
    best = history.best_epoch
    assert len(history) == best + 3 < 50
    np.testing.assert_array_equal(trainer.model._params, seen[best])
    assert not np.array_equal(seen[best], seen[len(history)])


def test_callbacks_see_each_epoch_and_can_stop_the_run():
    X, y = classification()
    trainer = make_trainer()

    class StopAtThree:
        def __init__(self):
            self.logs = []

        def on_epoch_end(self, trainer, logs):
            self.logs.append(dict(logs))
            trainer.stop_training = logs["epoch"] >= 3
    callback = StopAtThree()
    trainer.fit(X, y, epochs=10, callbacks=[callback])
    assert [logs["epoch"] for logs in callback.logs] == [1, 2, 3] and trainer.epoch == 3
    assert callback.logs[-1]["loss"] == trainer.history.loss[-1]
    with pytest.raises(TypeError, match=r"callbacks\[0\] must be callable"):
        trainer.fit(X, y, callbacks=[42])
    assert trainer.epoch == 3


def test_fit_continues_where_it_stopped():
    X, y = classification()
    straight, split = make_trainer(schedule="step"), make_trainer(schedule="step")
    straight.fit(X, y, epochs=6, batch_size=16, seed=5)
    split.fit(X, y, epochs=2, batch_size=16, seed=5)
    split.fit(X, y, epochs=4, batch_size=16)
    np.testing.assert_array_equal(straight.model._params, split.model._params)
    assert straight.history.loss == split.history.loss and straight.optimizer.lr == split.optimizer.lr


@pytest.mark.parametrize("optimizer, kwargs, schedule, dtype", [
    ("adam", {"amsgrad": True}, "cosine", "float32"),
    ("sgd", {"momentum": 0.9, "nesterov": True}, "plateau", "float64"),
    ("rmsprop", {"momentum": 0.5, "centered": True}, "step", "float32"),
    ("adamw", {}, None, "float64"),
])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, optimizer, kwargs, schedule, dtype):
    X, y = classification()
    fit = dict(batch_size=16, validation_split=0.2, early_stopping=50, restore_best=False)
    straight = make_trainer(optimizer, schedule, dtype, **kwargs)
    straight.fit(X, y, epochs=10, seed=11, **fit)

    first = make_trainer(optimizer, schedule, dtype, **kwargs)
    first.metadata = {"note": "half way"}
    first.fit(X, y, epochs=5, seed=11, **fit)
    first.save(tmp_path / "run.npz")
    resumed = fastbp.Trainer.load(tmp_path / "run.npz")
    assert resumed.epoch == 5 and resumed.metadata == {"note": "half way"}
    resumed.fit(X, y, epochs=5, **fit)

    np.testing.assert_array_equal(resumed.model._params, straight.model._params)
    for ours, theirs in zip(resumed.optimizer._state, straight.optimizer._state):
        np.testing.assert_array_equal(ours, theirs)
    assert resumed.optimizer.step_count == straight.optimizer.step_count
    assert resumed.optimizer.lr == straight.optimizer.lr
    assert resumed.history.as_dict()["loss"] == straight.history.as_dict()["loss"]
    assert resumed.history.val_loss == straight.history.val_loss
    assert fastbp.load(tmp_path / "run.npz").sizes == straight.model.sizes  # a checkpoint is also a model file


def test_bad_checkpoints_give_clear_errors(tmp_path):
    X, y = classification()
    trainer = make_trainer("sgd", momentum=0.9)
    trainer.fit(X, y, epochs=1, seed=0)
    path = tmp_path / "run.npz"
    trainer.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match="not a readable fastbp checkpoint file"):
        fastbp.Trainer.load(tmp_path / "truncated.npz")
    with np.load(path) as archive:
        contents = dict(archive)
    np.savez(tmp_path / "v9.npz", **{**contents, "format_version": np.array(9)})
    with pytest.raises(ValueError, match="checkpoint format version 9; this fastbp reads versions 1 and 2"):
        fastbp.Trainer.load(tmp_path / "v9.npz")
    np.savez(tmp_path / "no_momentum.npz", **{**contents, "optimizer_state_0": np.zeros(0, contents["params"].dtype)})
    with pytest.raises(ValueError, match="optimizer_state_0 is empty but SGD"):
        fastbp.Trainer.load(tmp_path / "no_momentum.npz")
    np.savez(tmp_path / "short_state.npz", **{**contents, "optimizer_state_0": contents["optimizer_state_0"][:-2]})
    with pytest.raises(ValueError, match="damaged fastbp file .*optimizer_state_0"):
        fastbp.Trainer.load(tmp_path / "short_state.npz")
    fastbp.MLP([2, 2]).save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a fastbp checkpoint file"):
        fastbp.Trainer.load(tmp_path / "model.npz")
    trainer.metadata = {"array": np.ones(2)}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        trainer.save(tmp_path / "other.npz")
    assert not (tmp_path / "other.npz").exists()


def test_divergence_is_an_error_not_a_silent_nan():
    X, y = classification()
    model = fastbp.MLP([6, 16, 3], seed=0, dtype="float64")
    trainer = fastbp.Trainer(model, "mse", fastbp.SGD(model, lr=1e6))
    with pytest.raises(FloatingPointError, match="training diverged"):
        trainer.fit(X * 1e3, np.eye(3)[y], epochs=20)


def test_history_plot_writes_a_png(tmp_path):
    X, y = classification()
    trainer = make_trainer()
    trainer.fit(X, y, epochs=3, validation_split=0.2, seed=0).plot(tmp_path / "history.png")
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_fit_arguments_change_nothing():
    X, y = classification()
    trainer = make_trainer()
    before = trainer.model._params.copy()
    for kwargs, error, message in [
        (dict(validation_split=1.0), ValueError, r"validation_split must be a finite number in \[0.0, 1.0\)"),
        (dict(validation_split=0.1, validation_data=(X, y)), ValueError, "not both"),
        (dict(validation_data=X), TypeError, "validation_data must be a pair"),
        (dict(validation_data=(X[:, :2], y)), ValueError, r"validation_data\[0\]"),
        (dict(early_stopping=0), ValueError, "early_stopping must be >= 1"),
    ]:
        with pytest.raises(error, match=message):
            trainer.fit(X, y, epochs=2, **kwargs)
    np.testing.assert_array_equal(trainer.model._params, before)
    assert trainer.epoch == 0 and len(trainer.history) == 0


def test_min_delta_counts_only_real_improvements():
    X, y = classification()
    runs = {}
    for min_delta in (0.0, 10.0):
        trainer = make_trainer()
        trainer.fit(X, y, epochs=30, batch_size=16, seed=0, early_stopping=3, min_delta=min_delta)
        runs[min_delta] = trainer.epoch
    assert runs[10.0] == 4 and runs[0.0] > 4  # nothing improves by 10: epoch 1 stays best, stop after 3 more


def test_a_checkpoint_keeps_the_early_stopping_state(tmp_path):
    X, y = classification()
    X_val, y_val = X[:40], (y[:40] + 1) % 3
    trainer = make_trainer()
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0, validation_data=(X_val, y_val), early_stopping=10)
    trainer.save(tmp_path / "run.npz")
    loaded = fastbp.Trainer.load(tmp_path / "run.npz")
    assert loaded._best == trainer._best and loaded._best_params[0] == trainer._best_params[0]
    np.testing.assert_array_equal(loaded._best_params[1], trainer._best_params[1])
    for each in (trainer, loaded):
        each.fit(X, y, epochs=20, batch_size=16, validation_data=(X_val, y_val), early_stopping=3)
    np.testing.assert_array_equal(loaded.model._params, trainer.model._params)
    assert loaded.epoch == trainer.epoch < 22


def _unlearnable_validation(X, y):
    """Validation labels the model cannot learn: the validation loss is best
    in an early epoch and worsens from there."""
    return X[:40], (y[:40] + 1) % 3


def test_early_stopping_restores_a_best_epoch_from_an_earlier_fit():
    X, y = classification()
    validation = _unlearnable_validation(X, y)
    trainer = make_trainer()
    seen = {}
    keep = [lambda t, logs: seen.update({logs["epoch"]: t.model._params.copy()})]
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0, validation_data=validation, callbacks=keep)
    assert trainer.history.best_epoch == 1
    trainer.fit(X, y, epochs=20, batch_size=16, validation_data=validation, early_stopping=3,
                restore_best=True, callbacks=keep)
    assert trainer.epoch == 4 and trainer.history.best_epoch == 1
    np.testing.assert_array_equal(trainer.model._params, seen[1])


@pytest.mark.parametrize("k", [1, 4, 5, 6, 7, 9])
def test_resume_after_restoring_the_best_weights_is_bit_identical(tmp_path, k):
    """12 epochs straight against k + save + load + 12 - k, and against k + 12 - k
    in one process, restoring the best weights at the end of every fit."""
    X, y = classification()
    fit = dict(batch_size=16, validation_data=_unlearnable_validation(X, y), early_stopping=20, restore_best=True)
    straight = make_trainer()
    straight.fit(X, y, epochs=12, seed=11, **fit)
    assert straight.history.best_epoch < 12  # the end of the run restored an earlier epoch

    continued = make_trainer()
    continued.fit(X, y, epochs=k, seed=11, **fit)
    continued.save(tmp_path / "run.npz")
    resumed = fastbp.Trainer.load(tmp_path / "run.npz")
    np.testing.assert_array_equal(resumed.model._params, continued.model._params)  # the best, for prediction
    np.testing.assert_array_equal(fastbp.load(tmp_path / "run.npz")._params, continued.model._params)
    for each in (continued, resumed):
        each.fit(X, y, epochs=12 - k, **fit)
        np.testing.assert_array_equal(each.model._params, straight.model._params)
        np.testing.assert_array_equal(each._last_params, straight._last_params)
        for ours, theirs in zip(each.optimizer._state, straight.optimizer._state):
            np.testing.assert_array_equal(ours, theirs)
        assert each.history.loss == straight.history.loss and each.history.val_loss == straight.history.val_loss


def test_a_version_1_checkpoint_still_loads(tmp_path):
    X, y = classification()
    trainer = make_trainer()
    trainer.fit(X, y, epochs=2, batch_size=16, seed=0)
    trainer.save(tmp_path / "run.npz")
    with np.load(tmp_path / "run.npz") as archive:
        contents = {key: value for key, value in archive.items() if key != "last_params"}
    np.savez(tmp_path / "v1.npz", **{**contents, "format_version": np.array(1)})
    loaded = fastbp.Trainer.load(tmp_path / "v1.npz")
    assert loaded.epoch == 2 and loaded._last_params is None
    np.testing.assert_array_equal(loaded.model._params, trainer.model._params)


@pytest.mark.parametrize("loss", [fastbp.CrossEntropyLoss(reduction="sum"), fastbp.MSELoss(reduction="sum"),
                                  fastbp.CrossEntropyLoss(), fastbp.MSELoss()])
def test_loss_and_val_loss_are_both_per_sample(loss):
    X, y = classification()
    target = y if isinstance(loss, fastbp.CrossEntropyLoss) else np.eye(3)[y]
    model = fastbp.MLP([6, 16, 3], activation="tanh", dtype="float64", seed=3)
    trainer = fastbp.Trainer(model, loss, fastbp.SGD(model, lr=0.0))  # the weights stay put
    history = trainer.fit(X, target, epochs=1, batch_size=16, shuffle=False, validation_data=(X, target))
    assert history.val_loss[0] == pytest.approx(history.loss[0], rel=1e-12)
    # evaluate still gives what one batch of the loss gives
    one_batch = type(loss)(reduction=loss.reduction)(model.predict(X), target)
    assert trainer.evaluate(X, target) == pytest.approx(one_batch, rel=1e-12)
