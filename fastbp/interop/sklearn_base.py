"""What the scikit-learn estimators of ``fastbp.interop.sklearn`` share: their
parameters, checks and training run, on fastbp's library."""
import re
import types
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data
except ImportError:
    raise ImportError("fastbp.interop.sklearn needs scikit-learn; install it with: pip install 'fastbp[sklearn]'") from None

from fastbp._checks import as_bool, as_choice, as_dtype, as_float, as_int, describe
from fastbp.activations import NAMES as ACTIVATIONS
from fastbp.mlp import MLP
from fastbp.optim import Optimizer
from fastbp.sparse import SparseNetwork, is_sparse
from fastbp.trainer import Trainer
from fastbp.interop import sklearn_solvers as solvers

# scikit-learn's activation names, where they differ from fastbp's
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}
SOLVERS = ("lbfgs", "sgd", "adam", "adamw", "rmsprop")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


def _naming(name, check, *args, **kwargs):
    """``check(*args, **kwargs)``, its ValueError naming ``name`` where
    scikit-learn's message names neither X nor y (e.g. "Found array with
    dim 3")."""
    try:
        return check(*args, **kwargs)
    except ValueError as error:
        if re.search(r"(?<![\w.])[Xy](?!\w)", str(error)):
            raise
        raise type(error)(f"{name}: {error}") from None


def _check_lengths(X, y):
    if X.shape[0] != len(y):
        raise ValueError(f"y has {len(y)} samples but X has {X.shape[0]}; give one target per row of X")


