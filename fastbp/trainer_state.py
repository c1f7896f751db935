"""What a Trainer carries from one fit to the next, as a state dict, and the
checkpoint files that store it (``Trainer.save`` / ``Trainer.load``)."""
import copy
import os

import numpy as np

from fastbp import archive
from fastbp._checks import as_bool, as_float, as_int, as_path, describe
from fastbp._state import as_state_array, check_equal, check_keys
from fastbp.history import History
from fastbp.losses import LOSSES
from fastbp.mlp import MLP
from fastbp.optim import FLAGS, OPTIMIZERS, Optimizer
from fastbp.schedules import SCHEDULES

KEYS = ("model", "optimizer", "loss", "schedule", "max_grad_norm", "epoch", "history", "metadata", "rng_state",
        "best", "best_params", "last_params", "in_epoch")
IN_EPOCH_KEYS = ("rng_state", "position", "loss_sum", "skipped", "batch_size", "n_samples", "shuffle")


def optimizer_layout(kind):
    """(hyperparameter names, those that are flags, state rows) of an optimizer kind."""
    optimizer = OPTIMIZERS[kind]
    return optimizer.hyperparameters, FLAGS, optimizer.n_state


def _or_none(value, check):
    return None if value is None else check(value)


class TrainerState:
    """``state_dict`` / ``load_state_dict``, ``save`` / ``load`` of Trainer.

    The state dict holds ``model``, ``optimizer`` (their state dicts),
    ``loss`` and ``schedule`` (``kind``, ``arguments``, and for the schedule
    its ``state``; None without one), ``max_grad_norm``, ``epoch``,
    ``history`` (``History.as_dict``), ``metadata``, ``rng_state`` (the
    shuffling stream, (1,) uint64, or None before any fit), ``best``
    ([epoch, monitored loss] of the best epoch, [epoch, monitored metric,
    "metric"] when the metric picked it, lower better, or None), ``best_params``
    (``epoch`` and ``params`` of the best epoch kept, or None),
    ``last_params`` (the last epoch's parameters while the model holds
    restored best ones, else None) and ``in_epoch`` (None at the end of an
    epoch; else where in the next one the run stopped: the ``rng_state``
    before that epoch drew its order, ``position``, ``loss_sum``,
    ``skipped``, ``batch_size``, ``n_samples``, ``shuffle``).
    """

    def state_dict(self):
        """Everything ``load_state_dict`` restores, as plain values and copies of arrays."""
        schedule, best, in_epoch = self.schedule, self._best_params, self._epoch_state
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "loss": {"kind": self.loss.name, "arguments": self.loss.arguments()},
            "schedule": None if schedule is None else {"kind": schedule.name, "arguments": schedule.arguments(),
                                                       "state": schedule.state_dict()},
            "max_grad_norm": self.max_grad_norm, "epoch": self.epoch, "history": self.history.as_dict(),
            "metadata": copy.deepcopy(self.metadata),
            "rng_state": None if self._rng_state is None else self._rng_state.copy(),
            "best": None if self._best is None else list(self._best),
            "best_params": None if best is None else {"epoch": best[0], "params": best[1].copy()},
            "last_params": None if self._last_params is None else self._last_params.copy(),
            # a position set before skipped batches were counted has none
            "in_epoch": None if in_epoch is None else {**in_epoch, "rng_state": in_epoch["rng_state"].copy(),
                                                       "skipped": list(in_epoch.get("skipped", (0, 0)))},
        }

    @classmethod
    def from_state_dict(cls, state):
        """The trainer (and its model, optimizer, loss, schedule) of ``state``."""
        check_keys("state", state, KEYS)
        model = MLP.from_state_dict(state["model"])
        optimizer = Optimizer.from_state_dict(model, state["optimizer"])
        check_keys("state['loss']", state["loss"], ("kind", "arguments"))
        loss = LOSSES[state["loss"]["kind"]](**state["loss"]["arguments"])
        schedule = state["schedule"]
        if schedule is not None:
            check_keys("state['schedule']", schedule, ("kind", "arguments", "state"))
            schedule = SCHEDULES[schedule["kind"]](optimizer, **schedule["arguments"])
        trainer = cls(model, loss, optimizer, max_grad_norm=state["max_grad_norm"], schedule=schedule)
        trainer.load_state_dict(state)
        return trainer

    def _checked_state(self, state):
        """The trainer's own entries of ``state``, checked and copied."""
        check_keys("state", state, KEYS)
        model, loss, schedule = self.model, self.loss, self.schedule
        n, dtype = model.n_params, model.dtype
        check_keys("state['loss']", state["loss"], ("kind", "arguments"))
        advice = "build the trainer with the loss and schedule of this state (Trainer.from_state_dict does)"
        check_equal("state['loss']", state["loss"], {"kind": loss.name, "arguments": loss.arguments()}, advice)
        if (state["schedule"] is None) != (schedule is None):
            raise ValueError(f"state['schedule']: expected {'None' if schedule is None else 'a schedule'}, got "
                             f"{describe(state['schedule'])}; {advice}")
        if schedule is not None:
            check_keys("state['schedule']", state["schedule"], ("kind", "arguments", "state"))
            check_equal("state['schedule']['kind']", state["schedule"]["kind"], schedule.name, advice)
            check_equal("state['schedule']['arguments']", state["schedule"]["arguments"], schedule.arguments(),
                        advice)
        try:
            history = History.from_dict(state["history"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"state['history'] must be a History.as_dict(), got {describe(state['history'])} "
                             f"({type(error).__name__}: {error})") from None
        if not isinstance(state["metadata"], dict):
            raise TypeError(f"state['metadata'] must be a dict, got {describe(state['metadata'])}")
        best = state["best"]
        if best is not None and (not isinstance(best, (list, tuple)) or len(best) not in (2, 3)
                                 or best[2:] not in ([], ["metric"], ("metric",))):
            raise TypeError(f"state['best'] must be None, [epoch, monitored loss] or [epoch, monitored metric, "
                            f"'metric'], got {describe(best)}")
        best_params = state["best_params"]
        if best_params is not None:
            check_keys("state['best_params']", best_params, ("epoch", "params"))
            best_params = (as_int("state['best_params']['epoch']", best_params["epoch"], minimum=1),
                           as_state_array("state['best_params']['params']", best_params["params"], (n,), dtype))
        return {
            "max_grad_norm": _or_none(state["max_grad_norm"],
                                      lambda v: as_float("state['max_grad_norm']", v, low=0.0, low_open=True)),
            "epoch": as_int("state['epoch']", state["epoch"], minimum=0), "history": history,
            "metadata": copy.deepcopy(state["metadata"]),
            "_rng_state": _or_none(state["rng_state"],
                                   lambda v: as_state_array("state['rng_state']", v, (1,), np.uint64)),
            "_best": _or_none(best, lambda b: (as_int("state['best'][0]", b[0], minimum=1),
                                               float(as_float("state['best'][1]", b[1])), *b[2:])),
            "_best_params": best_params,
            "_last_params": _or_none(state["last_params"],
                                     lambda v: as_state_array("state['last_params']", v, (n,), dtype)),
            "_epoch_state": _or_none(state["in_epoch"], self._checked_in_epoch),
        }

    @staticmethod
    def _checked_in_epoch(in_epoch):
        check_keys("state['in_epoch']", in_epoch, IN_EPOCH_KEYS)
        skipped = in_epoch["skipped"]
        if not isinstance(skipped, (list, tuple)) or len(skipped) != 2:
            raise TypeError(f"state['in_epoch']['skipped'] must be [batches, samples], got {describe(skipped)}")
        key = "state['in_epoch'][{!r}]".format
        return {"rng_state": as_state_array(key("rng_state"), in_epoch["rng_state"], (1,), np.uint64),
                "position": as_int(key("position"), in_epoch["position"], minimum=0),
                "loss_sum": as_float(key("loss_sum"), in_epoch["loss_sum"]),
                "skipped": tuple(as_int(key("skipped"), count, minimum=0) for count in skipped),
                "batch_size": as_int(key("batch_size"), in_epoch["batch_size"], minimum=1),
                "n_samples": as_int(key("n_samples"), in_epoch["n_samples"], minimum=1),
                "shuffle": as_bool(key("shuffle"), in_epoch["shuffle"])}

    def load_state_dict(self, state):
        """Take the whole state of ``state`` (from ``state_dict()`` of a
        trainer with the same kinds of model, optimizer, loss and schedule);
        checks everything first and leaves the trainer unchanged on bad input."""
        checked = self._checked_state(state)
        parts = [(self.model, state["model"]), (self.optimizer, state["optimizer"])]
        if self.schedule is not None:
            parts.append((self.schedule, state["schedule"]["state"]))
        before = [part.state_dict() for part, _ in parts]
        try:
            for part, part_state in parts:
                part.load_state_dict(part_state)
        except BaseException:
            # a part that refused its state leaves the ones before it as they were
            for (part, _), kept in zip(parts, before):
                part.load_state_dict(kept)
            raise
        for name, value in checked.items():
            setattr(self, name, value)

    def save(self, path):
        """Write a checkpoint (model, optimizer state, schedule, epoch,
        shuffling stream, history) to ``path`` atomically; ``Trainer.load``
        resumes from it exactly."""
        archive.write_checkpoint(path, self.state_dict())

    def _checkpoint_arguments(self, checkpoint_every, checkpoint_path):
        if checkpoint_every is None:
            if checkpoint_path is not None:
                raise ValueError("checkpoint_path needs checkpoint_every, the number of optimizer steps between "
                                 "checkpoints (e.g. checkpoint_every=100)")
            return None, None
        checkpoint_every = as_int("checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} needs checkpoint_path, the file to write the "
                             f"checkpoints to")
        checkpoint_path = as_path("checkpoint_path", checkpoint_path)
        folder = os.path.dirname(os.path.abspath(checkpoint_path))
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint_path: folder {folder!r} does not exist; create it first (os.makedirs)")
        if os.path.isdir(checkpoint_path):
            raise ValueError(f"checkpoint_path: {checkpoint_path!r} is a folder; give a file name in it")
        return checkpoint_every, checkpoint_path

    @classmethod
    def load(cls, path):
        """The Trainer a checkpoint written by ``Trainer.save`` holds, ready
        to ``fit`` on exactly as the run that wrote it would have; a missing,
        truncated, corrupt or foreign file, or one of another format version,
        raises a ValueError that says which."""
        path, contents = archive.read(path, archive.CHECKPOINT)
        state, empty = archive.checkpoint_state(path, contents, optimizer_layout)
        try:
            trainer = cls.from_state_dict(state)
            for row in empty:
                if trainer.optimizer.state_in_use[row]:
                    raise ValueError(f"optimizer_state_{row} is empty but {trainer.optimizer!r} updates it")
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"{path!r} is a damaged fastbp checkpoint ({type(error).__name__}: {error})") from None
        return trainer

    def _diverged(self, skipped, n, batch_size, position=None):
        """The FloatingPointError's message for a step that went non-finite at
        entry ``position`` of the epoch's order (None: the epoch's loss, every
        batch skipped or the sum of finite batch losses overflowed)."""
        model, optimizer = self.model, self.optimizer
        epoch, lr = self.epoch + 1, optimizer.lr
        lower = f"lower the learning rate (lr={lr}), set max_grad_norm"
        fix = f"{lower}, or fit(on_nonfinite='skip') to skip such batches"
        if position is None:
            if skipped[1] == n:
                return (f"training diverged: every batch of epoch {epoch} ({skipped[0]}) had a non-finite loss or "
                        f"gradient and was skipped; the model is unchanged since; {lower}")
            return (f"training diverged: the loss summed over epoch {epoch} overflowed, though every batch's was "
                    f"finite; {lower}")
        where = next((f"layer {i}'s {part} gradient holds NaN or infinity (the first layer that does)"
                      for i, (W, b) in enumerate(model.grads) for part, grad in (("weight", W), ("bias", b))
                      if grad is not None and not np.isfinite(grad).all()),
                     "the loss is NaN or infinite (the gradients are finite)")
        batch = position // batch_size + 1
        return (f"training diverged at step {optimizer.step_count + 1} (batch {batch} of "
                f"{-(-n // batch_size)} in epoch {epoch}): {where}; "
                f"the model and optimizer hold the parameters and state of step {optimizer.step_count}, the last "
                f"finite one; {fix}")
