"""What the scikit-learn estimators need beyond the stochastic solvers:
L-BFGS on fastbp's full-batch loss (``fastbp.lbfgs``) with scikit-learn's
objective and stopping rules, sample weights, and scikit-learn's layout of
the parameters as one vector."""
import warnings

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from fastbp.lbfgs import FullBatchObjective, minimize
from fastbp.optim import SGD, Adam, AdamW, RMSprop
from fastbp.sparse import is_sparse

NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain large values and need to "
              "be preprocessed.")


def new_optimizer(estimator, model, p, batch_size, mean_weight=1.0):
    """A new optimizer whose steps are scikit-learn's for the same parameters.

    fastbp's loss gradient is ``scale`` times scikit-learn's, so the rate
    (sgd) or epsilon (the adaptive solvers, which divide the scale out) and
    the L2 term are scaled to match; scikit-learn's penalty gradient is
    ``alpha * W / sw_sum``, the batch's weight sum: ``batch_size`` times the
    ``mean_weight`` (exact where every batch weighs as much).
    """
    scale = estimator._gradient_scale(model.sizes[-1])
    decay = scale * p["alpha"] / (batch_size * mean_weight)
    if p["solver"] == "sgd":
        return SGD(model, lr=p["lr"] / scale, momentum=p["momentum"], weight_decay=decay,
                   nesterov=p["nesterov"] and p["momentum"] > 0)
    if p["solver"] == "rmsprop":
        return RMSprop(model, lr=p["lr"], momentum=p["momentum"], eps=scale * p["eps"], weight_decay=decay)
    if p["solver"] == "adamw":
        return AdamW(model, lr=p["lr"], betas=p["betas"], eps=scale * p["eps"], weight_decay=p["alpha"])
    return Adam(model, lr=p["lr"], betas=p["betas"], eps=scale * p["eps"], weight_decay=decay)


