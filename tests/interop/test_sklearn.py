"""fastbp.interop.sklearn: scikit-learn's own estimator checks, and the estimators in
Pipeline, GridSearchCV and cross_val_score."""
import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.interop.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# max_iter is kept short on purpose in these tests
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Checks expected to fail, each with its reason (scikit-learn's mechanism for
# listing them; a listed check that passes is reported as xpass, not hidden).
EXPECTED_FAILURES = {}


@parametrize_with_checks([MLPClassifier(max_iter=100, random_state=0), MLPRegressor(max_iter=100, random_state=0),
                          MLPClassifier(solver="lbfgs", max_iter=100, random_state=0),
                          MLPRegressor(solver="lbfgs", max_iter=100, random_state=0)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILURES)
def test_scikit_learn_checks(estimator, check):
    check(estimator)

@pytest.mark.parametrize("readonly_memmap", [False, True])
def test_regressor_learns_as_fast_as_scikit_learns_in_check_regressors_train(readonly_memmap):
    # scikit-learn's own MLPRegressor passes this check with max_iter=30
    from sklearn.utils.estimator_checks import check_regressors_train

    check_regressors_train("MLPRegressor", MLPRegressor(max_iter=30, random_state=0), readonly_memmap=readonly_memmap)


# parametrize_with_checks skips two of its checks here, by its own rules:
# check_array_api_input runs only with SCIPY_ARRAY_API=1 and an array library
# (the estimators take NumPy arrays); the pandas checks run only when pandas
# is installed (it is, through the test extra).


def test_pipeline_grid_search_and_cross_validation_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from sklearn.neural_network import MLPClassifier as ScikitLearnMLP

    X, y = load_digits(return_X_y=True)
    scores = {}
    for estimator in (MLPClassifier, ScikitLearnMLP):
        pipeline = make_pipeline(MinMaxScaler(), estimator(hidden_layer_sizes=(64,), max_iter=100, random_state=0))
        scores[estimator] = cross_val_score(pipeline, X, y, cv=3)
    # about as good as scikit-learn's own MLP with the same settings
    assert scores[MLPClassifier].min() > 0.9 and scores[MLPClassifier].mean() > scores[ScikitLearnMLP].mean() - 0.02
    pipeline = make_pipeline(MinMaxScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0))
    search = GridSearchCV(pipeline, {"mlpclassifier__alpha": [1e-4, 1e-2],
                                     "mlpclassifier__solver": ["adam", "sgd"]}, cv=2)
    search.fit(X, y)
    assert search.best_score_ > 0.9 and set(search.best_params_) == {"mlpclassifier__alpha",
                                                                      "mlpclassifier__solver"}


def test_regressor_on_diabetes_and_multi_output():
    from sklearn.datasets import load_diabetes
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y_scaled = (y - y.mean()) / y.std()
    regressor = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X[:350], y_scaled[:350])
    assert regressor.score(X[350:], y_scaled[350:]) > 0.3
    assert regressor.predict(X[:3]).shape == (3,) and regressor.n_iter_ == len(regressor.loss_curve_)
    both = MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, np.c_[y_scaled, -y_scaled])
    assert both.predict(X[:4]).shape == (4, 2)


def test_string_labels_early_stopping_and_fitted_attributes():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    classifier = MLPClassifier(hidden_layer_sizes=(16, 8), early_stopping=True, n_iter_no_change=5, max_iter=500,
                               learning_rate_init=0.01, random_state=0).fit(X, y)
    assert list(classifier.classes_) == ["no", "yes"] and set(classifier.predict(X)) <= {"no", "yes"}
    assert classifier.n_iter_ < 500 and len(classifier.validation_scores_) == classifier.n_iter_
    assert classifier.best_validation_score_ == max(classifier.validation_scores_)
    assert [c.shape for c in classifier.coefs_] == [(4, 16), (16, 8), (8, 2)]
    assert [b.shape for b in classifier.intercepts_] == [(16,), (8,), (2,)]
    np.testing.assert_allclose(classifier.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)
    assert classifier.score(X, y) > 0.9


def test_partial_fit_runs_one_epoch_per_call():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((120, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        classifier.partial_fit(X, y)
    for _ in range(3):
        classifier.partial_fit(X[:60], y[:60], classes=[0, 1, 2])
    # as scikit-learn: n_iter_ counts the last call's epochs, loss_curve_ and t_ every epoch
    assert classifier.n_iter_ == 1 and len(classifier.loss_curve_) == 3 and classifier.t_ == 180
    assert classifier.loss_curve_[-1] < classifier.loss_curve_[0]
    with pytest.raises(ValueError, match="X has 2 features, but MLPClassifier is expecting 3"):
        classifier.partial_fit(X[:, :2], y)


def test_fitted_model_exports_to_torch_and_survives_pickle():
    import pickle
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((80, 5)), rng.integers(0, 3, size=80)
    classifier = MLPClassifier(hidden_layer_sizes=(12,), activation="tanh", max_iter=20, random_state=0).fit(X, y)
    with torch.no_grad():
        logits = classifier.model_.to_torch()(torch.tensor(X)).numpy()
    np.testing.assert_allclose(torch.softmax(torch.tensor(logits), 1).numpy(), classifier.predict_proba(X),
                               rtol=1e-12)
    copy = pickle.loads(pickle.dumps(classifier))
    np.testing.assert_array_equal(copy.predict_proba(X), classifier.predict_proba(X))
    copy.partial_fit(X, y)  # the copy trains on: its optimizer still drives its own model
    assert not np.array_equal(copy.predict_proba(X), classifier.predict_proba(X))


def test_bad_parameters_are_reported_at_fit():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    for params, message in [({"hidden_layer_sizes": (0,)}, r"hidden_layer_sizes\[0\] must be >= 1"),
                            ({"solver": "newton"},
                             "MLPClassifier: solver must be one of 'lbfgs', 'sgd', 'adam', 'adamw', 'rmsprop'"),
                            ({"max_iter": 0}, "max_iter must be >= 1"),
                            ({"validation_fraction": 1.0}, "validation_fraction must be a finite number")]:
        with pytest.raises((ValueError, TypeError), match=message):
            MLPClassifier(**params).fit(X, y)


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_float32_input_trains_and_predicts_in_float32_as_scikit_learn(estimator):
    from sklearn import neural_network

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    y = (X.sum(axis=1) > 0).astype(int) if estimator is MLPClassifier else X.sum(axis=1)
    ours = estimator(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    theirs = getattr(neural_network, estimator.__name__)(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with pytest.warns(Warning):  # scikit-learn's ConvergenceWarning after 3 iterations
        theirs.fit(X, y)
    answer = "predict_proba" if estimator is MLPClassifier else "predict"
    for fitted in (ours, theirs):
        assert fitted.coefs_[0].dtype == np.float32 and fitted.intercepts_[0].dtype == np.float32
        assert getattr(fitted, answer)(X).dtype == np.float32
        # float64 X times float32 weights answers in float64
        assert getattr(fitted, answer)(X.astype(np.float64)).dtype == np.float64
    # partial_fit goes on in the fitted dtype; float64 X, or dtype given, trains in float64
    ours.partial_fit(X.astype(np.float64), y)
    assert ours.coefs_[0].dtype == np.float32
    assert estimator(hidden_layer_sizes=(5,), max_iter=3).fit(X.astype(np.float64), y).coefs_[0].dtype == np.float64
    assert estimator(hidden_layer_sizes=(5,), max_iter=3, dtype="float64").fit(X, y).coefs_[0].dtype == np.float64
