"""The metric reported next to each loss: accuracy for the classification
losses, R^2 for the regression losses (as scikit-learn's ``score``)."""
import numpy as np

import kernels


def metric_name(loss):
    return "accuracy" if loss.code in (kernels.CROSS_ENTROPY, kernels.BCE_WITH_LOGITS) else "r2"


def accuracy(outputs, targets, labels, loss_code):
    """Fraction of correct predictions. Cross-entropy: argmax of the logits
    against ``labels`` (batch,); BCE with logits: ``logit > 0`` against
    ``target > 0.5``, over every output."""
    if loss_code == kernels.CROSS_ENTROPY:
        return float(np.mean(np.argmax(outputs, axis=1) == labels))
    return float(np.mean((outputs > 0) == (targets > 0.5)))


def r2(outputs, targets):
    """Coefficient of determination, averaged over outputs; an output whose
    targets are constant scores 1 if predicted exactly, else 0 (as
    sklearn.metrics.r2_score)."""
    outputs, targets = np.asarray(outputs, np.float64), np.asarray(targets, np.float64)
    residual = np.sum((targets - outputs) ** 2, axis=0)
    total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(scores))


def score(loss, outputs, targets, labels):
    """The metric ``metric_name(loss)`` names, for model outputs (for the
    Poisson loss, log rates: R^2 of the rates)."""
    if metric_name(loss) == "accuracy":
        return accuracy(outputs, targets, labels, loss.code)
    return r2(np.exp(outputs) if loss.code == kernels.POISSON_NLL else outputs, targets)
