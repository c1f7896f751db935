"""Training loop: whole epochs run inside ``kernels.train_epoch``."""
import math
import time
import warnings

import numpy as np

import kernels
from fastbp._checks import as_bool, as_choice, as_float, as_int, describe
from fastbp.history import History
from fastbp.losses import as_loss
from fastbp import trainer_data
from fastbp.metrics import check_metric, metric_name
from fastbp.mlp import MLP
from fastbp.optim import LBFGS, Optimizer
from fastbp.schedules import Schedule
from fastbp.backends.cpu import HostFit, epoch_function
from fastbp.trainer_state import TrainerState


class Trainer(TrainerState):
    """Fits an MLP with a loss and an optimizer.

    Args:
        model: a fastbp.MLP.
        loss: a fastbp loss (or its name, e.g. "cross_entropy").
        optimizer: a fastbp optimizer built on ``model`` (fastbp.LBFGS: each
            epoch one L-BFGS iteration over the whole training set).
        max_grad_norm: clip the global gradient norm to this before each
            update (torch.nn.utils.clip_grad_norm_); None for no clipping.
        schedule: a learning-rate schedule built on ``optimizer``
            (fastbp.StepLR, CosineAnnealingLR, ReduceLROnPlateau), stepped
            after every epoch; None keeps the rate constant.
        metric: what ``score`` and the history's ``val_metric`` report, one
            of ``fastbp.metrics.CLASSIFY`` or ``REGRESS`` for the loss's task
            (default accuracy to classify, R^2 to regress).

    The trainer keeps everything a run needs to go on: ``epoch``, the
    ``history`` of every epoch, the shuffling stream, the best epoch so far;
    ``fit`` continues from there, and ``save``/``Trainer.load`` carry it
    through a checkpoint file; ``state_dict``/``load_state_dict`` carry it
    in memory (see ``fastbp.trainer_state``).

    Training always goes on from the last epoch's weights. When a fit ends by
    restoring the best epoch's weights (``early_stopping`` with
    ``restore_best``), the model holds the best weights, for ``predict``,
    ``score`` and ``model.save``, and the trainer keeps the last epoch's
    weights aside: the next ``fit``, in this process or after
    ``save``/``Trainer.load``, starts from them, so a run split into several
    fits is bit for bit the run that never stopped. The best epoch's weights
    are kept whether or not a fit asks to restore them, since a later fit may
    ask for a best epoch that came before it.

    Example:
        >>> trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model))
        >>> history = trainer.fit(X, y, epochs=10, batch_size=64, validation_split=0.1, seed=0)
    """

    def __init__(self, model, loss, optimizer, max_grad_norm=None, schedule=None, metric=None):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        loss = as_loss(loss)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastbp optimizer, got {describe(optimizer)}")
        if optimizer.model is not model:
            raise ValueError("optimizer must be built on the same model the Trainer trains")
        if isinstance(optimizer, LBFGS) and (schedule is not None or max_grad_norm is not None):
            raise ValueError("LBFGS takes neither a schedule nor max_grad_norm: its line search sets each step")
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise TypeError(f"schedule must be a fastbp schedule or None, got {describe(schedule)}")
            if schedule.optimizer is not optimizer:
                raise ValueError("schedule must be built on the Trainer's optimizer")
        self.model, self.loss, self.optimizer, self.schedule = model, loss, optimizer, schedule
        self.max_grad_norm = None if max_grad_norm is None else as_float(
            "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
        self.epoch = 0
        self.history = History(metric_name(loss) if metric is None else check_metric(loss, metric))
        self.stop_training = False
        # data a checkpoint carries for its writer (the command line keeps
        # its preprocessing here); JSON-serialisable values only
        self.metadata = {}
        self._rng_state = None
        # (epoch, monitored value) of the best epoch so far, lower better (a
        # third entry "metric" when the metric was monitored), and (epoch,
        # parameters) of it
        self._best = None
        self._best_params = None
        # the last epoch's parameters while the model holds the restored best
        # ones, else None
        self._last_params = None
        # where a checkpoint written in the middle of an epoch stopped, from
        # Trainer.load (or while fit writes one), else None: see _stopped_epoch
        self._epoch_state = None

    @property
    def unfinished_epoch(self):
        """Where a checkpoint written in the middle of an epoch stopped, or None.

        A dict of ``batch_size`` and ``n_samples`` (the batches and the
        training rows that epoch ran over), which the next ``fit`` must be given
        again to go on with it; a copy, so that changing it changes nothing.
        """
        if self._epoch_state is None:
            return None
        return {key: self._epoch_state[key] for key in ("batch_size", "n_samples")}

    def _data(self, X, y, name="X", y_name="y", sample_weight=None):
        """(X, targets, labels, weights) checked against the model and loss
        (``fastbp.trainer_data.rows``)."""
        return trainer_data.rows(self.model, self.loss, X, y, sample_weight, name, y_name)

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=None, validation_data=None,
            validation_split=0.0, early_stopping=None, min_delta=0.0, restore_best=None, callbacks=(),
            checkpoint_every=None, checkpoint_path=None, on_nonfinite="raise", sample_weight=None,
            monitor="loss"):
        """Train for ``epochs`` more passes over (X, y) in minibatches.

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
            validation_data: (X_val, y_val) scored after every epoch, or
                (X_val, y_val, sample_weight_val) for a weighted score.
            validation_split: or the fraction of (X, y) to hold out for that,
                taken from the end of the data.
            early_stopping: stop once the monitored value has not improved
                for this many epochs; None trains every epoch.
            min_delta: the least change that counts as an improvement (of
                the per-sample loss History reports, or of the metric).
            restore_best: end with the parameters of the best epoch, even
                one from an earlier fit call (training goes on from the last
                epoch's, see the class docstring); None (the default) does
                with early_stopping only.
            monitor: what picks the best epoch and stops early: "loss", the
                validation loss (the training loss without validation data),
                or "metric", the validation metric (``history.metric``; a
                tie goes to the lower validation loss).
            callbacks: a list of callables ``f(trainer, logs)`` (or objects
                with ``on_epoch_end(trainer, logs)``), or None for none, run
                after every epoch; logs is
                the epoch's row of the history. Setting
                ``trainer.stop_training = True`` ends the run.
            checkpoint_every: write a checkpoint (``save``) to
                ``checkpoint_path`` after every this many optimizer steps
                (counted over the whole run: whenever the step count is a
                multiple of it), in the middle of an epoch too; None for none.
                A run that dies anywhere goes on from the last one
                (``Trainer.load``, then ``fit`` with the same data,
                ``batch_size`` and ``shuffle``, and ``seed=None``) to exactly
                the parameters and history of the run that never stopped.
            checkpoint_path: where to write those checkpoints.
            on_nonfinite: what a step whose loss or gradient is NaN or
                infinite does. "raise": FloatingPointError naming the epoch,
                the step and the first layer whose gradient went non-finite;
                the model and optimizer keep the parameters and state of the
                last finite step, and the epoch is not counted. "skip": the
                batch is left out (no update) and training goes on; the
                history's ``skipped`` counts such batches per epoch, and an
                epoch whose every batch is skipped raises.
            sample_weight: None, or a weight >= 0 per sample (n_samples,):
                each batch's loss is the weighted mean over its rows
                (``loss(pred, y, sample_weight)``), and a row weighing 0 is
                left out of training, as if it were not in X. The history's
                ``loss`` is each batch's weighted loss, counted by its rows;
                its ``val_loss`` the weighted mean over the validation rows.
                Every device and the distributed trainer take them.

        Returns:
            the trainer's History (every epoch of every fit call so far).
        """
        (X, targets, labels, weights), validation = trainer_data.split(self.model, self.loss, X, y, sample_weight,
                                                                       validation_data, validation_split)
        epochs = as_int("epochs", epochs, minimum=0)
        batch_size = as_int("batch_size", batch_size, minimum=1)
        shuffle = as_bool("shuffle", shuffle)
        patience = None if early_stopping is None else as_int("early_stopping", early_stopping, minimum=1)
        min_delta = as_float("min_delta", min_delta, low=0.0)
        restore_best = patience is not None if restore_best is None else as_bool("restore_best", restore_best)
        monitor = as_choice("monitor", monitor, ("loss", "metric"))
        if monitor == "metric" and validation is None:
            raise ValueError("monitor='metric' watches the validation metric: give validation_data or "
                             "validation_split, or monitor='loss'")
        seed = None if seed is None else as_int("seed", seed, minimum=0)
        if not isinstance(callbacks, (list, tuple, type(None))):
            raise TypeError(f"callbacks must be a list of callables (callbacks=[f] for one), got {describe(callbacks)}")
        callbacks = [self._as_callback(i, c) for i, c in enumerate(callbacks or ())]
        checkpoint_every, checkpoint_path = self._checkpoint_arguments(checkpoint_every, checkpoint_path)
        on_nonfinite = as_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
        full_batch = isinstance(self.optimizer, LBFGS)
        if full_batch and (checkpoint_every is not None or on_nonfinite == "skip" or self.model.device == "cuda"):
            raise ValueError("LBFGS trains on the CPU, with on_nonfinite='raise' and without checkpoint_every: "
                             "SciPy keeps its state inside one fit call")
        # the rows that count: a row weighing 0 is left out, so the run is the one without it
        kept = np.flatnonzero(weights > 0) if weights.size and not weights.all() else None
        n = X.shape[0] if kept is None else kept.shape[0]
        resumed = self._stopped_epoch(n, batch_size, shuffle, seed)
        if seed is not None or self._rng_state is None:
            self._rng_state = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)
        model, optimizer, loss = self.model, self.optimizer, self.loss
        rows = min(batch_size, n)
        if self._last_params is not None:
            model._params[...] = self._last_params
            self._last_params = None
        model._ensure_capacity(rows)
        model._forward_rows = None  # the cached forward pass is about to be overwritten
        order = np.arange(n, dtype=np.int64)
        keep_best = restore_best
        if self._best is not None and (len(self._best) == 3) != (monitor == "metric"):
            self._best = None  # the best epoch so far was chosen by the other measure
        self.stop_training = False
        end_epoch = (lambda logs, start: self._end_epoch(logs, start, validation, min_delta, callbacks, patience,
                                                         monitor))
        if full_batch:
            times = [time.perf_counter()]

            def iteration(value):
                times.append(time.perf_counter())
                self.epoch += 1
                return end_epoch({"epoch": self.epoch, "lr": optimizer.lr, "skipped": 0, "loss": value}, times[-2])
            if epochs:
                optimizer.run(loss, X, targets, labels, epochs, iteration, weights if weights.size else None)
        else:
            if model.device == "cuda":
                from fastbp.backends.cuda import DeviceFit

                backend = DeviceFit(model, optimizer, loss, X, targets, labels, batch_size, self.max_grad_norm or 0.0,
                                    weights)
            else:
                backend = HostFit(model, optimizer, loss, X, targets, labels, batch_size, self.max_grad_norm or 0.0,
                                  self._epoch_function(rows), weights)
            rows_order = order if kept is None else np.empty_like(order)
            for _ in range(epochs):
                start = time.perf_counter()
                logs = {"epoch": self.epoch + 1, "lr": optimizer.lr}
                position, loss_sum, skipped = resumed or (0, 0.0, (0, 0))
                resumed = self._epoch_state = None
                # a checkpoint in the middle of the epoch draws its order again from here
                epoch_rng_state = None if checkpoint_every is None else self._rng_state.copy()
                if shuffle:
                    kernels.random_permutation(order, self._rng_state)
                if kept is not None:
                    np.take(kept, order, out=rows_order)
                loss_sum, skipped = self._epoch_steps(backend.steps, rows_order, position, loss_sum, skipped, batch_size,
                                                      shuffle, on_nonfinite, checkpoint_every, checkpoint_path,
                                                      epoch_rng_state, backend.stretch)
                logs["skipped"] = skipped[0]
                logs["loss"] = loss_sum / (n - skipped[1]) if skipped[1] < n else math.nan
                if not np.isfinite(logs["loss"]):
                    raise FloatingPointError(self._diverged(skipped, n, batch_size))
                self.epoch += 1
                if end_epoch(logs, start):
                    break
        if keep_best and self._best is not None and self._best[0] != self.epoch:
            best = self._best_params
            if best is not None and best[0] == self._best[0]:
                self._last_params = model._params.copy()
                model._params[...] = best[1]
            else:
                warnings.warn(f"the weights of the best epoch ({self._best[0]}) were not kept (the checkpoint "
                              f"predates fastbp keeping them); the model keeps epoch {self.epoch}'s",
                              UserWarning, stacklevel=2)
        return self.history

    def _end_epoch(self, logs, start, validation, min_delta, callbacks, patience, monitor):
        """After an epoch: validation, the history's row, the best epoch, the
        schedule, the callbacks; returns whether training stops."""
        model = self.model
        if validation is not None:
            logs["val_loss"], outputs = self._evaluate(*validation)
            logs["val_metric"] = trainer_data.weighted_score(self.loss, outputs, *validation[1:], self.metric)
        logs["seconds"] = time.perf_counter() - start
        self.history.append(logs)
        monitored = logs.get("val_loss", logs["loss"])
        self._best = trainer_data.best_so_far(self._best, self.history, monitor, min_delta)
        if self._best[0] == self.epoch:
            kept = model._params.copy() if self._best_params is None else self._best_params[1]
            kept[...] = model._params
            self._best_params = (self.epoch, kept)
        if self.schedule is not None:
            self.schedule.step(monitored)
        for callback in callbacks:
            callback(self, logs)
        return self.stop_training or (patience is not None and self.epoch - self._best[0] >= patience)

    def _epoch_function(self, rows):
        """The CPU epoch ``fit`` runs (``kernels.train_epoch``'s arguments and
        result) and the context it runs in (``backends.cpu.epoch_function``);
        a subclass may train otherwise."""
        return epoch_function(self.model, rows)

    def _stopped_epoch(self, n, batch_size, shuffle, seed):
        """(position, loss sum so far, (batches, samples) skipped) in the
        epoch a loaded checkpoint stopped in, or None; refuses a fit that would not go on with that epoch as it
        began."""
        state = self._epoch_state
        if state is None:
            return None
        where = (f"the checkpoint stopped in epoch {self.epoch + 1}, after sample {state['position']} of "
                 f"{state['n_samples']}, in batches of {state['batch_size']}")
        if n != state["n_samples"]:
            raise ValueError(f"X: {n} samples, but {where}; continue on the same {state['n_samples']} training "
                             f"samples")
        if batch_size != state["batch_size"]:
            raise ValueError(f"batch_size={batch_size}: {where}; continue with batch_size={state['batch_size']}")
        if shuffle != state["shuffle"]:
            raise ValueError(f"shuffle={shuffle}: {where}; continue with shuffle={state['shuffle']}")
        if seed is not None:
            raise ValueError(f"seed={seed}: {where}, in the order its shuffling stream drew; continue with "
                             f"seed=None")
        self._rng_state = state["rng_state"].copy()
        return state["position"], state["loss_sum"], tuple(state["skipped"])

    def _epoch_steps(self, steps, order, position, loss_sum, skipped, batch_size, shuffle, on_nonfinite,
                     checkpoint_every, checkpoint_path, epoch_rng_state, stretch):
        """Train the epoch from entry ``position`` of ``order`` on;
        ``steps(part, loss_sum)`` trains over a stretch of the order
        (``train_epoch``'s loss sum and ``done``). Returns the epoch's loss sum and the
        (batches, samples) skipped, counting in ``loss_sum`` and ``skipped``,
        those of the entries before ``position``.

        One kernel call trains up to the next checkpoint, a non-finite step,
        the end of the epoch or ``stretch`` entries (a multiple of the batch
        size) further. The kernel walks any stretch of the order, its batches
        starting where the stretch does, so the stretches, cut at multiples of
        the batch size, give the batches one call would.
        """
        n, optimizer = order.shape[0], self.optimizer
        while position < n:
            end = min(n, position + stretch)
            if checkpoint_every is not None:
                end = min(end, position + (checkpoint_every - optimizer.step_count % checkpoint_every) * batch_size)
            loss_sum, done = steps(order[position:end], loss_sum)
            position += done
            if position < end:
                if on_nonfinite == "raise":
                    raise FloatingPointError(self._diverged(skipped, n, batch_size, position))
                rows = min(batch_size, n - position)
                skipped = (skipped[0] + 1, skipped[1] + rows)
                position += rows
            elif checkpoint_every is not None and optimizer.step_count % checkpoint_every == 0:
                # before the epoch's validation and schedule step, which the resumed run takes
                self._epoch_state = {"rng_state": epoch_rng_state, "position": position, "loss_sum": loss_sum,
                                     "skipped": skipped, "batch_size": batch_size, "n_samples": n,
                                     "shuffle": shuffle}
                try:
                    self.save(checkpoint_path)
                finally:
                    self._epoch_state = None
        return loss_sum, skipped

    @staticmethod
    def _as_callback(index, callback):
        if hasattr(callback, "on_epoch_end"):
            return callback.on_epoch_end
        if callable(callback):
            return callback
        raise TypeError(f"callbacks[{index}] must be callable or have on_epoch_end, got {describe(callback)}")

    def predict(self, X):
        """The model's outputs for X (n_samples, n_in)."""
        return self.model.predict(X)

    def _evaluate(self, X, targets, labels, weights=trainer_data.NO_WEIGHTS):
        """(loss per sample over the whole of X, as History reports it, and the
        outputs (n_samples, n_out))."""
        return trainer_data.evaluate(self.model, self.loss, X, targets, labels, weights)

    def evaluate(self, X, y, sample_weight=None):
        """The loss over the whole of (X, y), as one batch of that loss would
        give (for reduction="sum", the sum over the samples), weighted by
        ``sample_weight`` if given."""
        X, targets, labels, weights = self._data(X, y, sample_weight=sample_weight)
        per_sample = self._evaluate(X, targets, labels, weights)[0]
        return per_sample if self.loss.reduction == "mean" else per_sample * X.shape[0]

    @property
    def metric(self):
        """The name of the metric ``score`` reports (``history.metric``)."""
        return self.history.metric

    @property
    def best_epoch(self):
        """The best epoch so far, as the last fit's ``monitor`` chose it; None before any."""
        return None if self._best is None else self._best[0]

    def score(self, X, y, sample_weight=None, metric=None):
        """The metric ``metric`` (default ``self.metric``) on (X, y),
        weighted by ``sample_weight`` if given."""
        metric = self.metric if metric is None else check_metric(self.loss, metric)
        X, targets, labels, weights = self._data(X, y, sample_weight=sample_weight)
        return trainer_data.weighted_score(self.loss, self._evaluate(X, targets, labels, weights)[1], targets,
                                           labels, weights, metric)
