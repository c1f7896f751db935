"""fastbp.LBFGS as a Trainer's optimizer: each epoch one L-BFGS iteration,
the same iterates as fastbp.lbfgs.fit, with the Trainer's history,
validation, early stopping and callbacks."""
import numpy as np
import pytest

import fastbp
import fastbp.lbfgs


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)


def _model():
    return fastbp.MLP([4, 12, 3], activation="tanh", dtype="float64", seed=3)


def test_each_epoch_is_one_iteration_of_the_same_run_as_lbfgs_fit():
    X, y = _data()
    reference = _model()
    result = fastbp.lbfgs.fit(reference, "cross_entropy", X, y, l2=1e-3, max_iter=15, tol=0.0)
    model = _model()
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model, weight_decay=1e-3, tol=0.0))
    losses = []
    history = trainer.fit(X, y, epochs=15, callbacks=[lambda t, logs: losses.append(logs["loss"])])
    assert trainer.epoch == len(history) == 15 == result.nit
    np.testing.assert_array_equal(model.state_dict()["params"], reference.state_dict()["params"])
    # the history's loss is the data loss at each iterate (the L2 term left out, as for the other optimizers)
    assert losses[-1] == pytest.approx(trainer.evaluate(X, y), rel=1e-12)
    assert losses == sorted(losses, reverse=True)
    assert trainer.optimizer.step_count == result.nfev


def test_validation_and_early_stopping_keep_the_best_iterate():
    X, y = _data(300, seed=1)
    model = _model()
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model))
    X_val, y_val = X[200:], y[200:]
    trainer.fit(X[:200], y[:200], epochs=300, validation_data=(X_val, y_val), early_stopping=3)
    val_losses = list(trainer.history.val_loss)
    best = int(np.argmin(val_losses))
    assert trainer.epoch == best + 1 + 3 < 300
    assert trainer.evaluate(X_val, y_val) == pytest.approx(val_losses[best], rel=1e-12)


def test_what_lbfgs_cannot_do_is_refused_naming_it():
    X, y = _data()
    model = _model()
    with pytest.raises(ValueError, match="LBFGS takes neither a schedule nor max_grad_norm"):
        fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model), max_grad_norm=1.0)
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model))
    before = model.state_dict()["params"]
    with pytest.raises(ValueError, match="without checkpoint_every"):
        trainer.fit(X, y, epochs=2, checkpoint_every=1, checkpoint_path="unused.npz")
    with pytest.raises(ValueError, match="on_nonfinite='raise'"):
        trainer.fit(X, y, epochs=2, on_nonfinite="skip")
    np.testing.assert_array_equal(model.state_dict()["params"], before)
    assert trainer.epoch == 0
    with pytest.raises(TypeError, match="takes its steps inside Trainer.fit"):
        trainer.optimizer.step()
    with pytest.raises(ValueError, match="weight_decay must be"):
        fastbp.LBFGS(model, weight_decay=-1.0)


def test_a_checkpoint_of_an_lbfgs_run_goes_on_from_its_weights(tmp_path):
    X, y = _data()
    model = _model()
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model, weight_decay=1e-3, history_size=5))
    trainer.fit(X, y, epochs=4)
    trainer.save(tmp_path / "run.npz")
    loaded = fastbp.Trainer.load(tmp_path / "run.npz")
    assert repr(loaded.optimizer) == repr(trainer.optimizer)
    assert loaded.optimizer.step_count == trainer.optimizer.step_count
    np.testing.assert_array_equal(loaded.model.state_dict()["params"], model.state_dict()["params"])
    loaded.fit(X, y, epochs=3)  # the curvature pairs start afresh: from the same weights, a new run
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    fastbp.lbfgs.fit(fresh, "cross_entropy", X, y, l2=1e-3, max_iter=3, tol=1e-4, history_size=5)
    assert loaded.epoch == 7
    np.testing.assert_array_equal(loaded.model.state_dict()["params"], fresh.state_dict()["params"])
