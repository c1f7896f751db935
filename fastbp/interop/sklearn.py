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
from fastbp.losses import class_weights
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: softmax outputs, cross-entropy loss;
    for multilabel ``y`` (an (n_samples, n_labels) indicator matrix), one
    sigmoid output per label with binary cross-entropy, as scikit-learn.

    See _BaseMLP for the parameters. Fitted attributes, as scikit-learn's:
    ``classes_``, ``loss_``, ``loss_curve_``, ``n_iter_`` (epochs of the last
    call), ``t_``, ``best_loss_`` (None with early_stopping),
    ``validation_scores_`` and ``best_validation_score_`` (None without),
    ``coefs_``, ``intercepts_``, ``n_layers_``, ``n_outputs_``,
    ``n_features_in_``; and ``model_``, the fastbp.MLP.

    ``class_weight`` (beyond scikit-learn's MLP, as its other classifiers
    take it): None, "balanced" (class ``c`` weighs ``n / (n_classes *
    count_c)`` over the y of ``fit``) or a dict ``{label: weight}`` (other
    classes weigh 1); each row's weight is its class's times its
    ``sample_weight``. Not for multilabel y; "balanced" not with
    ``partial_fit``, which never sees the whole of y.
    """

    _validation_kwargs = {"multi_output": True}
    _y_dtype = None  # labels may be strings

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=None, class_weight=None):
        self.class_weight = class_weight
        shared = dict(locals())
        del shared["self"], shared["class_weight"], shared["__class__"]
        super().__init__(**shared)

    def _class_weights(self, y, targets, incremental):
        if self.class_weight is None:
            return None
        name = type(self).__name__
        if self._multilabel:
            raise ValueError(f"{name}: class_weight is for one label per sample; y is multilabel")
        if isinstance(self.class_weight, str):
            as_choice("class_weight", self.class_weight, ("balanced",))
            if incremental:
                raise ValueError(f"{name}: class_weight='balanced' needs the whole of y, which partial_fit never "
                                 "sees; pass a dict {label: weight}, or call fit")
            weights = class_weights(targets, "balanced", len(self.classes_))
        elif isinstance(self.class_weight, dict):
            unknown = [label for label in self.class_weight if label not in self.classes_]
            if unknown:
                raise ValueError(f"{name}: class_weight names {unknown}, which are not classes of y "
                                 f"{list(self.classes_)}")
            weights = class_weights(targets, {int(np.searchsorted(self.classes_, label)): weight
                                              for label, weight in self.class_weight.items()}, len(self.classes_))
        else:
            raise TypeError(f"{name}: class_weight must be None, 'balanced' or a dict {{label: weight}}, got "
                            f"{type(self.class_weight).__name__}")
        return weights[targets]

    @property
    def _loss(self):
        return "bce_with_logits" if getattr(self, "_multilabel", False) else "cross_entropy"

    def _n_units(self):
        return len(self.classes_)

    def _gradient_scale(self, n_outputs):
        # scikit-learn's multilabel loss sums over the labels; fastbp's mean takes their mean
        return 1.0 / n_outputs if self._multilabel else 1.0

    def _data_loss(self, loss):
        return loss * self.n_outputs_ if self._multilabel else loss

    def _targets(self, y, new, classes, warm):
        multilabel = type_of_target(y) == "multilabel-indicator"
        if new:
            self._multilabel = multilabel
        elif multilabel != self._multilabel:
            raise ValueError(f"y is {'multilabel' if multilabel else 'one label per sample'}, but "
                             f"{type(self).__name__} was fitted on {'multilabel' if self._multilabel else 'single'}"
                             " targets")
        if multilabel:
            return self._multilabel_targets(y, new, classes)
        y = column_or_1d(y, warn=True)
        _naming("y", check_classification_targets, y)
        if new:
            labels = np.unique(y if classes is None else np.concatenate([np.asarray(classes), y]))
            if classes is not None and len(np.unique(classes)) != len(labels):
                raise ValueError(f"y holds labels {sorted(set(np.unique(y)) - set(classes))} that are not in "
                                 f"classes={list(classes)}")
            # one class, as scikit-learn allows, is one output that always wins
            self.classes_ = labels
        elif warm and not np.array_equal(np.unique(y), self.classes_):
            raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous call "
                             f"to fit. Previously got {self.classes_}, `y` has {np.unique(y)}. Set "
                             "warm_start=False to train anew on these classes.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={list(np.unique(classes))}` is not the same as on the first call to "
                             f"partial_fit, which was {list(self.classes_)}")
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels {list(unseen)} that are not in classes_ {list(self.classes_)}")
        return np.searchsorted(self.classes_, y)

    def _multilabel_targets(self, y, new, classes):
        y = np.asarray(y.toarray() if hasattr(y, "toarray") else y)
        if new:
            self.classes_ = np.arange(y.shape[1]) if classes is None else np.unique(classes)
        if y.shape[1] != len(self.classes_):
            raise ValueError(f"y has {y.shape[1]} labels per sample, but classes_ holds {len(self.classes_)}")
        return y.astype(np.float64)

    def _indicator_targets(self, y):
        """Targets for ``_loss_grad_lbfgs`` from y as scikit-learn's label
        binarizer gives it (or as fit takes it)."""
        y = np.asarray(y)
        if self._multilabel:
            return y.astype(np.float64)
        if y.ndim == 2:
            return (y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1)).astype(np.int64)
        return np.searchsorted(self.classes_, y)

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), weighted by ``sample_weight`` if given; the
        first call needs ``classes``, every label that will ever appear (for
        multilabel y, one per column)."""
        first = not hasattr(self, "trainer_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, incremental=True, classes=np.unique(classes) if classes is not None else None,
                         sample_weight=sample_weight)

    def predict_proba(self, X):
        """Softmax of the outputs, (n_samples, n_classes); for multilabel, the
        sigmoid of each output."""
        outputs = self._outputs(X)
        logits = outputs.astype(np.float64)
        if self._multilabel:
            return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(outputs.dtype, copy=False)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(outputs.dtype, copy=False)

    def predict_log_proba(self, X):
        if getattr(self, "_multilabel", False):  # as scikit-learn: ties of saturated probabilities stay ties
            with np.errstate(divide="ignore"):
                return np.log(self.predict_proba(X))
        outputs = self._outputs(X)
        logits = outputs.astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(outputs.dtype, copy=False)

    def predict(self, X):
        outputs = self._outputs(X)
        if self._multilabel:
            return (outputs > 0).astype(np.int64)
        return self.classes_[np.argmax(outputs, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y."""
        return self._score(accuracy_score, X, y, sample_weight)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: identity outputs, squared-error loss,
    or with ``loss="poisson"`` the log of the rate (predictions ``exp`` of the
    outputs) and the Poisson loss, as scikit-learn.

    See _BaseMLP for the parameters; ``loss`` comes first, as in scikit-learn.
    y may have several columns; a single column gives predictions of shape
    (n_samples,), as scikit-learn.

    scikit-learn's loss is ``mean((pred - y)**2) / 2`` with the gradient
    ``(pred - y) / batch`` per output; fastbp trains on the mean squared error,
    whose gradient is ``2 / n_outputs`` times that: the optimizer's rate or
    epsilon and its L2 term are scaled so that each step is scikit-learn's,
    and ``loss_curve_`` reports scikit-learn's loss. The Poisson loss is
    torch's ``PoissonNLLLoss``, scikit-learn's less a constant of the data,
    which its reported loss adds back.
    """

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

    @property
    def _loss(self):
        return "poisson_nll" if self.loss == "poisson" else "mse"

    def _checked_params(self):
        params = super()._checked_params()
        as_choice("loss", self.loss, ("squared_error", "poisson"))
        return params

    def _gradient_scale(self, n_outputs):
        return (1.0 if self.loss == "poisson" else 2.0) / n_outputs

    def _data_loss(self, loss):
        if self.loss == "poisson":
            return loss * self._n_targets + self._data_loss_offset()
        return loss / 2

    def _data_loss_offset(self):
        return self._poisson_offset if self.loss == "poisson" else 0.0

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
        if self.loss == "poisson":
            if (y < 0).any():
                raise ValueError(f"y must be >= 0 for loss='poisson' (counts or rates), got {y.min()}")
            # scikit-learn's loss is the deviance's half: y log y - y more than torch's, per output
            self._poisson_offset = float(np.sum(np.mean(np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0) - y,
                                                        axis=0)))
        return y

    def _indicator_targets(self, y):
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), going on from the previous call, weighted
        by ``sample_weight`` if given."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        outputs = self._outputs(X)
        if self.loss == "poisson":
            outputs = np.exp(outputs)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def score(self, X, y, sample_weight=None):
        """R² of predict(X) against y."""
        return self._score(r2_score, X, y, sample_weight)
