"""fastbp.interop.sklearn against sklearn.neural_network: the same parameters, the same
stopping rules, the same fitted attributes, and warm starts that honour
changed parameters."""
import inspect
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import sklearn.neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss  # noqa: E402

import fastbp.interop.sklearn_base  # noqa: E402
from fastbp.interop.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
PAIRS = [(MLPClassifier, sklearn.neural_network.MLPClassifier), (MLPRegressor, sklearn.neural_network.MLPRegressor)]


def blobs(n=120, n_features=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    return X, (X[:, 0] + 0.5 * X[:, 1] + 0.7 * rng.standard_normal(n) > 0).astype(int)


def replay_stopping(sklearn_estimator, values, early_stopping):
    """The epoch at which scikit-learn's own rule stops on ``values`` (training
    losses, or validation scores with early_stopping); None if it never does."""
    scripted = iter(values)
    sklearn_estimator._score = lambda *args, **kwargs: next(scripted)
    sklearn_estimator._no_improvement_count = 0
    sklearn_estimator.loss_curve_, sklearn_estimator.validation_scores_ = [], []
    sklearn_estimator.coefs_, sklearn_estimator.intercepts_ = [], []
    sklearn_estimator.best_loss_, sklearn_estimator.best_validation_score_ = np.inf, -np.inf
    for epoch, value in enumerate(values, start=1):
        if not early_stopping:
            sklearn_estimator.loss_curve_.append(value)
        sklearn_estimator._update_no_improvement_count(early_stopping, None, None, None)
        if sklearn_estimator._no_improvement_count > sklearn_estimator.n_iter_no_change:
            return epoch
    return None


# -- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_every_scikit_learn_parameter_is_accepted_with_its_default(ours, theirs):
    sklearn_params = theirs().get_params()
    # fastbp's own, after scikit-learn's: the dtype, and the classifier's class_weight
    own = {"dtype": None, **({"class_weight": None} if ours is MLPClassifier else {})}
    assert ours().get_params() == {**sklearn_params, **own}
    names = [name for name in inspect.signature(ours).parameters if name not in own]
    assert names == list(inspect.signature(theirs).parameters)  # same order, so positional calls agree
    assert list(inspect.signature(ours).parameters)[-len(own):] == list(own)
    ours(**sklearn_params)  # the TypeError of old: no unknown keyword


@pytest.mark.parametrize("estimator, params, message", [
    (MLPRegressor, {"loss": "absolute_error"}, "MLPRegressor: loss must be one of 'squared_error', 'poisson'"),
    (MLPClassifier, {"learning_rate": "cyclic"}, "MLPClassifier: learning_rate must be one of 'constant', "
                                                 "'invscaling', 'adaptive'"),
    (MLPClassifier, {"power_t": -1.0}, "MLPClassifier: power_t must be"),
    (MLPClassifier, {"max_fun": 0}, "MLPClassifier: max_fun must be >= 1"),
])
def test_values_fastbp_cannot_honour_are_refused_naming_the_estimator(estimator, params, message):
    X, y = blobs(20)
    refused = estimator(**params)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        refused.fit(X, y)
    assert not hasattr(refused, "trainer_")


def test_invscaling_sets_scikit_learns_rate_after_every_epoch():
    X, y = blobs(50)
    params = dict(hidden_layer_sizes=(6,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                  power_t=0.7, batch_size=10, max_iter=3, random_state=0)
    ours = MLPClassifier(**params).fit(X, y)
    theirs = sklearn.neural_network.MLPClassifier(**params).fit(X, y)
    assert ours.t_ == theirs.t_ == 150
    # the rate each epoch trained with: the first at learning_rate_init, then init / (t + 1) ** power_t
    np.testing.assert_allclose(ours.trainer_.history.lr, [0.5, 0.5 / 51 ** 0.7, 0.5 / 101 ** 0.7], rtol=1e-12)
    np.testing.assert_allclose(ours.trainer_.optimizer.lr, theirs._optimizer.learning_rate, rtol=1e-12)


@pytest.mark.parametrize("estimator, theirs", PAIRS)
def test_adaptive_divides_the_rate_by_five_and_stops_where_scikit_learn_does(estimator, theirs):
    X, y = blobs(40)
    # a tol no epoch can beat: every epoch after the first counts as no improvement
    params = dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.01,
                  tol=1e9, n_iter_no_change=2, max_iter=100, random_state=0)
    ours, reference = estimator(**params).fit(X, y), theirs(**params).fit(X, y)
    assert ours.n_iter_ == reference.n_iter_ < 100
    scale = ours._gradient_scale(ours.n_outputs_)
    np.testing.assert_allclose(ours.trainer_.optimizer.lr * scale, reference._optimizer.learning_rate, rtol=1e-12)


# -- n_layers_ ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(100,), (7, 5), ()])
def test_n_layers_counts_input_and_output_layers_as_scikit_learn(hidden):
    X, y = blobs(30)
    ours = MLPClassifier(hidden_layer_sizes=hidden, max_iter=2, random_state=0).fit(X, y)
    theirs = sklearn.neural_network.MLPClassifier(hidden_layer_sizes=hidden, max_iter=2, random_state=0).fit(X, y)
    assert ours.n_layers_ == theirs.n_layers_ == len(ours.coefs_) + 1


def test_n_layers_describes_the_fitted_network_after_set_params():
    X, y = blobs(30)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, warm_start=True, random_state=0).fit(X, y)
    classifier.set_params(hidden_layer_sizes=(5, 5))
    with pytest.raises(ValueError):
        classifier.fit(X, y)
    assert classifier.n_layers_ == len(classifier.coefs_) + 1 == 3


