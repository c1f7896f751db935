"""Loss functions with torch.nn's names, arguments and definitions.

``value = loss(pred, target)`` returns the loss as a float and keeps its
gradient; ``loss.backward()`` returns d(value)/d(pred), shaped like ``pred``.
``loss(pred, target, sample_weight=w)`` weighs each row: the weighted mean
``sum_i w_i loss_i / sum_i w_i`` for reduction="mean" (scikit-learn's
definition, which torch's ``CrossEntropyLoss(weight=)`` shares for class
weights), ``sum_i w_i loss_i`` for "sum".
"""
import numpy as np

import kernels
from fastbp._checks import ENCODE_LABELS, as_choice, as_float, as_labels, as_matrix, as_weights, describe


class _Loss:
    code = None
    # the keyword argument behind ``param``, if the loss has one
    param_name = None
    # pointwise losses take a scalar or 1-D prediction as one output per sample
    accepts_vector = True

    def __init__(self, reduction="mean"):
        self.reduction = as_choice("reduction", reduction, ("mean", "sum"))
        self._grad = None
        # cross-entropy's weight per class (float64); empty for none
        self.class_weights = np.empty(0)

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
        return kernels.Loss(self.code, self.param, self.reduction == "mean", self.class_weights)

    def divisor(self, labels, weights, n_rows):
        """What a weighted mean over rows with these ``labels`` and
        ``weights`` (empty: none) divides by: the sum of their weights times
        their classes' weights, ``n_rows`` when there are none."""
        return kernels.losses.batch_weight(weights, labels, self.class_weights, np.arange(n_rows), 0, n_rows)

    def value_and_grad(self, dpred, pred, targets, labels, weights):
        """The loss of ``pred`` (its reduction, weighted by ``weights``, an
        empty array for none) into ``dpred``; returns the value."""
        mean = self.reduction == "mean"
        if not weights.size and not self.class_weights.size:
            return kernels.loss_value_and_grad(dpred, pred, targets, labels, self.code, self.param, mean)
        scale = kernels.losses.mean_scale(self.code, self.divisor(labels, weights, pred.shape[0]), pred.shape[1],
                                          mean)
        return kernels.weighted_loss_value_and_grad(dpred, pred, targets, labels, weights, self.class_weights,
                                                    self.code, self.param, scale)

    def __call__(self, pred, target, sample_weight=None):
        original_shape = np.shape(pred)
        pred = self._prediction(pred)
        targets, labels = self.targets(target, pred.shape[0], pred.shape[1], pred.dtype)
        weights = np.empty(0) if sample_weight is None else as_weights("sample_weight", sample_weight, pred.shape[0])
        grad = np.empty_like(pred)
        value = self.value_and_grad(grad, pred, targets, labels, weights)
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
    (batch,), with optional label smoothing and a weight per class.

    Args:
        reduction: "mean" (over the rows; with weights, the weighted mean) or "sum".
        label_smoothing: in [0, 1], as torch's.
        weight: None, or a weight > 0 per class (n_classes,), as torch's
            ``CrossEntropyLoss(weight=)``: the label's weight scales each row's
            likelihood term and each class's weight its share of the smoothing
            term; the mean divides by the sum of the rows' label weights.
            ``fastbp.class_weights(y, "balanced")`` gives scikit-learn's
            balanced weights.
    """
    code = kernels.CROSS_ENTROPY
    param_name = "label_smoothing"
    accepts_vector = False

    def __init__(self, reduction="mean", label_smoothing=0.0, weight=None):
        super().__init__(reduction)
        self.label_smoothing = as_float("label_smoothing", label_smoothing, low=0.0, high=1.0)
        if weight is not None:
            self.class_weights = as_weights("weight", weight, np.size(weight), "class", positive=True)

    def arguments(self):
        weights = {"weight": self.class_weights.tolist()} if self.class_weights.size else {}
        return {**super().arguments(), **weights}

    def __repr__(self):
        weights = f", weight={self.class_weights.tolist()}" if self.class_weights.size else ""
        return f"CrossEntropyLoss(reduction={self.reduction!r}, label_smoothing={self.label_smoothing}{weights})"

    def targets(self, target, n_rows, n_outputs, dtype):
        if self.class_weights.size and self.class_weights.size != n_outputs:
            raise ValueError(f"weight holds {self.class_weights.size} class weights, but the model has {n_outputs} "
                             f"outputs (classes); give one weight per class")
        labels = as_labels("target", target, n_outputs, rows=n_rows)
        return np.empty((0, 0), dtype=dtype), labels


def class_weights(y, class_weight, n_classes=None):
    """A weight per class, as scikit-learn's ``class_weight``: "balanced"
    gives class ``c`` the weight ``n / (n_classes * count_c)`` over the
    integer labels ``y``; a dict ``{class: weight}`` gives its classes those
    weights and the others 1. ``n_classes`` defaults to ``max(y) + 1``."""
    labels = as_labels("y", y, np.iinfo(np.int64).max)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    if isinstance(class_weight, str):
        as_choice("class_weight", class_weight, ("balanced",))
        counts = np.bincount(labels, minlength=n_classes)
        if (counts == 0).any():
            raise ValueError(f"class_weight='balanced' needs every class in y, but class {int(np.argmin(counts))} "
                             f"has no rows")
        return labels.shape[0] / (n_classes * counts.astype(np.float64))
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be 'balanced' or a dict {{class: weight}}, got {describe(class_weight)}")
    weights = np.ones(n_classes)
    for key, value in class_weight.items():
        if not isinstance(key, (int, np.integer)) or not 0 <= key < n_classes:
            raise ValueError(f"class_weight has a weight for class {key!r}, which is not a class of y "
                             f"(0..{n_classes - 1})")
        weights[key] = as_float(f"class_weight[{key}]", value, low=0.0, low_open=True)
    return weights


LOSSES = {"mse": MSELoss, "l1": L1Loss, "huber": HuberLoss, "cross_entropy": CrossEntropyLoss,
          "bce_with_logits": BCEWithLogitsLoss, "poisson_nll": PoissonNLLLoss}


def as_loss(value):
    """A loss instance from an instance or a name in ``LOSSES``."""
    if isinstance(value, _Loss):
        return value
    if isinstance(value, str):
        return LOSSES[as_choice("loss", value, tuple(LOSSES))]()
    raise TypeError(f"loss must be a fastbp loss or one of {', '.join(LOSSES)}, got {describe(value)}")
