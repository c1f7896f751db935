"""Sample and class weights: every loss weighted as torch weighs it, whole
training runs against torch's, a zero weight as the row left out, and bad
weights refused with the model untouched."""
import numpy as np
import pytest

import fastbp
from tests.conftest import TOLERANCE, assert_close, check_against_torch

torch = pytest.importorskip("torch")

CLASS_WEIGHTS = np.array([0.5, 2.0, 1.5, 1.0])


def _torch_loss(name, smoothing=0.0):
    return {"mse": lambda p, t: (p - t) ** 2, "l1": lambda p, t: (p - t).abs(),
            "huber": lambda p, t: torch.nn.functional.huber_loss(p, t, reduction="none", delta=0.5),
            "bce_with_logits": lambda p, t: torch.nn.functional.binary_cross_entropy_with_logits(
                p, t, reduction="none"),
            "poisson_nll": lambda p, t: torch.nn.functional.poisson_nll_loss(p, t, reduction="none")}[name]


def _fastbp_loss(name, reduction):
    return fastbp.HuberLoss(reduction, delta=0.5) if name == "huber" else fastbp.losses.LOSSES[name](reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["mse", "l1", "huber", "bce_with_logits", "poisson_nll"])
def test_a_weighted_pointwise_loss_is_torchs_weighted_mean(name, reduction, dtype):
    rng = np.random.default_rng(1)
    pred, weights = rng.standard_normal((7, 3)), rng.random(7) * 3
    target = rng.random((7, 3)) if name == "bce_with_logits" else (
        rng.poisson(2.0, (7, 3)).astype(float) if name == "poisson_nll" else rng.standard_normal((7, 3)))
    weights[2] = 0.0

    def torch_fn(p, t, w):
        rows = _torch_loss(name)(p, t).sum(1) * w
        return rows.sum() / (w.sum() * 3) if reduction == "mean" else rows.sum()

    def fastbp_fn(p, t, w, dout):
        loss = _fastbp_loss(name, reduction)
        return loss(p, t, sample_weight=w), [loss.backward() * dout]
    check_against_torch(f"weighted {name} {reduction}", [pred, target, weights], torch_fn, fastbp_fn, dtype,
                        TOLERANCE[dtype], constant=(1, 2))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_class_weights_are_torchs_cross_entropy_weight(smoothing, reduction, dtype):
    rng = np.random.default_rng(2)
    logits, labels, weights = rng.standard_normal((9, 4)), rng.integers(0, 4, 9), rng.random(9) + 0.5
    class_weights = torch.tensor(CLASS_WEIGHTS)

    def torch_fn(p, y):
        return torch.nn.functional.cross_entropy(p, y, weight=class_weights, label_smoothing=smoothing,
                                                 reduction=reduction)

    def fastbp_fn(p, y, dout):
        loss = fastbp.CrossEntropyLoss(reduction, label_smoothing=smoothing, weight=CLASS_WEIGHTS)
        return loss(p, y), [loss.backward() * dout]
    check_against_torch(f"class-weighted cross-entropy {reduction}", [logits, labels], torch_fn, fastbp_fn, dtype,
                        TOLERANCE[dtype])

    def torch_weighted(p, y, w):
        rows = torch.nn.functional.cross_entropy(p, y, weight=class_weights, label_smoothing=smoothing,
                                                 reduction="none") * w
        return rows.sum() / (w * class_weights[y]).sum() if reduction == "mean" else rows.sum()

    def fastbp_weighted(p, y, w, dout):
        loss = fastbp.CrossEntropyLoss(reduction, label_smoothing=smoothing, weight=CLASS_WEIGHTS)
        return loss(p, y, sample_weight=w), [loss.backward() * dout]
    check_against_torch(f"sample- and class-weighted cross-entropy {reduction}", [logits, labels, weights],
                        torch_weighted, fastbp_weighted, dtype, TOLERANCE[dtype], constant=(2,))


