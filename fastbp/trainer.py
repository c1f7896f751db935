"""Training loop: whole epochs run inside ``kernels.train_epoch``."""
import numpy as np

import kernels
from kernels.network import layer_units, network_forward
from fastbp._checks import as_bool, as_float, as_int, as_matrix, describe
from fastbp.losses import _Loss, as_loss
from fastbp.mlp import MLP
from fastbp.optim import Optimizer

# rows per forward call in predict/evaluate: bounds the activation memory
_INFERENCE_ROWS = 4096


class Trainer:
    """Fits an MLP with a loss and an optimizer.

    Args:
        model: a fastbp.MLP.
        loss: a fastbp loss (or its name, e.g. "cross_entropy").
        optimizer: a fastbp optimizer built on ``model``.
        max_grad_norm: clip the global gradient norm to this before each
            update (torch.nn.utils.clip_grad_norm_); None for no clipping.

    Example:
        >>> trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model))
        >>> history = trainer.fit(X, y, epochs=10, batch_size=64, seed=0)
    """

    def __init__(self, model, loss, optimizer, max_grad_norm=None):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        loss = as_loss(loss)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastbp optimizer, got {describe(optimizer)}")
        if optimizer.model is not model:
            raise ValueError("optimizer must be built on the same model the Trainer trains")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.max_grad_norm = None if max_grad_norm is None else as_float(
            "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
        self._rng_state = None

    def _data(self, X, y):
        model = self.model
        X = as_matrix("X", X, model.dtype, model.sizes[0])
        targets, labels = self.loss.targets(y, X.shape[0], model.sizes[-1], model.dtype)
        return X, targets, labels

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=None):
        """Train for ``epochs`` passes over (X, y) in minibatches.

        Args:
            X: (n_samples, n_in) inputs.
            y: (n_samples, n_out) targets, or (n_samples,) integer labels for
                cross-entropy.
            epochs: passes over the data (>= 0).
            batch_size: samples per update; the last batch of an epoch may be
                smaller, as with torch's DataLoader.
            shuffle: draw a new sample order each epoch.
            seed: seeds the shuffling; None continues the previous stream (or
                starts a random one).

        Returns:
            list of floats: each epoch's mean per-sample training loss (each
            batch's loss weighted by its size).
        """
        X, targets, labels = self._data(X, y)
        epochs = as_int("epochs", epochs, minimum=0)
        batch_size = as_int("batch_size", batch_size, minimum=1)
        shuffle = as_bool("shuffle", shuffle)
        if seed is not None or self._rng_state is None:
            self._rng_state = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)
        model, optimizer, loss = self.model, self.optimizer, self.loss
        n, n_in, n_out = X.shape[0], model.sizes[0], model.sizes[-1]
        rows = min(batch_size, n)
        model._ensure_capacity(rows)
        model._forward_rows = None  # the cached forward pass is about to be overwritten
        batch_x = np.empty(rows * n_in, dtype=model.dtype)
        batch_targets = np.empty(rows * n_out if targets.size else 0, dtype=model.dtype)
        batch_labels = np.empty(rows if labels.size else 0, dtype=np.int64)
        order = np.arange(n, dtype=np.int64)
        history = []
        for _ in range(epochs):
            if shuffle:
                kernels.shuffle_indices(order, self._rng_state)
            loss_sum, optimizer.step_count = kernels.train_epoch(
                model._params, model._grads, optimizer.code, optimizer._hyper, *optimizer._state,
                optimizer.step_count, X, targets, labels, order, batch_size, self.max_grad_norm or 0.0,
                model._layers, model._activation_params, loss.code, loss.param, loss.reduction == "mean",
                batch_x, batch_targets, batch_labels, model._z, model._a, model._scratch)
            history.append(loss_sum / n)
        return history

    def _batches(self, X):
        """Yield (start, output view) for each inference chunk of X."""
        model = self.model
        rows = min(_INFERENCE_ROWS, X.shape[0])
        model._ensure_capacity(rows)
        model._forward_rows = None
        for start in range(0, X.shape[0], rows):
            chunk = X[start:start + rows]
            network_forward(model._z, model._a, chunk, model._params, model._layers, model._activation_params)
            yield start, layer_units(model._a, model._layers, len(model._layers) - 1, chunk.shape[0])

    def predict(self, X):
        """The model's outputs for X (n_samples, n_in), computed in chunks."""
        X = as_matrix("X", X, self.model.dtype, self.model.sizes[0])
        out = np.empty((X.shape[0], self.model.sizes[-1]), dtype=self.model.dtype)
        for start, output in self._batches(X):
            out[start:start + output.shape[0]] = output
        return out

    def evaluate(self, X, y):
        """The loss over the whole of (X, y), as one batch of that loss would give."""
        X, targets, labels = self._data(X, y)
        mean = self.loss.reduction == "mean"
        total = 0.0
        for start, output in self._batches(X):
            stop = start + output.shape[0]
            grad = np.empty_like(output)
            value = kernels.loss_value_and_grad(
                grad, output, targets[start:stop] if targets.size else targets,
                labels[start:stop] if labels.size else labels, self.loss.code, self.loss.param, mean)
            # mean: the value is per element (per sample for cross-entropy)
            total += value * output.shape[0] if mean else value
        return total / X.shape[0] if mean else total
