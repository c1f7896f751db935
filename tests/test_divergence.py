"""A diverging fit raises and leaves the model and optimizer as they were
before the epoch that diverged."""
import numpy as np
import pytest

import fastbp


# Adam's step is bounded by lr, so only an lr far beyond any sane one overflows it
@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e6), ("adam", 1e200)])
def test_divergence_restores_the_last_finite_epoch(optimizer, lr):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 6))
    y = np.eye(3)[rng.integers(0, 3, 96)]
    model = fastbp.MLP([6, 16, 3], seed=0, dtype="float64")
    opt = fastbp.SGD(model, lr=1e-2, momentum=0.9) if optimizer == "sgd" else fastbp.Adam(model, lr=1e-2)
    trainer = fastbp.Trainer(model, "mse", opt)
    trainer.fit(X, y, epochs=2, seed=0)
    kept = []

    def keep(trainer, logs):
        # the state at the end of each finished epoch: the last one is what
        # a later diverging epoch must leave behind
        kept.append((model._params.copy(), [s.copy() for s in opt._state], opt.step_count, trainer.epoch,
                     trainer._rng_state.copy()))

    keep(trainer, None)
    opt.lr = lr
    with pytest.raises(FloatingPointError) as raised:
        trainer.fit(X * 1e3, y, epochs=10, callbacks=[keep])
    before = kept[-1]
    assert f"epoch {before[3] + 1}" in str(raised.value)
    assert np.isfinite(model._params).all()
    np.testing.assert_array_equal(model._params, before[0])
    for state, kept in zip(opt._state, before[1]):
        assert np.isfinite(state).all()
        np.testing.assert_array_equal(state, kept)
    assert (opt.step_count, trainer.epoch) == before[2:4]
    np.testing.assert_array_equal(trainer._rng_state, before[4])
    assert np.isfinite(model.predict(X)).all()
