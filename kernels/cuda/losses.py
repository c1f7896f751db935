"""Losses on the device: the gradient written elementwise, the value summed
by a block reduction and added into a device scalar, so that a training loop
reads the loss back once per epoch. Twins of ``kernels.losses``, which holds
the definitions; the pointwise formula is the CPU one, compiled for the device.
"""

import numpy as np
from numba import cuda, float64

from kernels import losses as _cpu
from kernels.cuda.config import THREADS, block_sum, device_twin

_pointwise_value_and_grad = device_twin(_cpu._pointwise)
_cross_entropy_row = device_twin(_cpu.cross_entropy_row)


@cuda.jit
def _pointwise(dpred, loss_sum, pred, target, code, delta, scale, weight, weights):
    partial = cuda.shared.array(THREADS, float64)
    thread = cuda.threadIdx.x
    n = pred.shape[1]
    weighted = weights.shape[0] > 0
    total = 0.0
    for index in range(thread, pred.size, THREADS):
        i, j = index // n, index % n
        row_weight = weights[i] if weighted else 1.0
        loss, grad = _pointwise_value_and_grad(float(pred[i, j]), float(target[i, j]), code, delta)
        total += loss * row_weight
        dpred[i, j] = grad * scale * row_weight
    partial[thread] = total
    total = block_sum(partial)
    if thread == 0:
        loss_sum[0] += total * scale * weight


@cuda.jit
def _cross_entropy(dlogits, loss_sum, logits, labels, label_smoothing, scale, weight, weights, class_weights):
    # one thread per row, each kernels.losses.cross_entropy_row
    partial = cuda.shared.array(THREADS, float64)
    thread = cuda.threadIdx.x
    weighted = weights.shape[0] > 0
    total = 0.0
    for i in range(thread, logits.shape[0], THREADS):
        row_weight = weights[i] if weighted else 1.0
        total += row_weight * _cross_entropy_row(dlogits, logits, labels, i, label_smoothing, scale * row_weight,
                                                 class_weights)
    partial[thread] = total
    total = block_sum(partial)
    if thread == 0:
        loss_sum[0] += total * scale * weight


def _no_weights():
    """An empty float64 device array, for a kernel's absent weights."""
    return cuda.device_array(0, dtype=np.float64)


def _read(loss_sum):
    return float(loss_sum.copy_to_host()[0])


def pointwise_loss(dpred, pred, target, code, delta, mean, loss_sum=None, weight=1.0, weights=None, scale=None):
    """MSE, L1, Huber or BCE-with-logits; twin of ``kernels.pointwise_loss``.

    Parameters
    ----------
    dpred, pred, target, code, delta, mean : as the CPU kernel's, device arrays
    loss_sum : (1,) float64 device array the value times ``weight`` is added
        to; None to return the value instead (one read from the device)
    weights : (batch,) float64 device array of row weights, or None (as
        ``kernels.losses.scaled_pointwise_loss``'s)
    scale : the mean's factor (``kernels.losses.mean_scale``); None for that of ``mean``
    """
    into = cuda.to_device(np.zeros(1)) if loss_sum is None else loss_sum
    if scale is None:
        scale = 1.0 / pred.size if mean else 1.0
    _pointwise[1, THREADS](dpred, into, pred, target, code, float(delta), float(scale), float(weight),
                           _no_weights() if weights is None else weights)
    return _read(into) if loss_sum is None else None


def cross_entropy_loss(dlogits, logits, labels, label_smoothing, mean, loss_sum=None, weight=1.0, weights=None,
                       class_weights=None, scale=None):
    """Softmax cross-entropy with the softmax fused into the gradient; twin of
    ``kernels.cross_entropy_loss``. ``loss_sum``, ``weight``, ``weights`` and
    ``scale`` as in ``pointwise_loss``; ``class_weights`` (n_classes,) a
    float64 device array, or None (as ``kernels.losses.cross_entropy_row``'s)."""
    into = cuda.to_device(np.zeros(1)) if loss_sum is None else loss_sum
    if scale is None:
        scale = 1.0 / logits.shape[0] if mean else 1.0
    _cross_entropy[1, THREADS](dlogits, into, logits, labels, float(label_smoothing), float(scale), float(weight),
                               _no_weights() if weights is None else weights,
                               _no_weights() if class_weights is None else class_weights)
    return _read(into) if loss_sum is None else None


def loss_value_and_grad(dpred, pred, target, labels, code, param, mean, loss_sum=None, weight=1.0, weights=None,
                        class_weights=None, scale=None):
    """Dispatch on ``code``; twin of ``kernels.loss_value_and_grad`` (and,
    with ``weights``, ``class_weights`` and ``scale``, of
    ``kernels.losses.scaled_loss_value_and_grad``)."""
    if code == _cpu.CROSS_ENTROPY:
        return cross_entropy_loss(dpred, pred, labels, param, mean, loss_sum, weight, weights, class_weights, scale)
    return pointwise_loss(dpred, pred, target, code, param, mean, loss_sum, weight, weights, scale)
