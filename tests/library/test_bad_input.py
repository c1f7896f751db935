"""Bad input gets a ValueError or TypeError naming the argument, what was
expected and what was received, and changes nothing."""
import subprocess
import sys

import numpy as np
import pytest

import fastbp


@pytest.fixture
def setup():
    model = fastbp.MLP([3, 5, 4], seed=0)
    optimizer = fastbp.Adam(model, lr=0.01)
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer)
    X = np.random.default_rng(0).standard_normal((10, 3))
    y = np.arange(10) % 4
    trainer.fit(X, y, epochs=1, batch_size=4, seed=0)
    return model, optimizer, trainer, X, y


def snapshot(model, optimizer):
    return model._params.copy(), model._grads.copy(), [s.copy() for s in optimizer._state], optimizer.step_count


def assert_unchanged(before, model, optimizer):
    params, grads, state, steps = before
    np.testing.assert_array_equal(model._params, params)
    np.testing.assert_array_equal(model._grads, grads)
    for a, b in zip(optimizer._state, state):
        np.testing.assert_array_equal(a, b)
    assert optimizer.step_count == steps


def _nan_at(X, row, col):
    X = X.copy()
    X[row, col] = np.nan
    return X


FIT_CASES = [
    (lambda X, y: (X[:, :2], y), {}, ValueError, r"X must have 3 features per sample, got shape \(10, 2\)"),
    (lambda X, y: (X[0], y), {}, ValueError, r"X must be 2-D .* got 1-D shape \(3,\)"),
    (lambda X, y: (X.astype(complex), y), {}, TypeError, r"X must hold real numbers, got .*complex"),
    (lambda X, y: (X.astype(str), y), {}, TypeError, r"X must hold real numbers"),
    (lambda X, y: (_nan_at(X, 2, 1), y), {}, ValueError, r"X contains NaN or inf \(first at index \(2, 1\)"),
    (lambda X, y: (X[:0], y[:0]), {}, ValueError, r"X must hold at least one sample"),
    (lambda X, y: (X, y[:-1]), {}, ValueError, r"y must hold one target per sample of X: X has 10 rows, y has 9"),
    (lambda X, y: (X, y + 1), {}, ValueError, r"target must be class labels in \[0, 4\), got 4"),
    (lambda X, y: (X, y - 1), {}, ValueError, r"target must be class labels in \[0, 4\), got -1"),
    (lambda X, y: (X, y + 0.5), {}, TypeError, r"target must hold integer class labels, got non-integer value 0.5"),
    (lambda X, y: (X, np.where(y == 0, np.inf, y)), {}, ValueError, r"target contains NaN or inf"),
    (lambda X, y: (X, y), {"batch_size": 0}, ValueError, r"batch_size must be >= 1, got 0"),
    (lambda X, y: (X, y), {"batch_size": 2.5}, TypeError, r"batch_size must be an integer, got float 2.5"),
    (lambda X, y: (X, y), {"epochs": -1}, ValueError, r"epochs must be >= 0, got -1"),
    (lambda X, y: (X, y), {"shuffle": "yes"}, TypeError, r"shuffle must be True or False"),
]