# -- warm_start -----------------------------------------------------------------------------------------------------


def test_warm_start_builds_the_optimizer_from_the_current_parameters():
    X, y = blobs(60)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    before = [W.copy() for W in classifier.coefs_]
    # plain SGD with a negligible rate and no penalty leaves the weights where they are; the old Adam would not
    classifier.set_params(solver="sgd", momentum=0.0, learning_rate_init=1e-300, alpha=0.0, max_iter=2)
    classifier.fit(X, y)
    for W, W_before in zip(classifier.coefs_, before):
        np.testing.assert_array_equal(W, W_before)
    assert classifier.n_iter_ == 2 and len(classifier.loss_curve_) == 7  # n_iter_ counts this call, as scikit-learn


def test_warm_start_with_a_new_activation_trains_and_predicts_with_it():
    X, y = blobs(60)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, random_state=0).fit(X, y)
    classifier.set_params(activation="tanh", max_iter=1).fit(X, y)
    (W1, W2), (b1, b2) = classifier.coefs_, classifier.intercepts_
    logits = np.tanh(X @ W1 + b1) @ W2 + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(classifier.predict_proba(X), probabilities / probabilities.sum(axis=1, keepdims=True),
                               rtol=1e-10)


def test_warm_start_refuses_a_new_architecture_and_keeps_the_model():
    X, y = blobs(60)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, random_state=0).fit(X, y)
    before = classifier.predict_proba(X)
    classifier.set_params(hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match=r"MLPClassifier: hidden_layer_sizes is now \(5,\) but the fitted network has "
                                         r"hidden layers \(8,\); .*warm_start=False"):
        classifier.fit(X, y)
    np.testing.assert_array_equal(classifier.predict_proba(X), before)
    assert classifier.n_iter_ == 3 and len(classifier.loss_curve_) == 3
    classifier.set_params(warm_start=False).fit(X, y)  # a new network of the new shape
    assert [W.shape for W in classifier.coefs_] == [(4, 5), (5, 2)]


# -- stopping and the best epoch --------------------------------------------------------------------------------------


def test_early_stopping_follows_scikit_learns_rule_and_keeps_the_best_scoring_weights(monkeypatch):
    X, y = blobs(300, seed=1)
    splits, split = [], fastbp.interop.sklearn_solvers.train_test_split

    def recording_split(*arrays, **kwargs):
        splits.append(split(*arrays, **kwargs))
        return splits[-1]
    monkeypatch.setattr(fastbp.interop.sklearn_solvers, "train_test_split", recording_split)
    params = dict(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=4, tol=1e-3,
                  learning_rate_init=0.01, max_iter=300, random_state=0)
    classifier = MLPClassifier(**params).fit(X, y)
    assert classifier.n_iter_ < 300 and len(classifier.validation_scores_) == classifier.n_iter_
    reference = sklearn.neural_network.MLPClassifier(**params)
    assert replay_stopping(reference, classifier.validation_scores_, early_stopping=True) == classifier.n_iter_
    assert classifier.best_validation_score_ == max(classifier.validation_scores_)
    assert classifier.best_loss_ is None
    (_, X_val, _, labels_val), = splits
    # the weights kept are those of the epoch that scored best_validation_score_
    assert accuracy_score(labels_val, np.argmax(classifier.model_.predict(X_val), axis=1)) == \
        classifier.best_validation_score_


def test_without_early_stopping_the_training_loss_rule_is_scikit_learns():
    X, y = blobs(200, seed=2)
    params = dict(hidden_layer_sizes=(16,), n_iter_no_change=3, tol=1e-3, learning_rate_init=0.01, max_iter=500,
                  random_state=0)
    classifier = MLPClassifier(**params).fit(X, y)
    reference = sklearn.neural_network.MLPClassifier(**params)
    assert replay_stopping(reference, classifier.loss_curve_, early_stopping=False) == classifier.n_iter_ < 500
    assert classifier.best_loss_ == min(classifier.loss_curve_)
    assert classifier.validation_scores_ is None and classifier.best_validation_score_ is None


def test_early_stopping_on_digits_stops_as_early_as_scikit_learn():
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import MinMaxScaler

    X, y = load_digits(return_X_y=True)
    X = MinMaxScaler().fit_transform(X)
    params = dict(hidden_layer_sizes=(64,), early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X, y)
        theirs = sklearn.neural_network.MLPClassifier(**params).fit(X, y)
    # The initialisation (torch's) and shuffling streams differ from scikit-learn's, so the epochs cannot agree
    # exactly (the rule itself is checked exactly above); both must stop well short of max_iter, within a factor
    # of two of each other (random_state 0-3: scikit-learn 33-60 epochs, fastbp 38-77). The validation sets
    # (180 digits each) differ too: 0.05 is 9 digits.
    assert ours.n_iter_ < 200 and theirs.n_iter_ / 2 <= ours.n_iter_ <= 2 * theirs.n_iter_
    assert ours.best_validation_score_ > theirs.best_validation_score_ - 0.05