def _torch_run(model, X, y, weights, class_weights, smoothing, epochs, batch_size, lr):
    net = model.to_torch().double()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    Xt, yt, wt = torch.tensor(X, dtype=torch.float64), torch.tensor(y), torch.tensor(weights, dtype=torch.float64)
    cw = torch.tensor(class_weights)
    for _ in range(epochs):
        for start in range(0, X.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            optimizer.zero_grad()
            losses = torch.nn.functional.cross_entropy(net(Xt[rows]), yt[rows], weight=cw, reduction="none",
                                                       label_smoothing=smoothing)
            ((losses * wt[rows]).sum() / (wt[rows] * cw[yt[rows]]).sum()).backward()
            optimizer.step()
    return net(Xt).detach().numpy()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_a_weighted_run_of_50_steps_is_torchs(dtype, tolerance):
    rng = np.random.default_rng(3)
    X, y, weights = rng.standard_normal((100, 6)), rng.integers(0, 4, 100), rng.random(100) * 2 + 0.1
    model = fastbp.MLP([6, 16, 4], activation="tanh", dtype=dtype, seed=0)
    expected = _torch_run(model, X, y, weights, CLASS_WEIGHTS, 0.1, 5, 10, 0.05)
    loss = fastbp.CrossEntropyLoss(label_smoothing=0.1, weight=CLASS_WEIGHTS)
    trainer = fastbp.Trainer(model, loss, fastbp.SGD(model, lr=0.05, momentum=0.9))
    trainer.fit(X, y, epochs=5, batch_size=10, shuffle=False, sample_weight=weights)
    assert trainer.optimizer.step_count == 50
    assert_close("weighted 50-step run", dtype, model.predict(X), expected, {"atol": tolerance, "rtol": tolerance})


def test_a_row_weighing_zero_is_the_row_left_out():
    rng = np.random.default_rng(4)
    X, y, weights = rng.standard_normal((90, 5)), rng.integers(0, 3, 90), rng.random(90) + 0.5
    weights[::4] = 0.0
    kept = weights > 0
    runs = []
    for rows in (slice(None), kept):
        model = fastbp.MLP([5, 12, 3], seed=1)
        trainer = fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model, lr=0.01))
        trainer.fit(X[rows], y[rows], epochs=3, batch_size=8, seed=5, sample_weight=weights[rows])
        runs.append((model.predict(X), trainer.history.loss))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_equal_weights_train_as_no_weights():
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((64, 4)), rng.standard_normal((64, 2))
    outputs = []
    for weights in (None, np.full(64, 3.0)):
        model = fastbp.MLP([4, 8, 2], dtype="float64", seed=2)
        fastbp.Trainer(model, "mse", fastbp.Adam(model, lr=0.01)).fit(X, Y, epochs=2, batch_size=16, seed=1,
                                                                      sample_weight=weights)
        outputs.append(model.predict(X))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-12)


def test_weights_change_the_run():
    # the weights reach the gradients: the heavy rows are fitted better
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((200, 1))
    weights = np.where(np.arange(200) < 100, 10.0, 0.1)
    errors = []
    for w in (None, weights):
        model = fastbp.MLP([3, 32, 1], seed=0)
        fastbp.Trainer(model, "mse", fastbp.Adam(model, lr=0.01)).fit(X, Y, epochs=60, batch_size=20, seed=0,
                                                                      sample_weight=w)
        errors.append(np.mean((model.predict(X[:100]) - Y[:100]) ** 2))
    assert errors[1] < errors[0] * 0.9


def test_a_checkpointed_weighted_run_resumes_bit_for_bit(tmp_path):
    rng = np.random.default_rng(7)
    X, y, weights = rng.standard_normal((50, 4)), rng.integers(0, 3, 50), rng.random(50)
    weights[::5] = 0.0
    loss = fastbp.CrossEntropyLoss(weight=[1.0, 2.0, 0.5])

    def trainer():
        model = fastbp.MLP([4, 8, 3], seed=3)
        return fastbp.Trainer(model, loss, fastbp.Adam(model, lr=0.01))
    whole = trainer()
    whole.fit(X, y, epochs=2, batch_size=6, seed=1, sample_weight=weights)
    path = tmp_path / "run.ckpt"
    first = trainer()
    first.fit(X, y, epochs=1, batch_size=6, seed=1, sample_weight=weights, checkpoint_every=4,
              checkpoint_path=path)
    resumed = fastbp.Trainer.load(path)
    assert resumed.loss.arguments() == loss.arguments()
    resumed.fit(X, y, epochs=2 - resumed.epoch, batch_size=6, sample_weight=weights)
    np.testing.assert_array_equal(resumed.model.predict(X), whole.model.predict(X))
    assert resumed.history.loss == whole.history.loss


def test_the_validation_loss_and_score_are_weighted():
    rng = np.random.default_rng(8)
    X, y, weights = rng.standard_normal((80, 4)), rng.integers(0, 3, 80), rng.random(80) + 0.1
    model = fastbp.MLP([4, 8, 3], seed=4)
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model))
    trainer.fit(X[:60], y[:60], epochs=1, validation_data=(X[60:], y[60:], weights[60:]))
    assert trainer.history.val_loss[-1] == pytest.approx(trainer.evaluate(X[60:], y[60:], weights[60:]), rel=1e-12)
    assert trainer.history.val_metric[-1] == pytest.approx(trainer.score(X[60:], y[60:], weights[60:]), rel=1e-12)
    logits = torch.tensor(model.predict(X[60:]), dtype=torch.float64)
    expected = (torch.nn.functional.cross_entropy(logits, torch.tensor(y[60:]), reduction="none").numpy()
                * weights[60:]).sum() / weights[60:].sum()
    assert trainer.evaluate(X[60:], y[60:], weights[60:]) == pytest.approx(expected, rel=1e-5)
    correct = np.argmax(model.predict(X[60:]), axis=1) == y[60:]
    assert trainer.score(X[60:], y[60:], weights[60:]) == pytest.approx(np.average(correct, weights=weights[60:]))