class _BaseMLP(BaseEstimator):
    """Shared by both estimators: parameters, checks and the training run.

    Parameters are sklearn.neural_network.MLPClassifier's, with its defaults
    and meanings, plus ``dtype``: "float32" or "float64", or None (the
    default) to follow ``X`` as scikit-learn does: float32 ``X`` trains and
    predicts in float32, any other in float64; ``partial_fit`` and a warm
    start go on in the fitted network's dtype.
    Beyond scikit-learn: ``solver`` also takes "adamw" and "rmsprop",
    ``activation`` every fastbp activation name. "lbfgs" minimises
    scikit-learn's objective with SciPy's L-BFGS-B on fastbp's compiled
    full-batch loss and gradient (``fastbp.lbfgs``), with its ``max_iter``,
    ``max_fun`` and ``tol``. ``fit(X, y, sample_weight=)`` weighs each
    batch's loss as scikit-learn does (the weighted mean; a zero weight is
    the row left out); the L2 term divides by the mean weight times the
    batch size, scikit-learn's batch weight sum where batches weigh alike.

    Training follows scikit-learn's rules: ``learning_rate`` "invscaling" and
    "adaptive" (sgd only); ``loss_curve_`` holds scikit-learn's loss, L2 term
    included; training stops once the training loss (the validation score with
    early_stopping) has failed to improve by ``tol`` for more than
    ``n_iter_no_change`` epochs in a row, and early_stopping keeps the weights
    of the best-scoring epoch. ``alpha`` enters the gradient as scikit-learn's
    ``alpha * W / batch_size`` with two differences: the optimizer decays the
    biases too (its update is one loop over every parameter), and the last,
    smaller batch of an epoch is divided by ``batch_size``, not by its own size.
    With "adamw", ``alpha`` is torch's decoupled weight decay instead.
    The initial weights and biases are scikit-learn's, drawn from
    ``random_state`` as it draws them (fastbp.MLP itself starts as
    torch.nn.Linear does). Other differences: Adam's ``epsilon`` is added to the bias-corrected root (torch's placement), and
    a binary classifier has two softmax outputs where scikit-learn has one
    logistic output.

    ``warm_start`` continues from the fitted weights with a new optimizer built
    from the current parameters (a new activation or dtype applies to them);
    a new ``hidden_layer_sizes`` is refused. ``partial_fit`` keeps its optimizer.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.dtype = dtype

    def _check_params(self):
        """The parameters checked, as a dict (scikit-learn checks in fit);
        every message starts with the estimator's name."""
        try:
            return self._checked_params()
        except (TypeError, ValueError) as error:
            raise type(error)(f"{type(self).__name__}: {error}") from None

    def _checked_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else sizes
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be a sequence of layer widths, got {describe(sizes)}")
        sizes = [as_int(f"hidden_layer_sizes[{i}]", size, minimum=1) for i, size in enumerate(sizes)]
        batch_size = self.batch_size if self.batch_size == "auto" else as_int("batch_size", self.batch_size,
                                                                             minimum=1)
        activation = _ACTIVATION_ALIASES.get(self.activation, self.activation)
        # n_iter_no_change=np.inf, as scikit-learn allows: never stop early
        patience = np.inf if self.n_iter_no_change == np.inf else as_int("n_iter_no_change", self.n_iter_no_change,
                                                                          minimum=1)
        return dict(
            hidden=sizes, batch_size=batch_size,
            activation=as_choice("activation", activation, ACTIVATIONS + tuple(_ACTIVATION_ALIASES)),
            solver=as_choice("solver", self.solver, SOLVERS),
            learning_rate=as_choice("learning_rate", self.learning_rate, LEARNING_RATES),
            power_t=as_float("power_t", self.power_t, low=0.0), max_fun=as_int("max_fun", self.max_fun, minimum=1),
            alpha=as_float("alpha", self.alpha, low=0.0), lr=as_float("learning_rate_init", self.learning_rate_init,
                                                                      low=0.0, low_open=True),
            max_iter=as_int("max_iter", self.max_iter, minimum=1), shuffle=as_bool("shuffle", self.shuffle),
            tol=as_float("tol", self.tol, low=0.0), verbose=as_bool("verbose", bool(self.verbose)),
            warm_start=as_bool("warm_start", self.warm_start),
            momentum=as_float("momentum", self.momentum, low=0.0, high=1.0),
            nesterov=as_bool("nesterovs_momentum", self.nesterovs_momentum),
            early_stopping=as_bool("early_stopping", self.early_stopping),
            validation_fraction=as_float("validation_fraction", self.validation_fraction, low=0.0, high=1.0,
                                         high_open=True),
            betas=(as_float("beta_1", self.beta_1, low=0.0, high=1.0, high_open=True),
                   as_float("beta_2", self.beta_2, low=0.0, high=1.0, high_open=True)),
            eps=as_float("epsilon", self.epsilon, low=0.0, low_open=True),
            patience=patience, dtype=None if self.dtype is None else as_dtype("dtype", self.dtype))

    def _gradient_scale(self, n_outputs):
        """fastbp's loss gradient divided by scikit-learn's (see MLPRegressor)."""
        return 1.0

    @property
    def _optimizer(self):
        """The stochastic solver's learning rate as scikit-learn's
        ``_optimizer.learning_rate`` reads it."""
        check_is_fitted(self, "trainer_")
        optimizer = self.trainer_.optimizer
        rate = optimizer.lr * (self._gradient_scale(self.model_.sizes[-1]) if optimizer.name == "sgd" else 1.0)
        return types.SimpleNamespace(learning_rate=rate)

    def _model(self, n_in, p, rng, new):
        """The network to train: a new one, or the fitted one (in the current
        activation and dtype) when training goes on."""
        if new:
            model = MLP([n_in, *p["hidden"], self._n_units()], activation=p["activation"], dtype=p["dtype"])
            # scikit-learn's initialisation, drawn from the same stream in the same order, so that a
            # random_state starts where scikit-learn's does: Glorot's uniform bound, for the biases too.
            # torch.nn.Linear's bound, 1/sqrt(n_in), starts the output layer larger and slows the first
            # epochs (check_regressors_train needs twice the max_iter)
            factor = 2.0 if p["activation"] == "sigmoid" else 6.0
            for W, b in model.params:
                bound = np.sqrt(factor / (W.shape[0] + W.shape[1]))
                W[...] = rng.uniform(-bound, bound, (W.shape[1], W.shape[0])).T
                b[...] = rng.uniform(-bound, bound, W.shape[0])
            return model
        model = self.trainer_.model
        if list(model.sizes[1:-1]) != p["hidden"]:
            raise ValueError(f"{type(self).__name__}: hidden_layer_sizes is now {tuple(p['hidden'])} but the fitted "
                             f"network has hidden layers {tuple(model.sizes[1:-1])}; warm_start and partial_fit "
                             "train that network on. Set warm_start=False to train a new one, or restore "
                             "hidden_layer_sizes.")
        if all(a.name == p["activation"] for a in model.activations[:-1]) and model.dtype == p["dtype"]:
            return model
        rebuilt = MLP(model.sizes, activation=p["activation"], dtype=p["dtype"])
        params = model.state_dict()["params"].astype(rebuilt.dtype)
        rebuilt.load_state_dict({**rebuilt.state_dict(), "params": params})
        return rebuilt

    def _fit(self, X, y, incremental, classes=None, sample_weight=None):
        p = self._check_params()
        name = type(self).__name__
        if incremental and p["early_stopping"]:
            raise ValueError(f"{name}: partial_fit does not support early_stopping=True; set early_stopping=False "
                             "or call fit")
        if p["early_stopping"] and p["validation_fraction"] == 0:
            raise ValueError(f"{name}: early_stopping=True needs validation_fraction > 0, got 0")
        warm = p["warm_start"] and not incremental
        new = not hasattr(self, "trainer_") or not (incremental or warm)
        # checked one by one first, so that an error says which of the two is wrong
        _check_lengths(_naming("X", check_array, X, dtype=(np.float64, np.float32), input_name="X",
                               accept_sparse="csr"), self._checked_y(y))
        X, y = validate_data(self, X, y, reset=new, dtype=(np.float64, np.float32), accept_sparse="csr",
                             **self._validation_kwargs)
        if p["dtype"] is None:
            # X's own dtype for a new network; a fitted one goes on in its own
            p["dtype"] = X.dtype if new else self.trainer_.model.dtype
        X = solvers.training_input(X.astype(p["dtype"], copy=False), p["solver"])
        weights = solvers.sample_weights(sample_weight, X.shape[0])
        targets = self._targets(y, new, classes, warm)
        rows, sample_weight, mean_weight = solvers.row_weights(weights, self._class_weights(y, targets, incremental))
        if rows is not None:
            X, targets = X[rows], targets[rows]
        rng = check_random_state(self.random_state)
        model = self._model(X.shape[1], p, rng, new)
        self.n_layers_, self.n_outputs_ = len(model.sizes), model.sizes[-1]
        if p["solver"] == "lbfgs":
            self.trainer_ = Trainer(model, self._loss, solvers.new_optimizer(self, model, p, X.shape[0]))
            solvers.fit_lbfgs(self, model, X, targets, p, sample_weight, mean_weight)
            return self
        validation = None
        if p["early_stopping"]:
            X, targets, sample_weight, validation = solvers.validation_split(self, X, targets, sample_weight,
                                                                             p["validation_fraction"], rng)
        if p["batch_size"] != "auto" and p["batch_size"] > X.shape[0]:
            warnings.warn(f"batch_size={p['batch_size']} is larger than the {X.shape[0]} training samples; "
                          f"using {X.shape[0]}")
        batch_size = min(200 if p["batch_size"] == "auto" else p["batch_size"], X.shape[0])

        # from here on the estimator changes: every check has passed
        if new:
            self.t_, self.loss_curve_, self._no_improvement_count = 0, [], 0
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None
        # a warm start may switch early_stopping on or off
        if p["early_stopping"] and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
            self._best_params = model.state_dict()["params"]
        if not p["early_stopping"] and self.best_loss_ is None:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None
        seed = None  # partial_fit goes on with its shuffling stream
        if not incremental or new:
            # scikit-learn builds a new optimizer on every fit; partial_fit keeps it
            self.trainer_ = Trainer(model, self._loss, solvers.new_optimizer(self, model, p, batch_size, mean_weight))
            seed = int(rng.randint(np.iinfo(np.int32).max))
        elif model is not self.trainer_.model:
            # partial_fit after a new activation or dtype: the same optimizer state drives the rebuilt network
            state = self.trainer_.optimizer.state_dict()
            optimizer = Optimizer.from_state_dict(model, {**state, "state": state["state"].astype(model.dtype)})
            self.trainer_ = Trainer(model, self._loss, optimizer)
            seed = int(rng.randint(np.iinfo(np.int32).max))
        self.n_iter_ = 0  # epochs of this call, as scikit-learn counts them
        self._penalty = self._l2_penalty(p["alpha"])
        stops = []

        def end_epoch(trainer, logs):
            stops.append(self._end_epoch(trainer, logs, p, X.shape[0], batch_size, validation))

        try:
            self.trainer_.fit(X, targets, epochs=1 if incremental else p["max_iter"], batch_size=batch_size,
                              shuffle=p["shuffle"], seed=seed, validation_data=validation, callbacks=[end_epoch],
                              sample_weight=sample_weight)
        except FloatingPointError as error:
            if not p["early_stopping"]:
                raise ValueError(f"{solvers.NON_FINITE} ({error})") from None
            # as scikit-learn: the diverged epoch scores NaN and the best epoch's weights are kept
            self.validation_scores_.append(float("nan"))
            stops.append(True)
        if p["early_stopping"]:
            model.load_state_dict({**model.state_dict(), "params": self._best_params})
        solvers.check_finite(model)
        if not incremental and self.n_iter_ == p["max_iter"] and not stops[-1]:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({p['max_iter']}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _l2_penalty(self, alpha):
        """scikit-learn's L2 term of the loss per sample, ``0.5 * alpha * sum(W**2)``
        (biases left out), for the weights as they are now."""
        return 0.5 * alpha * sum(float(np.dot(W.ravel(), W.ravel())) for W, _ in self.trainer_.model.params)

    def _end_epoch(self, trainer, logs, p, n_samples, batch_size, validation):
        """scikit-learn's bookkeeping after an epoch: loss, scores, the best
        epoch, the learning-rate schedule and the stopping rule. Returns
        whether training stops."""
        # scikit-learn adds the penalty at each batch's weights; the epoch's
        # starting weights stand in for them (exact with one batch an epoch)
        n_batches = -(-n_samples // batch_size)
        self.loss_ = self._data_loss(logs["loss"]) + self._penalty * n_batches / n_samples
        self._penalty = self._l2_penalty(p["alpha"])
        self.n_iter_ += 1
        self.t_ += n_samples
        self.loss_curve_.append(self.loss_)
        if p["verbose"]:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        if validation is not None:
            score = logs["val_metric"]
            self.validation_scores_.append(score)
            if p["verbose"]:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_validation_score_ + p["tol"]
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = trainer.model.state_dict()["params"]
        else:
            improved = self.loss_ <= self.best_loss_ - p["tol"]
            self.best_loss_ = min(self.best_loss_, self.loss_)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
        optimizer, scale = trainer.optimizer, self._gradient_scale(trainer.model.sizes[-1])
        sgd_schedule = p["learning_rate"] if p["solver"] == "sgd" else "constant"
        if sgd_schedule == "invscaling":
            optimizer.lr = p["lr"] / scale / (self.t_ + 1) ** p["power_t"]
        if self._no_improvement_count <= p["patience"]:
            return False
        what = "Validation score" if validation is not None else "Training loss"
        message = f"{what} did not improve more than tol={p['tol']:f} for {p['patience']} consecutive epochs."
        if sgd_schedule == "adaptive" and optimizer.lr * scale > 1e-6:
            optimizer.lr /= 5.0
            self._no_improvement_count = 0
            if p["verbose"]:
                print(f"{message} Setting learning rate to {optimizer.lr * scale:f}")
            return False
        if p["verbose"]:
            print(f"{message} Stopping.")
        trainer.stop_training = True
        return True

    def _data_loss(self, loss):
        """scikit-learn's loss from fastbp's mean training loss (see MLPRegressor)."""
        return loss

    def _class_weights(self, y, targets, incremental):
        """A weight per row from ``class_weight`` (the classifier's), or None."""
        return None

    def _data_loss_offset(self):
        """What scikit-learn's loss adds to fastbp's, a constant of the data."""
        return 0.0

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_solver(self):
        if self.solver == "lbfgs":
            raise AttributeError(f"partial_fit is only available for stochastic optimizers; {self.solver!r} is not "
                                 "stochastic")
        return True

    def _loss_grad_lbfgs(self, packed, X, y, sample_weight, *buffers):
        """scikit-learn's private ``_loss_grad_lbfgs``: (loss, gradient) of the
        L-BFGS objective at ``packed``, scikit-learn's packing of coefs_ and
        intercepts_ (the buffers it also takes are not needed here)."""
        check_is_fitted(self, "trainer_")
        return solvers.loss_grad(self, packed, X, self._indicator_targets(y), sample_weight)

    coefs_ = solvers.parameters("coefs_", "Weights per layer, (n_in, n_out) as scikit-learn shapes them")
    intercepts_ = solvers.parameters("intercepts_", "Biases per layer, (n_out,)")

    @property
    def model_(self):
        """The fastbp.MLP being trained (to_torch(), save(), ...)."""
        check_is_fitted(self, "trainer_")
        return self.trainer_.model

    def fit(self, X, y, sample_weight=None):
        """Train from scratch (or on from the last fit with warm_start) for up
        to max_iter epochs (iterations of lbfgs)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _checked_y(self, y):
        if y is None:  # scikit-learn's words, which its estimator checks look for
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        return _naming("y", check_array, y, ensure_2d=False, dtype=self._y_dtype, input_name="y")

    def _score(self, score, X, y, sample_weight):
        """``score`` (accuracy, R²) of the predictions for X against y; the
        mixins' own score names neither X nor y when their lengths differ."""
        predictions = self.predict(X)
        _check_lengths(predictions, self._checked_y(y))
        return _naming("y", score, y, predictions, sample_weight=sample_weight)

    def _outputs(self, X):
        check_is_fitted(self, "trainer_")
        X = _naming("X", validate_data, self, X, reset=False, dtype=(np.float64, np.float32), accept_sparse="csr")
        model = self.trainer_.model
        # in the dtype of X times the weights, as scikit-learn answers
        outputs = SparseNetwork(model).predict(X.astype(model.dtype)) if is_sparse(X) else model.predict(X)
        return outputs.astype(np.result_type(X.dtype, model.dtype), copy=False)
