"""What ``fastbp train`` reports of the test rows: the chosen metric and the
task's others, and for classification a report per class."""
import numpy as np

from fastbp import metrics

# a report per class is printed for at most this many classes
MAX_CLASS_ROWS = 20


def test_report(trainer, prepared, outputs, targets, weights):
    """The lines that score ``outputs`` (the model's, of the test rows)
    against ``targets`` (as the loss takes them), weighted by ``weights``
    (None: not): regression in the target's own units."""
    chosen, loss, n = trainer.metric, trainer.loss, len(outputs)
    weighted = " (weighted)" if weights is not None else ""
    if prepared.task != "classify":
        truth = prepared.steps.decode(targets, loss.name)
        predicted = prepared.steps.decode(outputs, loss.name)
        names = [chosen] + [name for name in metrics.REGRESS if name != chosen]
        values = {name: metrics.score(loss, predicted, truth, None, weights, name) for name in names}
        return [f"test {chosen} {values[chosen]:.4f}{weighted}"
                + f" ({', '.join(f'{name} {values[name]:.4g}' for name in names[1:])}, in the target's units)"]
    binary = loss.name == "bce_with_logits"
    labels = (targets[:, 0] > 0.5).astype(np.int64) if binary else targets
    lines = []
    for name in dict.fromkeys([chosen, "accuracy"]):
        try:
            value = metrics.score(loss, outputs, targets, labels, weights, name)
        except ValueError as error:  # AUC of test rows that lack a class
            lines.append(f"test {name}: not scored ({error})")
            continue
        detail = weighted
        if name == "accuracy" and weights is None:
            detail = f" ({int(round(value * n))}/{n} correct)"
        lines.append(f"test {name} {value:.4f}{detail}")
    logits = np.column_stack([np.zeros(n), outputs[:, 0]]) if binary else outputs
    classes = [str(c) for c in prepared.steps.classes]
    if len(classes) > MAX_CLASS_ROWS:
        return lines + [f"(no report per class: {len(classes)} classes, more than {MAX_CLASS_ROWS})"]
    width = max(8, *map(len, classes))
    lines.append(f"{'class':<{width}}  precision  recall      f1  {'support' + weighted}")
    for name, (precision, recall, f1, support) in zip(classes, metrics.per_class(logits, labels, weights)):
        lines.append(f"{name:<{width}}  {precision:9.3f}  {recall:6.3f}  {f1:6.3f}  {support:g}")
    return lines
