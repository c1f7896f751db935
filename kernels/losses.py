"""Losses: each kernel returns the loss value and writes its gradient w.r.t.
the prediction in the same pass, as llm.c fuses softmax with cross-entropy.

Definitions are those of torch.nn.functional. ``mean=True`` is
``reduction="mean"`` (divide by the number of elements, or by the batch for
cross-entropy), ``mean=False`` is ``reduction="sum"``. Sums run in float64.
"""
import math

import numpy as np

from kernels.checks import check_indices, check_same_shape, check_size
from kernels.config import inline_jit, jit

MSE, L1, HUBER, CROSS_ENTROPY, BCE_WITH_LOGITS, POISSON_NLL = range(6)
N_LOSSES = 6


@inline_jit
def _pointwise(x, y, code, delta):
    """(loss, d loss / d x) of one prediction ``x`` against its target ``y``."""
    if code == BCE_WITH_LOGITS:
        # exp(-|x|) serves the loss and the sigmoid: for x >= 0 it is
        # exp(-x), below exp(x). Written so that a NaN x goes to exp as it is.
        e = math.exp(-x if x >= 0.0 else x)
        # the gradient first: the next step waits on it, not on the loss
        probability = 1.0 / (1.0 + e) if x >= 0.0 else e / (1.0 + e)
        # max(x, 0) - x*y + log(1 + exp(-|x|)) is torch's form without overflow
        loss = max(x, 0.0) - x * y + math.log1p(e)
        return loss, probability - y
    if code == POISSON_NLL:
        # torch's PoissonNLLLoss(log_input=True): x is the log of the rate
        rate = math.exp(x)
        return rate - y * x, rate - y
    d = x - y
    if code == MSE:
        return d * d, 2.0 * d
    if code == L1:
        return abs(d), (d > 0.0) - (d < 0.0)
    # HUBER: quadratic inside |d| < delta, linear outside
    if abs(d) < delta:
        return 0.5 * d * d, d
    return delta * (abs(d) - 0.5 * delta), delta if d > 0.0 else -delta


@jit
def pointwise_loss(dpred, pred, target, code, delta, mean):
    """MSE, L1, Huber, BCE-with-logits or Poisson NLL: value returned, gradient written.

    Parameters
    ----------
    dpred : (batch, n) array, written with d(loss)/d(pred)
    pred : (batch, n) array; logits for BCE_WITH_LOGITS, log rates for POISSON_NLL
    target : (batch, n) array; probabilities in [0, 1] for BCE_WITH_LOGITS,
        counts (any value >= 0) for POISSON_NLL
    code : MSE, L1, HUBER, BCE_WITH_LOGITS or POISSON_NLL
    delta : float, the Huber threshold (ignored by the others)
    mean : bool, divide by ``pred.size`` (else sum)

    The three arrays share one shape and dtype (ValueError, TypeError).
    """
    kernel = "pointwise_loss"
    check_same_shape(kernel, "target", target, "pred", pred)
    check_same_shape(kernel, "dpred", dpred, "pred", pred)
    if code < 0 or code >= N_LOSSES or code == CROSS_ENTROPY:
        raise ValueError("pointwise_loss: code must be kernels.MSE, L1, HUBER, BCE_WITH_LOGITS or POISSON_NLL, got "
                         + str(code) + " (cross-entropy is kernels.cross_entropy_loss)")
    return scaled_pointwise_loss(dpred, pred, target, code, delta, 1.0 / pred.size if mean else 1.0, np.empty(0))


@inline_jit
def scaled_pointwise_loss(dpred, pred, target, code, delta, scale, weights):
    """``pointwise_loss`` with the mean's divisor given: ``scale`` is
    1 / (elements of the whole batch) when ``pred`` holds a part of it.
    ``weights`` (batch,), unless empty, scales each row's loss
    and gradient (the weighted mean's ``scale`` is then 1 / (sum of the
    batch's weights * n))."""
    total = 0.0
    if weights.shape[0] > 0:
        for i in range(pred.shape[0]):
            row_scale = scale * weights[i]
            row = 0.0
            for j in range(pred.shape[1]):
                loss, grad = _pointwise(float(pred[i, j]), float(target[i, j]), code, delta)
                row += loss
                dpred[i, j] = grad * row_scale
            total += weights[i] * row
        return total * scale
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            loss, grad = _pointwise(float(pred[i, j]), float(target[i, j]), code, delta)
            total += loss
            dpred[i, j] = grad * scale
    return total * scale


