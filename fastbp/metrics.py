"""The metrics a Trainer reports and monitors, each as scikit-learn defines
it (with its ``sample_weight`` as ``weights``), computed from the model's
outputs: logits for the classification losses, values (for the Poisson loss,
log rates) for the regression losses.

Classification: accuracy, balanced accuracy, log loss, ROC AUC (one-vs-rest,
macro-averaged over the classes, for more than two), F1 (of the second class
for two, macro-averaged for more). Regression: R^2, RMSE, MAE (each averaged
over the outputs). For BCE with logits every output is a binary problem of
its own and the scores are averaged over the outputs.
"""
import numpy as np

import kernels

CLASSIFY = ("accuracy", "balanced_accuracy", "log_loss", "auc", "f1")
REGRESS = ("r2", "rmse", "mae")
# the metrics that are better when lower: monitoring them minimises
LOWER_IS_BETTER = ("log_loss", "rmse", "mae")


def classifies(loss):
    return loss.code in (kernels.CROSS_ENTROPY, kernels.BCE_WITH_LOGITS)


def metric_name(loss):
    """The default metric of ``loss``: accuracy to classify, R^2 to regress."""
    return "accuracy" if classifies(loss) else "r2"


def check_metric(loss, name):
    """``name`` if it is a metric of ``loss``'s task, else ValueError naming the valid ones."""
    valid = CLASSIFY if classifies(loss) else REGRESS
    if name not in valid:
        raise ValueError(f"metric must be one of {', '.join(valid)} for the {loss.name} loss, got {name!r}")
    return name


def _weights(weights, n):
    """The weight of every row: ones when not weighted."""
    return np.ones(n) if weights is None else np.asarray(weights, np.float64)


def _mean(values, weights):
    return float(np.mean(values) if weights is None else np.average(values, weights=weights))


def accuracy(outputs, targets, labels, loss_code, weights=None):
    """Fraction of correct predictions. Cross-entropy: argmax of the logits
    against ``labels`` (batch,); BCE with logits: ``logit > 0`` against
    ``target > 0.5``, over every output."""
    correct = (np.argmax(outputs, axis=1) == labels if loss_code == kernels.CROSS_ENTROPY
               else (outputs > 0) == (targets > 0.5))
    return _mean(correct.reshape(correct.shape[0], -1).mean(axis=1), weights)


def _binary_problems(outputs, targets, labels, loss_code):
    """[(truth (n,) bool, score (n,), predicted (n,) bool)] per binary problem:
    each class against the rest (cross-entropy, the softmax's probability),
    or each output (BCE)."""
    if loss_code == kernels.BCE_WITH_LOGITS:
        return [(targets[:, k] > 0.5, outputs[:, k], outputs[:, k] > 0) for k in range(outputs.shape[1])]
    probabilities = _softmax(outputs)
    predicted = np.argmax(outputs, axis=1)
    return [(labels == c, probabilities[:, c], predicted == c) for c in range(outputs.shape[1])]