def sample_weights(sample_weight, n):
    """``sample_weight`` checked: a float64 (n,) array, or None."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(n, float(weights))
    if weights.shape != (n,):
        raise ValueError(f"sample_weight must hold one weight per sample ({n}), got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must hold finite weights >= 0")
    if not weights.sum() > 0:
        raise ValueError("sample_weight must not be all zero: a zero weight leaves its sample out")
    return weights


def row_weights(weights, class_weights):
    """(rows, weights, mean weight): the rows to train on (None for all),
    their weights (None for equal ones, the unweighted fit exactly) and the
    mean of the weights, which divides scikit-learn's L2 term (its
    ``sw_sum``). ``weights`` from ``sample_weights`` and ``class_weights``,
    one per row, multiply; either may be None. A zero weight leaves its row
    out, as scikit-learn defines it."""
    if class_weights is not None:
        weights = class_weights if weights is None else weights * class_weights
    if weights is None:
        return None, None, 1.0
    rows = None if weights.all() else np.flatnonzero(weights)
    weights = weights if rows is None else weights[rows]
    return rows, None if (weights == weights[0]).all() else weights, float(weights.mean())


# the largest dense copy of a sparse X the stochastic solvers make
DENSE_LIMIT_BYTES = 1 << 30


def training_input(X, solver):
    """X as the solver trains on it: L-BFGS takes sparse X as it is (its
    first layer runs on the CSR rows); the stochastic solvers' compiled
    epoch reads dense rows, so they take a dense copy up to DENSE_LIMIT_BYTES."""
    if not is_sparse(X) or solver == "lbfgs":
        return X
    size = X.shape[0] * X.shape[1] * X.dtype.itemsize
    if size > DENSE_LIMIT_BYTES:
        raise ValueError(f"X is sparse, {X.shape[0]} x {X.shape[1]}; solver={solver!r} trains on dense rows, and "
                         f"a dense copy would take {size / 2**30:.1f} GiB. Use solver='lbfgs', which trains on the "
                         "sparse rows, or fewer columns")
    return X.toarray()


def validation_split(estimator, X, targets, weights, fraction, rng):
    """(X, targets, weights, validation data) for early_stopping:
    ``fraction`` of the samples held out as scikit-learn holds them out,
    stratified by class (on the positive class's indicator for two classes,
    as scikit-learn's binarized labels; not for multilabel targets), with
    their ``weights`` (None: none)."""
    name = type(estimator).__name__
    stratify = None
    if is_classifier(estimator) and targets.ndim == 1:
        stratify = (targets == 1).reshape(-1, 1) if len(estimator.classes_) == 2 else targets
    arrays = (X, targets) if weights is None else (X, targets, weights)
    try:
        parts = train_test_split(*arrays, test_size=fraction, random_state=rng.randint(np.iinfo(np.int32).max),
                                 stratify=stratify)
    except ValueError as error:
        if stratify is None:
            raise
        classes = f" ('True' is the class {estimator.classes_[1]})" if stratify.dtype == bool else ""
        raise ValueError(f"{name}: {error}{classes}; early_stopping holds out validation_fraction of each class, "
                         "so each class needs 2 samples or more") from None
    X, X_val, targets, t_val = parts[:4]
    if X_val.shape[0] < 2:
        raise ValueError(f"{name}: The validation set is too small ({X_val.shape[0]} samples) to score. Increase "
                         "'validation_fraction' or the size of your dataset.")
    if weights is None:
        return X, targets, None, (X_val, t_val)
    return X, targets, parts[4], (X_val, t_val, parts[5])


def check_finite(model):
    if not np.isfinite(model.state_dict()["params"]).all():
        raise ValueError(NON_FINITE)


def objective(estimator, model, X, targets, alpha, sample_weight, mean_weight=1.0):
    """scikit-learn's L-BFGS objective: its data loss (fastbp's loss divided
    by the estimator's ``_gradient_scale``) plus ``0.5 * alpha * sum(W**2)``
    over the weight matrices, divided by the sum of the weights (rows times
    ``mean_weight`` for equal ones)."""
    total = X.shape[0] * mean_weight if sample_weight is None else float(sample_weight.sum())
    return FullBatchObjective(model, estimator._loss, X, targets, sample_weight, l2=alpha / total,
                              factor=1.0 / estimator._gradient_scale(model.sizes[-1]))


def fit_lbfgs(estimator, model, X, targets, p, sample_weight, mean_weight=1.0):
    """Train ``model`` as scikit-learn's ``solver="lbfgs"`` does: at most
    ``max_iter`` iterations and ``max_fun`` evaluations, ``tol`` on the
    projected gradient; sets ``n_iter_`` and ``loss_`` and warns as it does
    when the solver stops short."""
    verbose = p["verbose"]

    def report(iteration, loss):
        print(f"Iteration {iteration}, loss = {loss:.8f}")

    result = minimize(objective(estimator, model, X, targets, p["alpha"], sample_weight, mean_weight),
                      max_iter=p["max_iter"], max_fun=p["max_fun"], tol=p["tol"], callback=report if verbose else None)
    estimator.n_iter_ = min(int(result.nit), p["max_iter"])
    estimator.loss_ = estimator._data_loss_offset() + float(result.fun)
    check_finite(model)
    if result.status != 0:
        message = result.message.decode() if isinstance(result.message, bytes) else str(result.message)
        warnings.warn(f"lbfgs failed to converge after {estimator.n_iter_} iteration(s) (status={result.status}): "
                      f"{message}. Increase max_iter (and max_fun) or scale the data.", ConvergenceWarning)


def parameters(name, doc):
    """The property ``coefs_`` or ``intercepts_``: reading gives copies;
    setting a fitted estimator's writes the arrays into its network, checked
    against its shapes (as scikit-learn's attributes can be set)."""
    part = 0 if name == "coefs_" else 1

    def get(estimator):
        check_is_fitted(estimator, "trainer_")
        return [W.T.copy() if part == 0 else b.copy() for W, b in estimator.trainer_.model.params]

    def put(estimator, values):
        check_is_fitted(estimator, "trainer_", msg=f"{name} can be set on a fitted estimator only: fit it first")
        model = estimator.trainer_.model
        targets = [W.T if part == 0 else b for W, b in model.params]
        if not isinstance(values, (list, tuple)) or len(values) != len(targets):
            raise ValueError(f"{name} must be a list of {len(targets)} arrays, one per layer")
        arrays = [np.asarray(value, dtype=np.float64) for value in values]
        for i, (array, target) in enumerate(zip(arrays, targets)):
            if array.shape != target.shape:
                raise ValueError(f"{name}[{i}] must have shape {target.shape}, got {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name}[{i}] holds NaN or infinity")
        for array, target in zip(arrays, targets):
            target[...] = array

    return property(get, put, doc=doc + " (copies; settable once fitted).")


def packing(model):
    """The positions in fastbp's flat parameters of scikit-learn's packed
    vector: every ``coefs_[i].ravel()`` (n_in, n_out), then every
    ``intercepts_[i]``."""
    positions = np.arange(model.n_params)
    views = model._views(positions)[0]
    return np.concatenate([W.T.ravel() for W, _ in views] + [b for _, b in views])


def loss_grad(estimator, packed, X, targets, sample_weight):
    """scikit-learn's ``_loss_grad_lbfgs``: (loss, gradient) of its L-BFGS
    objective at ``packed`` (its layout), the estimator's parameters set to
    it."""
    model = estimator.model_
    order = packing(model)
    theta = model.state_dict()["params"].astype(np.float64)
    theta[order] = packed
    X = np.asarray(X, dtype=model.dtype)
    value, gradient = objective(estimator, model, X, targets, estimator._check_params()["alpha"],
                                sample_weight)(theta)
    return value + estimator._data_loss_offset(), gradient[order]