@jit
def cross_entropy_loss(dlogits, logits, labels, label_smoothing, mean):
    """Softmax cross-entropy from logits and integer labels, with the softmax
    fused into the gradient: ``dlogits = (softmax(logits) - q) * scale`` where
    ``q`` is the (smoothed) one-hot target.

    Parameters
    ----------
    dlogits : (batch, n_classes) array, written
    logits : (batch, n_classes) array
    labels : (batch,) integer array, each in [0, n_classes)
    label_smoothing : float in [0, 1]
    mean : bool, divide by ``batch`` (else sum)

    ``dlogits`` has the shape and dtype of ``logits``, ``labels`` one entry
    per row, each a valid class (ValueError, TypeError).
    """
    kernel = "cross_entropy_loss"
    check_same_shape(kernel, "dlogits", dlogits, "logits", logits)
    check_size(kernel, "labels", labels, 0, logits.shape[0], "logits.shape[0] (batch)")
    check_indices(kernel, "labels", labels, logits.shape[1], "logits.shape[1] (n_classes)")
    return scaled_cross_entropy_loss(dlogits, logits, labels, label_smoothing,
                                     1.0 / logits.shape[0] if mean else 1.0, np.empty(0), np.empty(0))


@inline_jit
def cross_entropy_row(dlogits, logits, labels, i, label_smoothing, scale, class_weights):
    """Row ``i`` of ``scaled_cross_entropy_loss``: writes its ``dlogits`` and
    returns its loss before ``scale`` (the CUDA twin runs this very code, a
    row per thread). With ``class_weights`` (n_classes,) (empty: none), the
    loss of torch's ``CrossEntropyLoss(weight=class_weights)``: the label's
    weight ``w_y`` scales the likelihood term and each class's weight its
    share of the smoothing term, ``(1 - e) w_y nll + e / C sum_c w_c (lse - logit_c)``."""
    n_classes = logits.shape[1]
    smooth = label_smoothing / n_classes
    weighted = class_weights.shape[0] > 0
    largest = -math.inf
    for c in range(n_classes):
        largest = max(largest, float(logits[i, c]))
    exp_sum = 0.0
    logit_sum = 0.0
    weight_sum = 0.0
    for c in range(n_classes):
        shifted = math.exp(logits[i, c] - largest)
        exp_sum += shifted
        if weighted:
            logit_sum += class_weights[c] * logits[i, c]
            weight_sum += class_weights[c]
        else:
            logit_sum += logits[i, c]
        dlogits[i, c] = shifted  # kept so that the softmax below needs no second exp
    log_sum_exp = largest + math.log(exp_sum)
    label = labels[i]
    nll = log_sum_exp - logits[i, label]
    inverse_sum = 1.0 / exp_sum
    if weighted:
        # d/d logit_c: (1 - e) w_y (p_c - [c == y]) + e / C (sum_k w_k p_c - w_c)
        label_weight = (1.0 - label_smoothing) * class_weights[label]
        for c in range(n_classes):
            probability = dlogits[i, c] * inverse_sum
            dlogits[i, c] = (label_weight * (probability - (c == label))
                             + smooth * (weight_sum * probability - class_weights[c])) * scale
        return label_weight * nll + smooth * (weight_sum * log_sum_exp - logit_sum)
    for c in range(n_classes):
        probability = dlogits[i, c] * inverse_sum
        dlogits[i, c] = (probability - smooth - (1.0 - label_smoothing) * (c == label)) * scale
    return (1.0 - label_smoothing) * nll + smooth * (n_classes * log_sum_exp - logit_sum)


@jit
def scaled_cross_entropy_loss(dlogits, logits, labels, label_smoothing, scale, weights, class_weights):
    """``cross_entropy_loss`` with the mean's divisor given: ``scale`` is
    1 / (rows of the whole batch) when ``logits`` holds a part of it.
    ``weights`` (batch,) scales each row's loss and gradient and
    ``class_weights`` (n_classes,) weighs the classes (``cross_entropy_row``);
    either may be empty, for none. A weighted mean's ``scale`` is
    1 / (sum over the batch of weights[i] * class_weights[labels[i]])."""
    total = 0.0
    if weights.shape[0] > 0:
        for i in range(logits.shape[0]):
            total += weights[i] * cross_entropy_row(dlogits, logits, labels, i, label_smoothing, scale * weights[i],
                                                    class_weights)
        return total * scale
    for i in range(logits.shape[0]):
        total += cross_entropy_row(dlogits, logits, labels, i, label_smoothing, scale, class_weights)
    return total * scale


