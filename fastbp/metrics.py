"""The metric reported next to each loss: accuracy for the classification
losses, R^2 for the regression losses (as scikit-learn's ``score``)."""
import numpy as np

import kernels


def metric_name(loss):
    return "accuracy" if loss.code in (kernels.CROSS_ENTROPY, kernels.BCE_WITH_LOGITS) else "r2"


def accuracy(outputs, targets, labels, loss_code, weights=None):
    """Fraction of correct predictions (weighted by ``weights`` (batch,),
    if given). Cross-entropy: argmax of the logits against ``labels``
    (batch,); BCE with logits: ``logit > 0`` against ``target > 0.5``, over
    every output."""
    correct = (np.argmax(outputs, axis=1) == labels if loss_code == kernels.CROSS_ENTROPY
               else (outputs > 0) == (targets > 0.5))
    if weights is None:
        return float(np.mean(correct))
    return float(np.average(correct.reshape(correct.shape[0], -1).mean(axis=1), weights=weights))


def r2(outputs, targets, weights=None):
    """Coefficient of determination, averaged over outputs; an output whose
    targets are constant scores 1 if predicted exactly, else 0 (as
    sklearn.metrics.r2_score, with its ``sample_weight`` as ``weights``)."""
    outputs, targets = np.asarray(outputs, np.float64), np.asarray(targets, np.float64)
    if weights is None:
        residual = np.sum((targets - outputs) ** 2, axis=0)
        total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    else:
        w = np.asarray(weights, np.float64).reshape(-1, 1)
        residual = np.sum(w * (targets - outputs) ** 2, axis=0)
        total = np.sum(w * (targets - np.average(targets, axis=0, weights=w[:, 0])) ** 2, axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(scores))


def score(loss, outputs, targets, labels, weights=None):
    """The metric ``metric_name(loss)`` names, for model outputs (for the
    Poisson loss, log rates: R^2 of the rates), weighted by ``weights``
    (n,) if given."""
    if metric_name(loss) == "accuracy":
        return accuracy(outputs, targets, labels, loss.code, weights)
    return r2(np.exp(outputs) if loss.code == kernels.POISSON_NLL else outputs, targets, weights)