@pytest.mark.parametrize("make, kwargs, error, message", FIT_CASES)
def test_fit_rejects_bad_input_and_changes_nothing(setup, make, kwargs, error, message):
    model, optimizer, trainer, X, y = setup
    before = snapshot(model, optimizer)
    Xb, yb = make(X, y)
    with pytest.raises(error, match=message):
        trainer.fit(Xb, yb, **kwargs)
    assert_unchanged(before, model, optimizer)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_large_inputs_are_checked_to_the_last_element(setup, dtype, bad):
    """Data past FINITE_COMPILED elements takes the compiled, threaded check,
    in several blocks: a bad value in the last block, at the last element or
    deep inside a block, is found and placed as exactly as the small data's."""
    from fastbp._checks import FINITE_BLOCK, FINITE_COMPILED

    model, optimizer, trainer, _, _ = setup
    assert FINITE_BLOCK > FINITE_COMPILED
    n = 2 * FINITE_BLOCK // 3 + 7  # three blocks of 3-column rows, the last one short
    X = np.ones((n, 3), dtype=dtype)
    y = np.arange(n) % 4
    before = snapshot(model, optimizer)
    for row, col in ((n - 1, 2), (FINITE_BLOCK // 3 + 5, 1), (0, 0)):
        X[row, col] = bad
        with pytest.raises(ValueError, match=rf"X contains NaN or inf \(first at index \({row}, {col}\)"):
            trainer.fit(X, y, epochs=1, batch_size=4096)
        X[row, col] = 1.0
    assert_unchanged(before, model, optimizer)
    # the same check runs at every entry point: a prediction on it too
    X[n // 2, 0] = bad
    with pytest.raises(ValueError, match=rf"x contains NaN or inf \(first at index \({n // 2}, 0\)"):
        trainer.predict(X)


def test_inputs_are_converted_not_rejected(setup):
    model, optimizer, trainer, X, y = setup
    fortran = np.asfortranarray(X)
    strided = np.repeat(X, 2, axis=0)[::2]
    assert not fortran.flags.c_contiguous and not strided.flags.c_contiguous
    expected = trainer.predict(X)
    np.testing.assert_array_equal(trainer.predict(fortran), expected)
    np.testing.assert_array_equal(trainer.predict(strided), expected)
    np.testing.assert_array_equal(trainer.predict(X.astype(np.float32)), expected)
    np.testing.assert_array_equal(model.forward(X.tolist()), expected)  # float64 list into float32 model
    trainer.evaluate(X, y.astype(np.float64))  # integral floats are labels too
    trainer.evaluate(X, y.astype(np.int32))


def test_forward_and_backward_errors(setup):
    model, optimizer, _, X, _ = setup
    with pytest.raises(ValueError, match=r"x must have 3 features per sample, got shape \(10, 4\)"):
        model.forward(np.ones((10, 4)))
    model.forward(X)
    before = snapshot(model, optimizer)
    with pytest.raises(ValueError, match=r"dout must have 10 rows to match the prediction, got shape \(9, 4\)"):
        model.backward(np.ones((9, 4)))
    with pytest.raises(ValueError, match=r"dout must have 4 outputs per sample"):
        model.backward(np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"dout contains NaN"):
        model.backward(np.full((10, 4), np.nan))
    assert_unchanged(before, model, optimizer)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"sizes": [3]}, ValueError, r"sizes must list at least the input and output widths, got \[3\]"),
    ({"sizes": [3, 0, 2]}, ValueError, r"sizes\[1\] must be >= 1, got 0"),
    ({"sizes": [3, -4]}, ValueError, r"sizes\[1\] must be >= 1, got -4"),
    ({"sizes": [3, 2.0]}, TypeError, r"sizes\[1\] must be an integer, got float 2.0"),
    ({"sizes": "3,2"}, TypeError, r"sizes must be a list of layer widths"),
    ({"sizes": [3, 4, 2], "activation": "swish"}, ValueError, r"activation must be one of .*'relu'.* got str 'swish'"),
    ({"sizes": [3, 4, 2], "activation": ["relu", "tanh"]}, ValueError, r"one activation per hidden layer \(1\), got 2"),
    ({"sizes": [3, 2], "output_activation": 3}, TypeError, r"output_activation must be an activation name"),
    ({"sizes": [3, 2], "dtype": "float16"}, TypeError, r"dtype must be 'float32' or 'float64', got str 'float16'"),
    ({"sizes": [3, 2], "dtype": "int64"}, TypeError, r"dtype must be 'float32' or 'float64'"),
    ({"sizes": [3, 2], "bias": 1}, TypeError, r"bias must be True or False, got int 1"),
])
def test_mlp_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastbp.MLP(**kwargs)


def test_activation_rejects_bad_parameters():
    with pytest.raises(TypeError, match=r"activation 'relu' takes no parameters, got \['alpha'\]"):
        fastbp.Activation("relu", alpha=1.0)
    with pytest.raises(ValueError, match=r"approximate must be one of 'none', 'tanh', got str 'fast'"):
        fastbp.Activation("gelu", approximate="fast")
    with pytest.raises(ValueError, match=r"beta must be a finite number in \(0.0, inf\], got 0.0"):
        fastbp.Activation("softplus", beta=0)


