"""Loss functions with torch.nn's names, arguments and definitions.

``value = loss(pred, target)`` returns the loss as a float and keeps its
gradient; ``loss.backward()`` returns d(value)/d(pred), shaped like ``pred``.
"""
import numpy as np

import kernels
from fastbp._checks import ENCODE_LABELS, as_choice, as_float, as_labels, as_matrix, describe


class _Loss:
    code = None
    # the keyword argument behind ``param``, if the loss has one
    param_name = None
    # pointwise losses take a scalar or 1-D prediction as one output per sample
    accepts_vector = True

    def __init__(self, reduction="mean"):
        self.reduction = as_choice("reduction", reduction, ("mean", "sum"))
        self._grad = None

    @property
    def param(self):
        """The kernel's scalar parameter (Huber delta or label smoothing)."""
        return getattr(self, self.param_name) if self.param_name else 0.0

    @property
    def name(self):
        return next(name for name, cls in LOSSES.items() if cls is type(self))

    def arguments(self):
        """The constructor's keyword arguments, to rebuild this loss."""
        extra = {self.param_name: self.param} if self.param_name else {}
        return {"reduction": self.reduction, **extra}

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def _prediction(self, pred):
        array = np.asarray(pred)
        dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
        if array.ndim <= 1 and self.accepts_vector:
            array = array.reshape(-1, 1)
        return as_matrix("pred", array, dtype, column_name="outputs")

    def targets(self, target, n_rows, n_outputs, dtype):
        """``target`` checked and converted to the kernel's pair of arrays
        ``(targets, labels)``; the one this loss does not use is empty."""
        array = np.asarray(target)
        if array.ndim <= 1 and n_outputs == 1:
            array = array.reshape(-1, 1)
        if n_outputs > 1 and (array.ndim == 1 or array.ndim == 2 and array.shape[1] == 1):
            # most likely class labels, where reshape(-1, 1) is no way out
            raise ValueError(f"target must have {n_outputs} outputs per sample for {type(self).__name__}, got "
                             f"shape {array.shape}; for class labels use CrossEntropyLoss, or one-hot encode "
                             f"them to {n_outputs} columns: np.eye({n_outputs})[y]")
        targets = as_matrix("target", array, dtype, n_outputs, rows=n_rows, column_name="outputs",
                            hint=f"for class labels use CrossEntropyLoss, and {ENCODE_LABELS}")
        return targets, np.empty(0, dtype=np.int64)

    def _bundle(self):
        """The loss as the compiled epoch takes it (``kernels.Loss``)."""
        return kernels.Loss(self.code, self.param, self.reduction == "mean")

    def __call__(self, pred, target):
        original_shape = np.shape(pred)
        pred = self._prediction(pred)
        targets, labels = self.targets(target, pred.shape[0], pred.shape[1], pred.dtype)
        grad = np.empty_like(pred)
        value = kernels.loss_value_and_grad(grad, pred, targets, labels, self.code, self.param,
                                            self.reduction == "mean")
        self._grad = grad.reshape(original_shape)
        return float(value)

    forward = __call__

    def backward(self):
        """d(value)/d(pred) of the last call, shaped like that call's ``pred``."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs the loss computed first: "
                               "call loss(pred, target)")
        return self._grad


class MSELoss(_Loss):
    """Mean squared error, ``(pred - target)**2`` reduced."""
    code = kernels.MSE


class L1Loss(_Loss):
    """Mean absolute error, ``|pred - target|`` reduced."""
    code = kernels.L1


class HuberLoss(_Loss):
    """Quadratic for ``|pred - target| < delta``, linear beyond."""
    code = kernels.HUBER
    param_name = "delta"

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = as_float("delta", delta, low=0.0, low_open=True)

    def __repr__(self):
        return f"HuberLoss(reduction={self.reduction!r}, delta={self.delta})"


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of ``sigmoid(pred)`` against targets in [0, 1]."""
    code = kernels.BCE_WITH_LOGITS

    def targets(self, target, n_rows, n_outputs, dtype):
        # torch takes any target, but one outside [0, 1] is no probability:
        # training on it silently learns nonsense
        targets, labels = super().targets(target, n_rows, n_outputs, dtype)
        outside = (targets < 0) | (targets > 1)
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ValueError(f"target must hold probabilities in [0, 1] for BCEWithLogitsLoss, got {targets[where]} "
                             f"at index {where}; for class labels 0..n_classes-1 use CrossEntropyLoss, for "
                             f"-1/+1 labels pass (y + 1) / 2")
        return targets, labels


class PoissonNLLLoss(_Loss):
    """Poisson negative log-likelihood of counts given log rates, as torch's
    ``PoissonNLLLoss(log_input=True, full=False)``: ``exp(pred) - target * pred``
    reduced. The prediction is the log of the rate: ``exp`` of the model's
    output is the expected count."""
    code = kernels.POISSON_NLL

    def targets(self, target, n_rows, n_outputs, dtype):
        targets, labels = super().targets(target, n_rows, n_outputs, dtype)
        negative = targets < 0
        if negative.any():
            where = tuple(int(i) for i in np.argwhere(negative)[0])
            raise ValueError(f"target must hold counts >= 0 for PoissonNLLLoss, got {targets[where]} at index "
                             f"{where}")
        return targets, labels


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits (batch, n_classes) and integer labels
    (batch,), with optional label smoothing."""
    code = kernels.CROSS_ENTROPY
    param_name = "label_smoothing"
    accepts_vector = False

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = as_float("label_smoothing", label_smoothing, low=0.0, high=1.0)

    def __repr__(self):
        return f"CrossEntropyLoss(reduction={self.reduction!r}, label_smoothing={self.label_smoothing})"

    def targets(self, target, n_rows, n_outputs, dtype):
        labels = as_labels("target", target, n_outputs, rows=n_rows)
        return np.empty((0, 0), dtype=dtype), labels


LOSSES = {"mse": MSELoss, "l1": L1Loss, "huber": HuberLoss, "cross_entropy": CrossEntropyLoss,
          "bce_with_logits": BCEWithLogitsLoss, "poisson_nll": PoissonNLLLoss}


def as_loss(value):
    """A loss instance from an instance or a name in ``LOSSES``."""
    if isinstance(value, _Loss):
        return value
    if isinstance(value, str):
        return LOSSES[as_choice("loss", value, tuple(LOSSES))]()
    raise TypeError(f"loss must be a fastbp loss or one of {', '.join(LOSSES)}, got {describe(value)}")
