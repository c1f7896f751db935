"""The rows a ``Trainer.fit`` trains and validates on: (X, targets, labels,
weights) checked against the model and loss, the validation part split
off, and the weighted loss and metric of an evaluation."""
import numpy as np

import kernels
from fastbp._checks import as_float, as_matrix, as_weights, describe
from fastbp.metrics import LOWER_IS_BETTER, score

# rows per loss call of an evaluation: bounds the gradient scratch
_LOSS_ROWS = 4096
NO_WEIGHTS = np.empty(0)


def rows(model, loss, X, y, sample_weight=None, name="X", y_name="y", weight_name="sample_weight"):
    """(X, targets, labels, weights) of one set of rows; ``weights`` is the
    float64 (n,) sample weights, or empty for none."""
    X = as_matrix(name, X, model.dtype, model.sizes[0])
    if np.ndim(y) >= 1 and np.shape(y)[0] != X.shape[0]:
        raise ValueError(f"{y_name} must hold one target per sample of {name}: {name} has {X.shape[0]} rows, "
                         f"{y_name} has {np.shape(y)[0]}; take both from the same samples (and the same split)")
    targets, labels = loss.targets(y, X.shape[0], model.sizes[-1], model.dtype)
    weights = NO_WEIGHTS if sample_weight is None else as_weights(weight_name, sample_weight, X.shape[0])
    return X, targets, labels, weights


def split(model, loss, X, y, sample_weight, validation_data, validation_split):
    """(train part, validation part or None), each ``rows``."""
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise TypeError(f"validation_data must be a pair (X_val, y_val) or a triple (X_val, y_val, "
                            f"sample_weight_val), got {describe(validation_data)}")
        X_val, y_val, w_val = (*validation_data, None)[:3]
        validation = rows(model, loss, X_val, y_val, w_val, "validation_data[0]", "validation_data[1]",
                          "validation_data[2]")
        return rows(model, loss, X, y, sample_weight), validation
    fraction = as_float("validation_split", validation_split, low=0.0, high=1.0, high_open=True)
    train = rows(model, loss, X, y, sample_weight)
    n_val = int(round(fraction * train[0].shape[0]))
    if n_val == 0:
        return train, None
    if n_val == train[0].shape[0]:
        raise ValueError(f"validation_split={fraction} leaves no training samples out of {n_val}")
    cut = train[0].shape[0] - n_val  # the last samples, as Keras takes them
    parts = tuple(a[:cut] if a.size else a for a in train), tuple(a[cut:] if a.size else a for a in train)
    for part, what in zip(parts, ("training", "validation")):
        if part[3].size and not part[3].sum() > 0:
            raise ValueError(f"sample_weight: every {what} row of validation_split={fraction} weighs 0")
    return parts


def evaluate(model, loss, X, targets, labels, weights):
    """(loss per sample over the whole of X, as History reports it: with
    weights, their weighted mean, and the outputs (n_samples, n_out))."""
    outputs = model.predict(X)
    if weights.size or loss.class_weights.size:
        # the whole set's weighted mean (or sum, per sample), a block at a time
        scale = kernels.losses.mean_scale(loss.code, loss.divisor(labels, weights, X.shape[0]), outputs.shape[1],
                                          loss.reduction == "mean")
        dpred = np.empty_like(outputs[:_LOSS_ROWS])
        total = 0.0
        for start in range(0, X.shape[0], _LOSS_ROWS):
            output = outputs[start:start + _LOSS_ROWS]
            stop = start + output.shape[0]
            total += kernels.weighted_loss_value_and_grad(
                dpred[:output.shape[0]], output, targets[start:stop] if targets.size else targets,
                labels[start:stop] if labels.size else labels, weights[start:stop] if weights.size else weights,
                loss.class_weights, loss.code, loss.param, scale)
        return (total if loss.reduction == "mean" else total / X.shape[0]), outputs
    mean = loss.reduction == "mean"
    total = 0.0
    for start in range(0, X.shape[0], _LOSS_ROWS):
        output = outputs[start:start + _LOSS_ROWS]
        stop = start + output.shape[0]
        value = kernels.loss_value_and_grad(
            np.empty_like(output), output, targets[start:stop] if targets.size else targets,
            labels[start:stop] if labels.size else labels, loss.code, loss.param, mean)
        # mean: the value is per element (per sample for cross-entropy)
        total += value * output.shape[0] if mean else value
    return total / X.shape[0], outputs


def weighted_score(loss, outputs, targets, labels, weights, metric=None):
    """The metric ``metric`` (``fastbp.metrics.score``) of ``outputs``, weighted by ``weights`` (empty: none)."""
    return score(loss, outputs, targets, labels, weights if weights.size else None, metric)


def best_so_far(best, history, monitor, min_delta):
    """The best epoch, (epoch, value) lower better, once ``history``'s last
    row is in: by the loss it monitors, or (``monitor`` "metric", the entry
    (epoch, value, "metric")) by the validation metric, a tie going to the
    lower validation loss."""
    epoch, loss = history.epoch[-1], history.val_loss[-1]
    loss = history.loss[-1] if np.isnan(loss) else loss
    if monitor == "loss":
        return (epoch, loss) if best is None or loss < best[1] - min_delta else best
    value = history.val_metric[-1] * (1 if history.metric in LOWER_IS_BETTER else -1)
    if best is None or value < best[1] - min_delta or (
            value == best[1] and loss < history.val_loss[history.epoch.index(best[0])]):
        return (epoch, value, "metric")
    return best