# -- loss_curve_ ----------------------------------------------------------------------------------------------------


def test_loss_curve_holds_scikit_learns_loss_with_the_l2_term():
    X, y = blobs(80)
    alpha = 3.0
    classifier = MLPClassifier(hidden_layer_sizes=(6,), alpha=alpha, batch_size=80, max_iter=1, shuffle=False,
                               random_state=0).fit(X, y)
    # one batch per epoch: epoch 2's loss is taken at the weights epoch 1 ended with
    coefs, probabilities = classifier.coefs_, classifier.predict_proba(X)
    classifier.partial_fit(X, y)
    expected = log_loss(y, probabilities) + 0.5 * alpha * sum(np.sum(W ** 2) for W in coefs) / len(X)
    np.testing.assert_allclose(classifier.loss_curve_[1], expected, rtol=1e-10)
    assert classifier.loss_ == classifier.loss_curve_[-1]


def test_regressor_loss_curve_is_half_the_mean_squared_error_as_scikit_learn():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 3))
    Y = np.c_[X[:, 0], X[:, 1] - X[:, 2]]
    regressor = MLPRegressor(hidden_layer_sizes=(5,), alpha=0.0, batch_size=50, max_iter=1, random_state=0).fit(X, Y)
    predictions = regressor.predict(X)
    regressor.partial_fit(X, Y)
    np.testing.assert_allclose(regressor.loss_curve_[1], np.mean((predictions - Y) ** 2) / 2, rtol=1e-10)


# -- initialisation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_the_same_random_state_learns_as_fast_as_scikit_learn(activation):
    """scikit-learn's initial weights, from the same stream: one full batch an
    epoch, so the scores after 30 epochs agree (but for the bias decay and
    Adam's epsilon)."""
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=200, n_features=10, n_informative=1, noise=20, random_state=42)
    X, y = (X - X.mean(axis=0)) / X.std(axis=0), (y - y.mean()) / y.std()
    for seed in range(3):
        params = dict(activation=activation, max_iter=30, random_state=seed)
        ours = MLPRegressor(**params).fit(X, y).score(X, y)
        theirs = sklearn.neural_network.MLPRegressor(**params).fit(X, y).score(X, y)
        assert ours == pytest.approx(theirs, abs=1e-3), f"random_state={seed}"


# -- alpha ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("estimator, theirs", PAIRS)
def test_alpha_and_learning_rate_mean_what_they_mean_in_scikit_learn(estimator, theirs, weighted):
    """One full-batch SGD step from the same weights lands where scikit-learn's does."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40) if estimator is MLPClassifier else np.c_[X[:, 0] * X[:, 1], X[:, 2], -X[:, 0]]
    weights = {"sample_weight": rng.random(40) * 3 + 0.1} if weighted else {}
    params = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, alpha=2.0, learning_rate_init=0.1,
                  batch_size=40, max_iter=1, shuffle=False, random_state=0)
    ours = estimator(**params).fit(X, y, **weights)
    reference = theirs(**params)
    reference.partial_fit(X, y, **weights, **({"classes": [0, 1, 2]} if estimator is MLPClassifier else {}))
    # start scikit-learn from fastbp's weights after its first epoch, then take one step each
    reference.coefs_[:] = [W.copy() for W in ours.coefs_]
    reference.intercepts_[:] = [b.copy() for b in ours.intercepts_]
    reference._optimizer.velocities = [np.zeros_like(p) for p in reference.coefs_ + reference.intercepts_]
    ours.partial_fit(X, y, **weights)
    reference.partial_fit(X, y, **weights)
    for W, W_reference in zip(ours.coefs_, reference.coefs_):
        np.testing.assert_allclose(W, W_reference, rtol=1e-12, atol=1e-13)
    # biases: scikit-learn leaves them out of the penalty, fastbp's optimizers decay every parameter by
    # alpha / batch_size * learning_rate_init per step, here 5e-3 of the bias
    for b, b_reference in zip(ours.intercepts_, reference.intercepts_):
        np.testing.assert_allclose(b, b_reference, rtol=0, atol=6e-3 * np.abs(b).max() + 1e-13)


# -- shapes ---------------------------------------------------------------------------------------------------------


def test_regressor_fitted_on_a_column_predicts_a_vector_as_scikit_learn():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 2))
    column = X[:, :1] * 2.0
    with pytest.warns(sklearn.exceptions.DataConversionWarning):
        ours = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, column)
    theirs = sklearn.neural_network.MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, column)
    assert ours.predict(X).shape == theirs.predict(X).shape == (30,)
    assert ours.n_outputs_ == theirs.n_outputs_ == 1