def test_lbfgs_takes_sample_and_class_weights():
    rng = np.random.default_rng(9)
    X, y, weights = rng.standard_normal((60, 4)), rng.integers(0, 3, 60), rng.random(60) + 0.1
    model = fastbp.MLP([4, 6, 3], dtype="float64", seed=0)
    loss = fastbp.CrossEntropyLoss(weight=[1.0, 3.0, 0.5])
    from fastbp.lbfgs import FullBatchObjective
    objective = FullBatchObjective(model, loss, X, y, sample_weight=weights)
    value, gradient = objective(model._params.copy())
    net = model.to_torch().double()
    cw = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    losses = torch.nn.functional.cross_entropy(net(torch.tensor(X)), torch.tensor(y), weight=cw, reduction="none")
    expected = (losses * torch.tensor(weights)).sum() / (torch.tensor(weights) * cw[torch.tensor(y)]).sum()
    expected.backward()
    assert value == pytest.approx(float(expected.detach()), rel=1e-12)
    torch_gradient = np.concatenate([p.grad.numpy().ravel() for p in net.parameters()])
    np.testing.assert_allclose(gradient, torch_gradient, rtol=1e-10, atol=1e-12)
    trainer = fastbp.Trainer(model, loss, fastbp.LBFGS(model))
    trainer.fit(X, y, epochs=5, sample_weight=weights)
    assert len(trainer.history.loss) >= 1


def test_balanced_class_weights_are_scikit_learns():
    sklearn_utils = pytest.importorskip("sklearn.utils.class_weight")
    y = np.array([0, 0, 0, 1, 2, 2, 1, 0, 0, 2])
    expected = sklearn_utils.compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(fastbp.class_weights(y, "balanced"), expected, rtol=1e-15)
    np.testing.assert_array_equal(fastbp.class_weights(y, {1: 4.0}), [1.0, 4.0, 1.0])


@pytest.mark.parametrize("weights, match", [
    (lambda n: -np.ones(n), "sample_weight must be >= 0"),
    (lambda n: np.full(n, np.nan), "sample_weight"),
    (lambda n: np.ones(n - 1), "one weight per sample"),
    (lambda n: np.ones((n, 2)), "one weight per sample"),
    (lambda n: np.zeros(n), "positive sum"),
    (lambda n: "heavy", "sample_weight"),
])
def test_bad_sample_weights_are_refused_with_the_model_untouched(weights, match):
    rng = np.random.default_rng(10)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    model = fastbp.MLP([3, 4, 2], seed=0)
    before = model._params.copy()
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model))
    with pytest.raises((ValueError, TypeError), match=match):
        trainer.fit(X, y, epochs=1, sample_weight=weights(20))
    np.testing.assert_array_equal(model._params, before)
    assert trainer.epoch == 0 and trainer.optimizer.step_count == 0


@pytest.mark.parametrize("make, error, match", [
    (lambda: fastbp.CrossEntropyLoss(weight=[1.0, -1.0]), ValueError, "weight must be > 0"),
    (lambda: fastbp.CrossEntropyLoss(weight=[1.0, 0.0]), ValueError, "weight must be > 0"),
    (lambda: fastbp.CrossEntropyLoss(weight=[[1.0, 2.0]]), ValueError, "one weight per class"),
    (lambda: fastbp.class_weights([0, 1, 1], {5: 2.0}), ValueError, "class 5"),
    (lambda: fastbp.class_weights([0, 1, 1], {1: 0.0}), ValueError, r"class_weight\[1\]"),
    (lambda: fastbp.class_weights([0, 2, 2], "balanced", 3), ValueError, "class 1 has no rows"),
    (lambda: fastbp.class_weights([0, 1], "even"), ValueError, "class_weight"),
    (lambda: fastbp.class_weights([0, 1], [1.0, 2.0]), TypeError, "class_weight"),
])
def test_bad_class_weights_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_class_weights_for_the_wrong_number_of_classes_are_refused():
    model = fastbp.MLP([3, 4, 2], seed=0)
    before = model._params.copy()
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(weight=[1.0, 2.0, 3.0]), fastbp.Adam(model))
    with pytest.raises(ValueError, match="3 class weights, but the model has 2 outputs"):
        trainer.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(model._params, before)


def test_the_data_parallel_epoch_weighs_as_the_serial_one():
    import numba

    import kernels
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: no data-parallel epoch")
    rng = np.random.default_rng(11)
    X, y, weights = rng.standard_normal((512, 6)), rng.integers(0, 3, 512), rng.random(512) + 0.1
    loss = fastbp.CrossEntropyLoss(weight=[0.5, 1.0, 2.0])
    outputs = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            model = fastbp.MLP([6, 32, 3], dtype="float64", seed=0)
            assert kernels.data_parallel_chunks(model.n_params, 256, threads) == threads
            fastbp.Trainer(model, loss, fastbp.Adam(model, lr=0.01)).fit(X, y, epochs=2, batch_size=256, seed=0,
                                                                         sample_weight=weights)
            outputs.append(model.predict(X))
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