def _softmax(outputs):
    shifted = np.asarray(outputs, np.float64) - np.max(outputs, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def balanced_accuracy(outputs, targets, labels, loss_code, weights=None):
    """The mean recall over the classes that occur (sklearn.metrics.balanced_accuracy_score)."""
    w = _weights(weights, len(outputs))
    if loss_code == kernels.BCE_WITH_LOGITS:
        scores = []
        for truth, _, predicted in _binary_problems(outputs, targets, labels, loss_code):
            recalls = [np.sum(w[truth == side] * (predicted[truth == side] == side)) / np.sum(w[truth == side])
                       for side in (False, True) if np.sum(w[truth == side]) > 0]
            scores.append(np.mean(recalls))
        return float(np.mean(scores))
    predicted = np.argmax(outputs, axis=1)
    recalls = [np.sum(w[labels == c] * (predicted[labels == c] == c)) / np.sum(w[labels == c])
               for c in range(outputs.shape[1]) if np.sum(w[labels == c]) > 0]
    return float(np.mean(recalls))


def log_loss(outputs, targets, labels, loss_code, weights=None):
    """The mean negative log-likelihood of the true class (sklearn.metrics.log_loss),
    from the logits themselves: no probability is clipped."""
    outputs = np.asarray(outputs, np.float64)
    if loss_code == kernels.BCE_WITH_LOGITS:
        per = np.maximum(outputs, 0) - outputs * targets + np.log1p(np.exp(-np.abs(outputs)))
        return _mean(per.mean(axis=1), weights)
    top = np.max(outputs, axis=1)
    log_z = top + np.log(np.exp(outputs - top[:, None]).sum(axis=1))
    return _mean(log_z - outputs[np.arange(len(outputs)), labels], weights)


def _binary_auc(truth, score, weights):
    """The area under the ROC curve of ``score`` for ``truth``, tied scores as
    one threshold (sklearn.metrics.roc_auc_score); NaN when one side is empty."""
    w = _weights(weights, len(score))
    order = np.argsort(-score, kind="mergesort")
    score, truth, w = score[order], truth[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last row of each distinct score
    tp = np.r_[0.0, np.cumsum(w * truth)[last]]
    fp = np.r_[0.0, np.cumsum(w * ~truth)[last]]
    if tp[-1] == 0 or fp[-1] == 0:
        return np.nan
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoids under the curve


def auc(outputs, targets, labels, loss_code, weights=None):
    """ROC AUC: of the second class's probability for two classes, else one
    against the rest per class, macro-averaged (multi_class="ovr")."""
    problems = _binary_problems(outputs, targets, labels, loss_code)
    if loss_code == kernels.CROSS_ENTROPY and len(problems) == 2:
        problems = problems[1:]
    scores = [_binary_auc(truth, score, weights) for truth, score, _ in problems]
    if np.isnan(scores).any():
        raise ValueError("auc needs rows of every class (and of its rest) among the scored rows; score on more "
                         "rows, or choose another metric")
    return float(np.mean(scores))


def f1(outputs, targets, labels, loss_code, weights=None):
    """F1 of the second class for two classes, else the macro average over the
    classes (sklearn.metrics.f1_score); a class never predicted nor present scores 0."""
    problems = _binary_problems(outputs, targets, labels, loss_code)
    if loss_code == kernels.CROSS_ENTROPY and len(problems) == 2:
        problems = problems[1:]
    w = _weights(weights, len(outputs))
    scores = []
    for truth, _, predicted in problems:
        tp = np.sum(w * (truth & predicted))
        denominator = 2 * tp + np.sum(w * (truth ^ predicted))
        scores.append(2 * tp / denominator if denominator > 0 else 0.0)
    return float(np.mean(scores))


def per_class(outputs, labels, weights=None):
    """[(precision, recall, f1, support)] per class of cross-entropy logits
    (sklearn.metrics.precision_recall_fscore_support; support as the weight)."""
    w = _weights(weights, len(outputs))
    predicted = np.argmax(outputs, axis=1)
    rows = []
    for c in range(outputs.shape[1]):
        truth, guess = labels == c, predicted == c
        tp, predicted_c, support = np.sum(w * (truth & guess)), np.sum(w * guess), np.sum(w * truth)
        precision = tp / predicted_c if predicted_c > 0 else 0.0
        recall = tp / support if support > 0 else 0.0
        rows.append((precision, recall, 2 * tp / (predicted_c + support) if predicted_c + support > 0 else 0.0,
                     support))
    return rows


def _regression_terms(outputs, targets, weights):
    outputs, targets = np.asarray(outputs, np.float64), np.asarray(targets, np.float64)
    return outputs, targets, None if weights is None else np.asarray(weights, np.float64).reshape(-1, 1)


def r2(outputs, targets, weights=None):
    """Coefficient of determination, averaged over outputs; an output whose
    targets are constant scores 1 if predicted exactly, else 0 (as
    sklearn.metrics.r2_score)."""
    outputs, targets, w = _regression_terms(outputs, targets, weights)
    if w is None:
        residual = np.sum((targets - outputs) ** 2, axis=0)
        total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    else:
        residual = np.sum(w * (targets - outputs) ** 2, axis=0)
        total = np.sum(w * (targets - np.average(targets, axis=0, weights=w[:, 0])) ** 2, axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(scores))


def rmse(outputs, targets, weights=None):
    """The root of the mean squared error per output, averaged over outputs
    (sklearn.metrics.root_mean_squared_error)."""
    outputs, targets, w = _regression_terms(outputs, targets, weights)
    return float(np.mean(np.sqrt(np.average((targets - outputs) ** 2, axis=0, weights=w if w is None else w[:, 0]))))


def mae(outputs, targets, weights=None):
    """The mean absolute error per output, averaged over outputs (sklearn.metrics.mean_absolute_error)."""
    outputs, targets, w = _regression_terms(outputs, targets, weights)
    return float(np.mean(np.average(np.abs(targets - outputs), axis=0, weights=w if w is None else w[:, 0])))


_CLASSIFY = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "log_loss": log_loss, "auc": auc,
             "f1": f1}
_REGRESS = {"r2": r2, "rmse": rmse, "mae": mae}


def score(loss, outputs, targets, labels, weights=None, metric=None):
    """The metric ``metric`` (default ``metric_name(loss)``) of model outputs
    (for the Poisson loss, log rates: scored as rates), weighted by
    ``weights`` (n,) if given."""
    metric = metric or metric_name(loss)
    if classifies(loss):
        return _CLASSIFY[metric](outputs, targets, labels, loss.code, weights)
    return _REGRESS[metric](np.exp(outputs) if loss.code == kernels.POISSON_NLL else outputs, targets, weights)