@jit
def loss_value_and_grad(dpred, pred, target, labels, code, param, mean):
    """Dispatch on ``code``: ``labels`` feeds cross-entropy, ``target`` every
    other loss (pass an empty array for the one not used). ``param`` is the
    Huber delta or the label smoothing."""
    if code == CROSS_ENTROPY:
        return cross_entropy_loss(dpred, pred, labels, param, mean)
    return pointwise_loss(dpred, pred, target, code, param, mean)


@jit
def mean_scale(code, divisor, n_out, mean):
    """The factor ``mean`` reduction multiplies a batch's summed loss by:
    ``divisor`` is the batch's rows, or the sum of its row weights
    (``batch_weight``)."""
    if not mean:
        return 1.0
    return 1.0 / divisor if code == CROSS_ENTROPY else 1.0 / (divisor * n_out)


@inline_jit
def batch_weight(weights, labels, class_weights, order, start, rows):
    """The divisor of a weighted mean over the rows ``order[start:start + rows]``:
    the sum of their ``weights`` times their label's ``class_weights``
    (either empty: all ones), the number of rows when both are empty."""
    if weights.shape[0] == 0 and class_weights.shape[0] == 0:
        return float(rows)
    total = 0.0
    for r in range(rows):
        sample = order[start + r]
        weight = weights[sample] if weights.shape[0] > 0 else 1.0
        if class_weights.shape[0] > 0:
            weight *= class_weights[labels[sample]]
        total += weight
    return total


# Inlined, with scaled_pointwise_loss and _pointwise: a tiny network's step
# then computes its loss without a call or an array handed over.
@inline_jit
def scaled_loss_value_and_grad(dpred, pred, target, labels, weights, class_weights, code, param, scale):
    """``loss_value_and_grad`` for a part of a batch, with the whole batch's
    ``mean_scale``, each row weighted by ``weights`` and each class by
    ``class_weights`` (cross-entropy only; either empty: none)."""
    if code == CROSS_ENTROPY:
        return scaled_cross_entropy_loss(dpred, pred, labels, param, scale, weights, class_weights)
    return scaled_pointwise_loss(dpred, pred, target, code, param, scale, weights)


@jit
def weighted_loss_value_and_grad(dpred, pred, target, labels, weights, class_weights, code, param, scale):
    """``loss_value_and_grad`` with a weight per row (``weights`` (batch,),
    or empty for all ones): returns
    ``scale * sum_i weights[i] * loss_i`` (``loss_i`` summed over the row's
    outputs) and writes ``dpred`` with each row's gradient times
    ``scale * weights[i]``; ``class_weights`` (n_classes,) weighs the
    classes of cross-entropy as torch's ``CrossEntropyLoss(weight=)``
    (empty: none). A weighted mean is ``scale = 1 / batch_weight(...)``
    (times ``1 / n_outputs`` for the pointwise losses); a zero weight
    leaves the row out."""
    kernel = "weighted_loss_value_and_grad"
    check_same_shape(kernel, "dpred", dpred, "pred", pred)
    if weights.shape[0] > 0:
        check_size(kernel, "weights", weights, 0, pred.shape[0], "pred.shape[0] (batch), or none")
    if code == CROSS_ENTROPY:
        check_size(kernel, "labels", labels, 0, pred.shape[0], "pred.shape[0] (batch)")
        check_indices(kernel, "labels", labels, pred.shape[1], "pred.shape[1] (n_classes)")
        if class_weights.shape[0] > 0:
            check_size(kernel, "class_weights", class_weights, 0, pred.shape[1], "pred.shape[1] (n_classes)")
    else:
        check_same_shape(kernel, "target", target, "pred", pred)
        if code < 0 or code >= N_LOSSES:
            raise ValueError("weighted_loss_value_and_grad: code must be one of kernels.MSE ... POISSON_NLL, got "
                             + str(code))
    return scaled_loss_value_and_grad(dpred, pred, target, labels, weights, class_weights, code, param, scale)
