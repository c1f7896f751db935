"""Per-epoch record of a training run."""
import math

import numpy as np


class History:
    """What each epoch of a Trainer's run gave, one list per column.

    Columns: ``epoch`` (counting from 1 over every ``fit`` call), ``loss``
    (the training loss per sample, averaged over the epoch's batches),
    ``val_loss`` (the validation loss per sample, after the epoch) and
    ``val_metric`` (both NaN without validation data), ``lr`` (the learning
    rate the epoch trained with), ``seconds``, and ``skipped`` (the batches
    left out for a non-finite loss or gradient, with
    ``fit(on_nonfinite="skip")``). ``metric`` names the
    metric: "accuracy" or "r2".

    Both losses are per sample whatever the loss's reduction, so that they
    compare, and so do early stopping's ``min_delta`` and the plateau
    schedule's threshold: with reduction="mean" that is the loss's own value,
    with reduction="sum" its value divided by the number of samples.

    Example:
        >>> history = trainer.fit(X, y, epochs=10, validation_split=0.1)
        >>> history.val_loss[-1], history.best_epoch
        >>> history.plot("history.png")
    """

    columns = ("epoch", "loss", "val_loss", "val_metric", "lr", "seconds", "skipped")

    def __init__(self, metric):
        self.metric = metric
        for column in self.columns:
            setattr(self, column, [])

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        return f"History(metric={self.metric!r}, epochs={len(self)})"

    def append(self, logs):
        for column in self.columns:
            getattr(self, column).append(logs.get(column, 0 if column == "skipped" else math.nan))

    def as_dict(self):
        return {"metric": self.metric, **{column: list(getattr(self, column)) for column in self.columns}}

    @classmethod
    def from_dict(cls, data):
        history = cls(data["metric"])
        for column in cls.columns:
            # checkpoints from before a column existed: 0 for every epoch
            values = data.get(column, [0] * len(data["epoch"]))
            setattr(history, column, [int(v) if column in ("epoch", "skipped") else float(v) for v in values])
        return history

    @property
    def has_validation(self):
        return any(not math.isnan(v) for v in self.val_loss)

    @property
    def best_epoch(self):
        """The epoch with the lowest validation loss (training loss without
        validation data); None before any epoch."""
        monitored = self.val_loss if self.has_validation else self.loss
        if not monitored:
            return None
        return self.epoch[int(np.nanargmin(monitored))]

    def plot(self, path):
        """Write a PNG of training and validation loss, and the validation
        metric, per epoch. Needs matplotlib (``pip install 'fastbp[plot]'``)."""
        try:
            import matplotlib
        except ImportError:
            raise ImportError("History.plot needs matplotlib; install it with: pip install 'fastbp[plot]'") from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if self.has_validation else 1
        figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
        axes = axes[0]
        axes[0].plot(self.epoch, self.loss, label="training")
        if self.has_validation:
            axes[0].plot(self.epoch, self.val_loss, label="validation")
            axes[1].plot(self.epoch, self.val_metric, color="C1", label="validation")
            axes[1].set(xlabel="epoch", ylabel=self.metric, title=self.metric)
            axes[1].legend()
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss", yscale="log" if min(self.loss, default=0) > 0 else "linear")
        axes[0].legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
