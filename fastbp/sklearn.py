"""scikit-learn estimators: a fastbp MLP, trained by the compiled kernels,
behind sklearn.neural_network's MLPClassifier / MLPRegressor interface, so
that it drops into Pipeline, GridSearchCV and cross_val_score.

Example:
    >>> from fastbp.sklearn import MLPClassifier
    >>> from sklearn.model_selection import cross_val_score
    >>> cross_val_score(MLPClassifier(hidden_layer_sizes=(64,), random_state=0), X, y, cv=5)
"""
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError:
    raise ImportError("fastbp.sklearn needs scikit-learn; install it with: pip install 'fastbp[sklearn]'") from None

from fastbp._checks import as_bool, as_choice, as_dtype, as_float, as_int, describe
from fastbp.activations import NAMES as ACTIVATIONS
from fastbp.mlp import MLP
from fastbp.optim import SGD, Adam, AdamW, RMSprop
from fastbp.trainer import Trainer

# scikit-learn's activation names, where they differ from fastbp's
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}
SOLVERS = ("sgd", "adam", "adamw", "rmsprop")


class _BaseMLP(BaseEstimator):
    """Shared by both estimators: parameters, checks and the training run.

    Parameters follow sklearn.neural_network.MLPClassifier, with these
    differences: ``solver`` is one of "sgd", "adam", "adamw", "rmsprop" (no
    "lbfgs"); ``activation`` also takes every fastbp activation name; the
    learning rate stays ``learning_rate_init`` (no "invscaling"/"adaptive");
    ``alpha`` is the optimizer's weight decay (L2 added to the gradient, as
    torch's weight_decay); ``dtype`` picks float64 (default) or float32.
    Training stops once the loss (the validation loss with early_stopping)
    has not improved by more than ``tol`` for ``n_iter_no_change`` epochs;
    with early_stopping the best epoch's weights are kept.
    """

    _loss = None

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    def _check_params(self):
        """The parameters checked, as a dict (scikit-learn checks in fit)."""
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else sizes
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be a sequence of layer widths, got {describe(sizes)}")
        sizes = [as_int(f"hidden_layer_sizes[{i}]", size, minimum=1) for i, size in enumerate(sizes)]
        batch_size = self.batch_size if self.batch_size == "auto" else as_int("batch_size", self.batch_size,
                                                                             minimum=1)
        activation = _ACTIVATION_ALIASES.get(self.activation, self.activation)
        return dict(
            hidden=sizes, batch_size=batch_size,
            activation=as_choice("activation", activation, ACTIVATIONS + tuple(_ACTIVATION_ALIASES)),
            solver=as_choice("solver", self.solver, SOLVERS),
            alpha=as_float("alpha", self.alpha, low=0.0), lr=as_float("learning_rate_init", self.learning_rate_init,
                                                                      low=0.0, low_open=True),
            max_iter=as_int("max_iter", self.max_iter, minimum=1), shuffle=as_bool("shuffle", self.shuffle),
            tol=as_float("tol", self.tol, low=0.0), verbose=as_bool("verbose", bool(self.verbose)),
            warm_start=as_bool("warm_start", self.warm_start),
            momentum=as_float("momentum", self.momentum, low=0.0, high=1.0),
            nesterov=as_bool("nesterovs_momentum", self.nesterovs_momentum),
            early_stopping=as_bool("early_stopping", self.early_stopping),
            validation_fraction=as_float("validation_fraction", self.validation_fraction, low=0.0, high=1.0,
                                         low_open=True, high_open=True),
            betas=(as_float("beta_1", self.beta_1, low=0.0, high=1.0, high_open=True),
                   as_float("beta_2", self.beta_2, low=0.0, high=1.0, high_open=True)),
            eps=as_float("epsilon", self.epsilon, low=0.0, low_open=True),
            patience=as_int("n_iter_no_change", self.n_iter_no_change, minimum=1),
            dtype=as_dtype("dtype", self.dtype))

    def _optimizer(self, model, p):
        if p["solver"] == "sgd":
            return SGD(model, lr=p["lr"], momentum=p["momentum"], weight_decay=p["alpha"],
                       nesterov=p["nesterov"] and p["momentum"] > 0)
        if p["solver"] == "rmsprop":
            return RMSprop(model, lr=p["lr"], momentum=p["momentum"], eps=p["eps"], weight_decay=p["alpha"])
        solver = Adam if p["solver"] == "adam" else AdamW
        return solver(model, lr=p["lr"], betas=p["betas"], eps=p["eps"], weight_decay=p["alpha"])

    def _fit(self, X, y, incremental, classes=None):
        p = self._check_params()
        fresh = not (incremental or p["warm_start"]) or not hasattr(self, "trainer_")
        X, y = validate_data(self, X, y, reset=fresh, dtype=(np.float64, np.float32), **self._validation_kwargs)
        X = X.astype(p["dtype"], copy=False)
        targets = self._targets(y, fresh, classes)
        rng = check_random_state(self.random_state)
        if fresh:
            n_outputs = self._n_units()
            model = MLP([X.shape[1], *p["hidden"], n_outputs], activation=p["activation"], dtype=p["dtype"],
                        seed=int(rng.randint(np.iinfo(np.int32).max)))
            self.trainer_ = Trainer(model, self._loss, self._optimizer(model, p))
            self.n_iter_, self.t_ = 0, 0
        elif self.trainer_.model.sizes[0] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.trainer_.model.sizes[0]} features as input")
        validation = None
        if p["early_stopping"] and not incremental:
            stratify = targets if isinstance(self, ClassifierMixin) else None
            X, X_val, targets, t_val = train_test_split(X, targets, test_size=p["validation_fraction"],
                                                        random_state=rng.randint(np.iinfo(np.int32).max),
                                                        stratify=stratify)
            validation = (X_val, t_val)
        trainer = self.trainer_
        epochs_before = trainer.epoch
        callbacks = [lambda t, logs: print(f"Iteration {logs['epoch']}, loss = {logs['loss']:.8f}")] \
            if p["verbose"] else []
        batch_size = min(200, X.shape[0]) if p["batch_size"] == "auto" else min(p["batch_size"], X.shape[0])
        epochs = 1 if incremental else p["max_iter"]
        history = trainer.fit(X, targets, epochs=epochs, batch_size=batch_size, shuffle=p["shuffle"],
                              seed=int(rng.randint(np.iinfo(np.int32).max)) if fresh else None,
                              validation_data=validation, early_stopping=None if incremental else p["patience"],
                              min_delta=p["tol"], restore_best=p["early_stopping"], callbacks=callbacks)
        ran = trainer.epoch - epochs_before
        self.n_iter_ += ran
        self.t_ += ran * X.shape[0]
        self.loss_curve_ = list(history.loss)
        self.best_loss_ = min(self.loss_curve_)
        if validation is not None:
            self.validation_scores_ = list(history.val_metric[epochs_before:])
            self.best_validation_score_ = max(self.validation_scores_)
        self.n_layers_ = len(p["hidden"]) + 2
        self.n_outputs_ = trainer.model.sizes[-1]
        if not incremental and ran == p["max_iter"] and trainer.epoch - trainer._best[0] < p["patience"]:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({p['max_iter']}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        return self

    @property
    def coefs_(self):
        """Weights per layer, (n_in, n_out) as scikit-learn shapes them (copies)."""
        check_is_fitted(self, "trainer_")
        return [W.T.copy() for W, _ in self.trainer_.model.params]

    @property
    def intercepts_(self):
        check_is_fitted(self, "trainer_")
        return [b.copy() for _, b in self.trainer_.model.params]

    @property
    def model_(self):
        """The fastbp.MLP being trained (to_torch(), save(), ...)."""
        check_is_fitted(self, "trainer_")
        return self.trainer_.model

    def fit(self, X, y):
        """Train from scratch (or on from the last fit with warm_start) for up
        to max_iter epochs."""
        return self._fit(X, y, incremental=False)

    def _outputs(self, X):
        check_is_fitted(self, "trainer_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.trainer_.model.predict(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: softmax outputs, cross-entropy loss.

    See _BaseMLP for the parameters. Fitted attributes: ``classes_``,
    ``loss_curve_``, ``n_iter_``, ``best_loss_``, ``validation_scores_`` and
    ``best_validation_score_`` (early_stopping), ``coefs_``, ``intercepts_``,
    ``model_`` (the fastbp.MLP), ``n_features_in_``.
    """

    _loss = "cross_entropy"
    _validation_kwargs = {}

    def _n_units(self):
        return len(self.classes_)

    def _targets(self, y, fresh, classes):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if fresh:
            labels = np.unique(y if classes is None else np.concatenate([np.asarray(classes), y]))
            if classes is not None and len(np.unique(classes)) != len(labels):
                raise ValueError(f"y holds labels {sorted(set(np.unique(y)) - set(classes))} that are not in "
                                 f"classes={list(classes)}")
            if len(labels) < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least two classes to train; "
                                 f"y has only one class ({labels[0]})")
            self.classes_ = labels
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
            raise ValueError("multilabel targets are not supported")
        return self._fit(X, y, incremental=True, classes=np.unique(classes) if first else None)

    def predict_proba(self, X):
        """Softmax of the outputs, (n_samples, n_classes)."""
        logits = self._outputs(X).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        logits = self._outputs(X).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X):
        outputs = self._outputs(X)
        return self.classes_[np.argmax(outputs, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: identity outputs, squared-error loss.

    See _BaseMLP for the parameters; y may have several columns.
    """

    _loss = "mse"
    _validation_kwargs = {"y_numeric": True, "multi_output": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _n_units(self):
        return self._n_targets

    def _targets(self, y, fresh, classes):
        y = np.asarray(y, dtype=np.float64)
        if fresh:
            self._single_output = y.ndim == 1
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
        outputs = self._outputs(X).astype(np.float64)
        return outputs.ravel() if self._single_output else outputs
