"""Full-batch training with L-BFGS: SciPy's L-BFGS-B drives the network's
compiled forward, loss and backward kernels over the whole training set.

For small and medium data, where a minibatch's noise costs more than a
full pass, L-BFGS reaches a tighter minimum in fewer passes than SGD or
Adam (scikit-learn's MLP recommends it below a few thousand rows).

Example:
    >>> model = fastbp.MLP([4, 16, 3], activation="tanh", dtype="float64", seed=0)
    >>> result = fastbp.lbfgs.fit(model, "cross_entropy", X, y, l2=1e-4, max_iter=200)
    >>> result.success, result.nit, result.fun
"""
import numpy as np

import kernels
from kernels.layers.table import layer_units
from fastbp._checks import as_float, as_int, as_matrix, as_weights, describe
from fastbp.losses import as_loss
from fastbp.mlp import MLP
from fastbp.sparse import SparseNetwork, as_csr, is_sparse, row_chunks

# rows per kernel call: bounds the activations kept for backward
_CHUNK_ROWS = 8192


class FullBatchObjective:
    """The training loss over all of ``(X, y)`` and its gradient, as a
    function of the network's flat parameter vector, as SciPy's minimizers
    take it: ``value, gradient = objective(theta)``, both in float64.

    The loss is the loss's own reduction over every row, weighted by
    ``sample_weight`` when given (a weighted mean for reduction="mean":
    ``sum_i w_i loss_i / sum_i w_i``, and the loss's class weights, as
    ``loss(pred, y, sample_weight)`` defines them), plus ``0.5 * l2 * sum(W**2)`` over the
    weight matrices (not the biases); ``factor`` multiplies the loss term
    (for a loss defined as a multiple of fastbp's). ``X`` may be a
    scipy.sparse matrix: the first layer then runs on its CSR rows
    (``fastbp.sparse``). ``theta`` is written into the model's parameters at
    each call, so the model holds the last point evaluated.
    """

    def __init__(self, model, loss, X, y, sample_weight=None, l2=0.0, factor=1.0):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        if any(p > 0 for p in model.dropout):
            raise ValueError(f"L-BFGS needs a deterministic objective, and dropout draws a new one each step: "
                             f"train {model!r} with a stochastic optimizer, or without dropout")
        self.model, self.loss = model, as_loss(loss)
        self.sparse = None
        if is_sparse(X):
            self.X = as_csr("X", X, model.dtype, model.sizes[0])
            self.sparse = SparseNetwork(model), row_chunks(self.X, _CHUNK_ROWS)
        else:
            self.X = as_matrix("X", X, model.dtype, model.sizes[0])
        n, n_out = self.X.shape[0], model.sizes[-1]
        if np.ndim(y) >= 1 and np.shape(y)[0] != n:
            raise ValueError(f"y must hold one target per row of X: X has {n} rows, y has {np.shape(y)[0]}")
        self.targets, self.labels = self.loss.targets(y, n, n_out, model.dtype)
        self.l2 = as_float("l2", l2, low=0.0)
        mean = self.loss.reduction == "mean"
        if sample_weight is None:
            self.weights = None
        else:
            self.weights = as_weights("sample_weight", np.ravel(sample_weight) if np.ndim(sample_weight) == 2
                                      and np.shape(sample_weight)[1] == 1 else sample_weight, n)
        self.class_weights = self.loss.class_weights
        divisor = self.loss.divisor(self.labels, np.empty(0) if self.weights is None else self.weights, n)
        self.scale = kernels.losses.mean_scale(self.loss.code, divisor, n_out, mean)
        self.scale *= as_float("factor", factor, low=0.0, low_open=True)
        # the weights of unweighted rows, made once
        self.weights = np.ones(min(n, _CHUNK_ROWS)) if self.weights is None else self.weights
        self.gradient = np.zeros(model.n_params)
        self._weight_views = [(W, g) for (W, _), (g, _) in zip(model.params, model._views(self.gradient)[0])]
        self.evaluations = 0

    def __call__(self, theta):
        model, loss = self.model, self.loss
        params, grads, layers, activation_params = model._params, model._grads, model._layers, \
            model._activation_params
        params[...] = theta
        n, n_out, last = self.X.shape[0], model.sizes[-1], len(layers) - 1
        total = 0.0
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            rows = stop - start
            if self.sparse is not None:
                network, x = self.sparse[0], self.sparse[1][start // _CHUNK_ROWS]
                prediction, dprediction = network.forward(x), network.output_gradient(rows)
            else:
                model._ensure_capacity(rows)
                x = self.X[start:stop]
                kernels.network_forward(model._z, model._a, x, params, layers, activation_params)
                prediction = layer_units(model._a, layers, last, rows)
                dprediction = model._scratch[0, :rows * n_out].reshape(rows, n_out)
            targets = self.targets[start:stop] if self.targets.size else self.targets
            labels = self.labels[start:stop] if self.labels.size else self.labels
            weights = self.weights[:rows] if self.weights.shape[0] < n else self.weights[start:stop]
            total += kernels.weighted_loss_value_and_grad(dprediction, prediction, targets, labels, weights,
                                                          self.class_weights, loss.code, loss.param, self.scale)
            if self.sparse is not None:
                network.backward(x, start > 0)
            else:
                kernels.network_backward(grads, model._scratch, x, params, layers, activation_params, model._z,
                                         model._a, False, start > 0)
        model._forward_rows = None  # the buffers no longer hold one forward pass
        self.gradient[...] = grads
        if self.l2:
            total += self.penalty()
            for W, g in self._weight_views:
                g += self.l2 * W
        self.evaluations += 1
        return total, self.gradient.copy()

    def penalty(self):
        """The L2 term at the model's current parameters, ``0.5 * l2 * sum(W**2)``."""
        return 0.5 * self.l2 * sum(float(np.dot(W.ravel(), W.ravel())) for W, _ in self._weight_views)


def fit(model, loss, X, y, *, sample_weight=None, l2=0.0, max_iter=200, max_fun=15000, tol=1e-4, ftol=2.2e-9,
        history_size=10, callback=None):
    """Train ``model`` on all of ``(X, y)`` with L-BFGS (SciPy's L-BFGS-B).

    Args:
        model: a fastbp.MLP, trained in place from its current parameters.
        loss: a fastbp loss or its name; X, y: as ``Trainer.fit`` takes them.
        sample_weight: one weight per row (see ``FullBatchObjective``), or None.
        l2: the L2 term's coefficient, ``0.5 * l2 * sum(W**2)`` added to the loss.
        max_iter: most iterations; max_fun: most loss-and-gradient evaluations
            (an iteration takes one or more); tol: stop once every gradient
            component is at most ``tol`` in size (L-BFGS-B's ``gtol``), or an
            iteration improves the loss by less than ``ftol`` relative to it.
        history_size: corrections kept (L-BFGS-B's ``maxcor``).
        callback: called as ``callback(iteration, loss)`` after each
            iteration, the model at the iterate; a true return stops.

    Returns SciPy's ``OptimizeResult`` (``success``, ``status``, ``message``,
    ``nit``, ``nfev``, ``fun``); the model holds its ``x``.
    """
    return minimize(FullBatchObjective(model, loss, X, y, sample_weight, l2), max_iter=max_iter, max_fun=max_fun,
                    tol=tol, ftol=ftol, history_size=history_size, callback=callback)


def minimize(objective, *, max_iter=200, max_fun=15000, tol=1e-4, ftol=2.2e-9, history_size=10, callback=None):
    """``fit`` for an objective already built (``FullBatchObjective``)."""
    model = objective.model
    options = {"maxiter": as_int("max_iter", max_iter, minimum=1), "maxfun": as_int("max_fun", max_fun, minimum=1),
               "gtol": as_float("tol", tol, low=0.0), "ftol": as_float("ftol", ftol, low=0.0),
               "maxcor": as_int("history_size", history_size, minimum=1)}
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {describe(callback)}")
    iterations = []

    def each_iteration(intermediate_result):
        iterations.append(None)
        model._params[...] = intermediate_result.x
        if callback is not None and callback(len(iterations), float(intermediate_result.fun)):
            raise StopIteration

    import scipy.optimize  # 0.13 s to import: only when L-BFGS runs

    start = model._params.astype(np.float64)
    result = scipy.optimize.minimize(objective, start, method="L-BFGS-B", jac=True, options=options,
                                     callback=each_iteration)
    model._params[...] = result.x
    return result