@pytest.mark.parametrize("make, error, message", [
    (lambda m: fastbp.SGD(m, lr=-0.1), ValueError, r"lr must be a finite number in \[0.0, inf\], got -0.1"),
    (lambda m: fastbp.SGD(m, lr="fast"), TypeError, r"lr must be a real number, got str 'fast'"),
    (lambda m: fastbp.SGD(m, lr=0.1, nesterov=True), ValueError, r"nesterov=True requires momentum > 0"),
    (lambda m: fastbp.Adam(m, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be a finite number in \[0.0, 1.0\), got 1.0"),
    (lambda m: fastbp.Adam(m, betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be a finite number in \[0.0, 1.0\)"),
    (lambda m: fastbp.Adam(m, betas=0.9), TypeError, r"betas must be a pair"),
    (lambda m: fastbp.AdamW(m, eps=0.0), ValueError, r"eps must be a finite number in \(0.0, inf\], got 0.0"),
    (lambda m: fastbp.RMSprop(m, eps=-1e-8), ValueError, r"eps must be a finite number in \(0.0, inf\]"),
    (lambda m: fastbp.RMSprop(m, alpha=1.5), ValueError, r"alpha must be a finite number in \[0.0, 1.0\]"),
    (lambda m: fastbp.SGD(m, lr=float("nan")), ValueError, r"lr must be a finite number"),
    (lambda m: fastbp.SGD("model"), TypeError, r"model must be a fastbp.MLP, got str 'model'"),
])
def test_optimizers_reject_bad_hyperparameters(make, error, message):
    model = fastbp.MLP([2, 2])
    with pytest.raises(error, match=message):
        make(model)


def test_setting_a_bad_learning_rate_keeps_the_old_one():
    model = fastbp.MLP([2, 2])
    optimizer = fastbp.SGD(model, lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        optimizer.lr = -1
    assert optimizer.lr == 0.1


def test_losses_and_trainer_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', got str 'none'"):
        fastbp.MSELoss(reduction="none")
    with pytest.raises(ValueError, match=r"label_smoothing must be a finite number in \[0.0, 1.0\], got 1.5"):
        fastbp.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"delta must be a finite number in \(0.0, inf\]"):
        fastbp.HuberLoss(delta=0)
    model = fastbp.MLP([2, 3])
    with pytest.raises(ValueError, match=r"loss must be one of 'mse', .* got str 'hinge'"):
        fastbp.Trainer(model, "hinge", fastbp.SGD(model))
    with pytest.raises(ValueError, match="optimizer must be built on the same model"):
        fastbp.Trainer(model, "mse", fastbp.SGD(fastbp.MLP([2, 3])))
    with pytest.raises(ValueError, match=r"pred must have 3 rows to match|target must have 3 rows"):
        fastbp.MSELoss()(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"target must be 1-D class labels"):
        fastbp.CrossEntropyLoss()(np.ones((3, 2)), np.ones((3, 2)))


def test_fastbp_imports_and_trains_without_torch():
    code = """
import sys
sys.modules["torch"] = None  # importing torch now raises ImportError
import numpy as np, fastbp
model = fastbp.MLP([4, 8, 3], seed=0)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model, lr=0.01))
X = np.random.default_rng(0).standard_normal((64, 4)); y = (X[:, 0] > 0).astype(int)
history = trainer.fit(X, y, epochs=30, batch_size=16, seed=0).loss
assert history[-1] < history[0] * 0.5, history
try:
    model.to_torch()
except ImportError as error:
    assert "pip install 'fastbp[torch]'" in str(error)
else:
    raise AssertionError("to_torch worked without torch")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _digits_like(n_outputs, loss, n=1797):
    """A digits-sized problem: 1797 samples, 64 features, labels 0..9."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, 64)), np.arange(n) % 10
    model = fastbp.MLP([64, 16, n_outputs], seed=0)
    optimizer = fastbp.Adam(model)
    return fastbp.Trainer(model, loss, optimizer), X, y


@pytest.mark.parametrize("n_outputs, loss, make_target, expected", [
    # class labels for a regression loss: reshape(-1, 1) is not the way out, say what is
    (10, fastbp.MSELoss(), lambda y: y, ["CrossEntropyLoss", "one-hot", "np.eye(10)[y]"]),
    (10, fastbp.MSELoss(), lambda y: y.reshape(-1, 1), ["CrossEntropyLoss", "one-hot", "np.eye(10)[y]"]),
    # string labels: say how to encode them
    (10, fastbp.CrossEntropyLoss(), lambda y: np.array([f"digit {v}" for v in y]),
     ["np.unique(y, return_inverse=True)", "LabelEncoder"]),
    # one-hot rows for cross-entropy: say how to get labels back
    (10, fastbp.CrossEntropyLoss(), lambda y: np.eye(10)[y], [".argmax(axis=1)"]),
    # labels 0..9 for a 1-output model: say the model has 1 output and what it needs
    (1, fastbp.CrossEntropyLoss(), lambda y: y, ["the model has 1 output", "10 outputs"]),
    # fewer targets than samples: say how many of each
    (10, fastbp.CrossEntropyLoss(), lambda y: y[:-1], ["X has 1797 rows", "y has 1796"]),
])
def test_fit_errors_say_how_to_fix_the_problem(n_outputs, loss, make_target, expected):
    trainer, X, y = _digits_like(n_outputs, loss)
    before = snapshot(trainer.model, trainer.optimizer)
    with pytest.raises((TypeError, ValueError)) as error:
        trainer.fit(X, make_target(y), epochs=1)
    message = str(error.value)
    missing = [text for text in expected if text not in message]
    assert not missing, f"{missing} not in: {message}"
    assert_unchanged(before, trainer.model, trainer.optimizer)
