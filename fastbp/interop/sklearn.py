"""scikit-learn estimators: a fastbp MLP, trained by the compiled kernels,
behind sklearn.neural_network's MLPClassifier / MLPRegressor interface, so
that it drops into Pipeline, GridSearchCV and cross_val_score.

Example:
    >>> from fastbp.interop.sklearn import MLPClassifier
    >>> from sklearn.model_selection import cross_val_score
    >>> cross_val_score(MLPClassifier(hidden_layer_sizes=(64,), random_state=0), X, y, cv=5)
"""
import numpy as np

# sklearn_base first: it says how to install scikit-learn when it is missing
from fastbp.interop.sklearn_base import LEARNING_RATES, SOLVERS, _BaseMLP, _naming  # noqa: F401
from fastbp._checks import as_choice
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: softmax outputs, cross-entropy loss.

    See _BaseMLP for the parameters. Fitted attributes, as scikit-learn's:
    ``classes_``, ``loss_``, ``loss_curve_``, ``n_iter_`` (epochs of the last
    call), ``t_``, ``best_loss_`` (None with early_stopping),
    ``validation_scores_`` and ``best_validation_score_`` (None without),
    ``coefs_``, ``intercepts_``, ``n_layers_``, ``n_outputs_``,
    ``n_features_in_``; and ``model_``, the fastbp.MLP.
    """

    _loss = "cross_entropy"
    _validation_kwargs = {}
    _y_dtype = None  # labels may be strings

    def _n_units(self):
        return len(self.classes_)

    def _targets(self, y, new, classes, warm):
        y = column_or_1d(y, warn=True)
        _naming("y", check_classification_targets, y)
        if new:
            labels = np.unique(y if classes is None else np.concatenate([np.asarray(classes), y]))
            if classes is not None and len(np.unique(classes)) != len(labels):
                raise ValueError(f"y holds labels {sorted(set(np.unique(y)) - set(classes))} that are not in "
                                 f"classes={list(classes)}")
            if len(labels) < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least two classes to train; "
                                 f"y has only one class ({labels[0]})")
            self.classes_ = labels
        elif warm and not np.array_equal(np.unique(y), self.classes_):
            raise ValueError(f"{type(self).__name__}: warm_start needs y to hold the classes of the previous fit, "
                             f"{list(self.classes_)}; y holds {list(np.unique(y))}. Set warm_start=False to "
                             "train anew on these classes.")
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels {list(unseen)} that are not in classes_ {list(self.classes_)}")
        return np.searchsorted(self.classes_, y)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); the first call needs ``classes``, every
        label that will ever appear."""
        first = not hasattr(self, "trainer_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if type_of_target(y) == "multilabel-indicator":
            raise ValueError(f"y must hold one label per sample, got multilabel targets of shape {np.shape(y)}, "
                             "which are not supported; for one-hot rows pass y.argmax(axis=1)")
        return self._fit(X, y, incremental=True, classes=np.unique(classes) if first else None)

    def predict_proba(self, X):
        """Softmax of the outputs, (n_samples, n_classes)."""
        outputs = self._outputs(X)
        logits = outputs.astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(outputs.dtype, copy=False)

    def predict_log_proba(self, X):
        outputs = self._outputs(X)
        logits = outputs.astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(outputs.dtype, copy=False)

    def predict(self, X):
        outputs = self._outputs(X)
        return self.classes_[np.argmax(outputs, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y."""
        return self._score(accuracy_score, X, y, sample_weight)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: identity outputs, squared-error loss.

    See _BaseMLP for the parameters; ``loss`` comes first, as in scikit-learn,
    and only "squared_error" is supported. y may have several columns; a
    single column gives predictions of shape (n_samples,), as scikit-learn.

    scikit-learn's loss is ``mean((pred - y)**2) / 2`` with the gradient
    ``(pred - y) / batch`` per output; fastbp trains on the mean squared error,
    whose gradient is ``2 / n_outputs`` times that: the optimizer's rate or
    epsilon and its L2 term are scaled so that each step is scikit-learn's,
    and ``loss_curve_`` reports scikit-learn's loss.
    """

    _loss = "mse"
    _validation_kwargs = {"y_numeric": True, "multi_output": True}
    _y_dtype = np.float64

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=None):
        self.loss = loss
        shared = dict(locals())
        del shared["self"], shared["loss"], shared["__class__"]
        super().__init__(**shared)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _checked_params(self):
        params = super()._checked_params()
        as_choice("loss", self.loss, ("squared_error",))
        return params

    def _gradient_scale(self, n_outputs):
        return 2.0 / n_outputs

    def _data_loss(self, loss):
        return loss / 2

    def _n_units(self):
        return self._n_targets

    def _targets(self, y, new, classes, warm):
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if new:
            self._n_targets = 1 if y.ndim == 1 else y.shape[1]
        y = y.reshape(len(y), -1)
        if y.shape[1] != self._n_targets:
            raise ValueError(f"y has {y.shape[1]} targets, but {type(self).__name__} was fitted with "
                             f"{self._n_targets}")
        return y

    def partial_fit(self, X, y):
        """One epoch over (X, y), going on from the previous call."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        outputs = self._outputs(X)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def score(self, X, y, sample_weight=None):
        """R² of predict(X) against y."""
        return self._score(r2_score, X, y, sample_weight)
