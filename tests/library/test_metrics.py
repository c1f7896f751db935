"""Every metric against scikit-learn's own, weighted and not; the Trainer's
metric, its monitoring of it and its restoring of the best epoch."""
import numpy as np
import pytest

import fastbp
from fastbp import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
datasets = pytest.importorskip("sklearn.datasets")


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _classification(n_classes, n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    logits = rng.standard_normal((n, n_classes)) + 1.5 * np.eye(n_classes)[labels]
    logits[:20] = np.round(logits[:20])  # ties among the scores
    return logits, labels, rng.uniform(0.1, 2.0, n)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_classification_metrics_are_scikit_learns(n_classes, weighted):
    logits, labels, w = _classification(n_classes)
    w = w if weighted else None
    loss = fastbp.CrossEntropyLoss()
    p = _softmax(logits)
    predicted = logits.argmax(axis=1)
    expected = {
        "accuracy": sklearn_metrics.accuracy_score(labels, predicted, sample_weight=w),
        "balanced_accuracy": sklearn_metrics.balanced_accuracy_score(labels, predicted, sample_weight=w),
        "log_loss": sklearn_metrics.log_loss(labels, p, sample_weight=w),
        "auc": sklearn_metrics.roc_auc_score(labels, p[:, 1] if n_classes == 2 else p, multi_class="ovr",
                                             sample_weight=w),
        "f1": sklearn_metrics.f1_score(labels, predicted, average="binary" if n_classes == 2 else "macro",
                                       sample_weight=w),
    }
    for name, value in expected.items():
        assert metrics.score(loss, logits, np.zeros((0, 0)), labels, w, name) == pytest.approx(value, rel=1e-12), name
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(labels, predicted,
                                                                                     sample_weight=w)
    np.testing.assert_allclose(np.array(metrics.per_class(logits, labels, w)).T, [precision, recall, f1, support],
                               rtol=1e-12)


def test_binary_logits_are_scored_per_output():
    rng = np.random.default_rng(1)
    targets = (rng.uniform(size=(200, 1)) < 0.4).astype(float)
    logits = rng.standard_normal((200, 1)) + 2 * targets - 1
    loss = fastbp.BCEWithLogitsLoss()
    p = 1 / (1 + np.exp(-logits[:, 0]))
    truth, predicted = targets[:, 0] > 0.5, logits[:, 0] > 0
    assert metrics.score(loss, logits, targets, None, None, "auc") == pytest.approx(
        sklearn_metrics.roc_auc_score(truth, p), rel=1e-12)
    assert metrics.score(loss, logits, targets, None, None, "log_loss") == pytest.approx(
        sklearn_metrics.log_loss(truth, p), rel=1e-9)
    assert metrics.score(loss, logits, targets, None, None, "f1") == pytest.approx(
        sklearn_metrics.f1_score(truth, predicted), rel=1e-12)
    assert metrics.score(loss, logits, targets, None, None, "balanced_accuracy") == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(truth, predicted), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_regression_metrics_are_scikit_learns(weighted):
    rng = np.random.default_rng(2)
    targets = rng.standard_normal((150, 2)) * [1.0, 10.0]
    outputs = targets + rng.standard_normal((150, 2))
    w = rng.uniform(0.1, 2.0, 150) if weighted else None
    loss = fastbp.MSELoss()
    for name, reference in [("r2", sklearn_metrics.r2_score), ("rmse", sklearn_metrics.root_mean_squared_error),
                            ("mae", sklearn_metrics.mean_absolute_error)]:
        assert metrics.score(loss, outputs, targets, None, w, name) == pytest.approx(
            reference(targets, outputs, sample_weight=w), rel=1e-12), name


def test_a_metric_of_the_other_task_is_refused_by_name():
    model = fastbp.MLP([4, 8, 3], seed=0)
    with pytest.raises(ValueError, match="metric must be one of accuracy, .* for the cross_entropy loss, got 'rmse'"):
        fastbp.Trainer(model, "cross_entropy", fastbp.SGD(model), metric="rmse")
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.SGD(model), metric="auc")
    assert trainer.metric == trainer.history.metric == "auc"
    with pytest.raises(ValueError, match="metric must be one of"):
        trainer.score(np.zeros((4, 4)), np.arange(4) % 3, metric="r2")


def _breast_cancer():
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y


def _trainer(metric="accuracy"):
    model = fastbp.MLP([30, 64, 2], seed=0, dtype=np.float64)
    return fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model, lr=0.01), metric=metric)


def test_monitoring_the_metric_restores_its_best_epoch():
    X, y = _breast_cancer()
    val = (X[450:], y[450:])
    trainer = _trainer("log_loss")
    history = trainer.fit(X[:450], y[:450], epochs=15, batch_size=32, seed=0, validation_data=val,
                          monitor="metric", restore_best=True)
    best = int(np.argmin(history.val_metric)) + 1
    assert trainer.best_epoch == best
    assert trainer.score(*val) == pytest.approx(history.val_metric[best - 1], rel=1e-12)
    # the last epoch's weights are where the next fit goes on from
    again = _trainer("log_loss")
    again.fit(X[:450], y[:450], epochs=15, batch_size=32, seed=0, validation_data=val)
    assert again.best_epoch == int(np.argmin(history.val_loss)) + 1  # restore_best None: the last epoch is kept
    assert again.score(*val) == pytest.approx(history.val_metric[-1], rel=1e-12)


def test_a_tie_of_the_metric_goes_to_the_lower_validation_loss():
    X, y = _breast_cancer()
    val = (X[450:], y[450:])
    trainer = _trainer()
    history = trainer.fit(X[:450], y[:450], epochs=12, batch_size=32, seed=0, validation_data=val,
                          monitor="metric", restore_best=True)
    top = max(history.val_metric)
    ties = [i for i, value in enumerate(history.val_metric) if value == top]
    assert trainer.best_epoch == history.epoch[min(ties, key=lambda i: history.val_loss[i])]


def test_early_stopping_on_the_metric_survives_a_checkpoint(tmp_path):
    X, y = _breast_cancer()
    val = (X[450:], y[450:])
    whole = _trainer("auc")
    whole.fit(X[:450], y[:450], epochs=10, batch_size=32, seed=0, validation_data=val, monitor="metric",
              early_stopping=3)
    split = _trainer("auc")
    split.fit(X[:450], y[:450], epochs=4, batch_size=32, seed=0, validation_data=val, monitor="metric",
              early_stopping=3)
    split.save(tmp_path / "run.npz")
    resumed = fastbp.Trainer.load(tmp_path / "run.npz")
    assert resumed.metric == "auc" and resumed._best == split._best and len(resumed._best) == 3
    resumed.fit(X[:450], y[:450], epochs=6, batch_size=32, validation_data=val, monitor="metric", early_stopping=3)
    assert resumed.best_epoch == whole.best_epoch and resumed.epoch == whole.epoch
    np.testing.assert_array_equal(resumed.model.predict(X), whole.model.predict(X))


def test_monitoring_the_metric_needs_validation_data():
    X, y = _breast_cancer()
    trainer = _trainer()
    with pytest.raises(ValueError, match="monitor='metric' watches the validation metric"):
        trainer.fit(X, y, epochs=1, monitor="metric")
    with pytest.raises(ValueError, match="monitor must be one of"):
        trainer.fit(X, y, epochs=1, monitor="accuracy")
    assert trainer.epoch == 0
