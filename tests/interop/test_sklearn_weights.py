"""class_weight and sample_weight on the scikit-learn estimators, with
scikit-learn's definitions."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402

from fastbp.interop.sklearn import MLPClassifier  # noqa: E402


def _fit(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(*args, **kwargs)


def _unbalanced():
    X, y = load_iris(return_X_y=True)
    keep = np.r_[0:50, 50:70, 100:110]
    return X[keep], np.array(["setosa", "versicolor", "virginica"])[y[keep]]


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_balanced_class_weight_is_scikit_learns_balanced_sample_weight(solver):
    X, y = _unbalanced()
    params = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=15, random_state=0)
    sample_weight = np.linspace(0.5, 2.0, len(y))
    balanced = _fit(MLPClassifier(**params, class_weight="balanced"), X, y, sample_weight=sample_weight)
    weighted = _fit(MLPClassifier(**params), X, y,
                    sample_weight=sample_weight * compute_sample_weight("balanced", y))
    for W, W_weighted in zip(balanced.coefs_, weighted.coefs_):
        np.testing.assert_array_equal(W, W_weighted)
    unweighted = _fit(MLPClassifier(**params), X, y)
    assert not np.array_equal(balanced.coefs_[0], unweighted.coefs_[0])


def test_a_class_weight_dict_names_labels_and_weighs_the_others_one():
    X, y = _unbalanced()
    params = dict(hidden_layer_sizes=(6,), max_iter=10, random_state=0)
    ours = _fit(MLPClassifier(**params, class_weight={"virginica": 4.0}), X, y)
    expected = _fit(MLPClassifier(**params), X, y, sample_weight=np.where(y == "virginica", 4.0, 1.0))
    np.testing.assert_array_equal(ours.coefs_[0], expected.coefs_[0])


@pytest.mark.parametrize("class_weight, fit, message", [
    ({"rose": 2.0}, "fit", r"class_weight names \['rose'\], which are not classes"),
    ("even", "fit", "class_weight"),
    ([1.0, 2.0, 3.0], "fit", "class_weight must be None, 'balanced' or a dict"),
    ("balanced", "partial_fit", "class_weight='balanced' needs the whole of y"),
    ("balanced", "multilabel", "class_weight is for one label per sample"),
])
def test_bad_class_weights_are_refused(class_weight, fit, message):
    X, y = _unbalanced()
    estimator = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, class_weight=class_weight)
    with pytest.raises((ValueError, TypeError), match=message):
        if fit == "partial_fit":
            estimator.partial_fit(X, y, classes=np.unique(y))
        elif fit == "multilabel":
            estimator.fit(X, np.c_[y == "setosa", y == "virginica"].astype(int))
        else:
            estimator.fit(X, y)
    assert not hasattr(estimator, "trainer_") or fit == "multilabel"


def test_partial_fit_takes_sample_weight_as_scikit_learns():
    X, y = _unbalanced()
    weights = np.linspace(0.1, 3.0, len(y))
    ours = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", random_state=0, shuffle=False)
    ours.partial_fit(X, y, weights, classes=np.unique(y))
    again = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", random_state=0, shuffle=False)
    again.partial_fit(X, y, classes=np.unique(y))
    assert not np.array_equal(ours.coefs_[0], again.coefs_[0])
