"""Learning-rate schedules with torch.optim.lr_scheduler's names, arguments
and values, stepped once per epoch.

Each schedule writes the optimizer's learning rate in place (the array the
update kernel reads) and keeps its own state in plain numbers, so that a
checkpoint can store it and a resumed run sets the same rates.
"""
import math

from fastbp._checks import as_choice, as_float, as_int, describe
from fastbp._state import check_keys
from fastbp.optim import Optimizer


class Schedule:
    """Base class: ``step()`` after each epoch (``step(metric)`` for
    ReduceLROnPlateau)."""

    name = None
    # the attributes ``state_dict`` saves, beyond ``last_epoch`` and ``base_lr``
    _state_names = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastbp optimizer, got {describe(optimizer)}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._arguments)
        return f"{type(self).__name__}({args})"

    def step(self, metric=None):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def lr_at(self, epoch):
        """The rate after ``epoch`` steps (a resumed run that re-plans the schedule sets it)."""
        raise NotImplementedError

    def arguments(self):
        """The constructor's keyword arguments, to rebuild this schedule."""
        return {name: getattr(self, name) for name in self._arguments}

    def state_dict(self):
        """Where the schedule stands (not its arguments: a schedule re-planned
        with other arguments takes the state of the old one)."""
        names = ("last_epoch", "base_lr") + self._state_names
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state):
        """Take the position of ``state`` (from ``state_dict()`` of a schedule
        of this kind); checks everything before changing anything."""
        check_keys("state", state, ("last_epoch", "base_lr") + self._state_names)
        checked = {"last_epoch": as_int("state['last_epoch']", state["last_epoch"], minimum=0),
                   "base_lr": as_float("state['base_lr']", state["base_lr"], low=0.0)}
        checked.update(self._checked_state(state))
        for name, value in checked.items():
            setattr(self, name, value)

    def _checked_state(self, state):
        """The values of ``_state_names`` in ``state``, checked."""
        return {}


class StepLR(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    name = "step"
    _arguments = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = as_int("step_size", step_size, minimum=1)
        self.gamma = as_float("gamma", gamma, low=0.0, low_open=True)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(Schedule):
    """Anneal from the initial rate to ``eta_min`` along half a cosine over
    ``T_max`` epochs (torch's closed form)."""

    name = "cosine"
    _arguments = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = as_int("T_max", T_max, minimum=1)
        self.eta_min = as_float("eta_min", eta_min, low=0.0)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class ReduceLROnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` once the monitored metric has
    not improved for more than ``patience`` epochs (torch's rules: relative or
    absolute threshold, cooldown, min_lr, and no change smaller than eps)."""

    name = "plateau"
    _arguments = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
    _state_names = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__(optimizer)
        self.mode = as_choice("mode", mode, ("min", "max"))
        self.factor = as_float("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = as_int("patience", patience, minimum=0)
        self.threshold = as_float("threshold", threshold, low=0.0)
        self.threshold_mode = as_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = as_int("cooldown", cooldown, minimum=0)
        self.min_lr = as_float("min_lr", min_lr, low=0.0)
        self.eps = as_float("eps", eps, low=0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _checked_state(self, state):
        best = state["best"]
        # the best metric starts at an infinity, which as_float refuses
        if not (isinstance(best, (int, float)) and not isinstance(best, bool) and best == best):
            raise TypeError(f"state['best'] must be a number (or an infinity), got {describe(best)}")
        return {"best": float(best),
                "num_bad_epochs": as_int("state['num_bad_epochs']", state["num_bad_epochs"], minimum=0),
                "cooldown_counter": as_int("state['cooldown_counter']", state["cooldown_counter"], minimum=0)}

    def _improves(self, metric):
        if self.mode == "min":
            bound = self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return metric < bound
        bound = self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return metric > bound

    def step(self, metric=None):
        metric = as_float("metric", metric)
        self.last_epoch += 1
        if self._improves(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0


SCHEDULES = {schedule.name: schedule for schedule in (StepLR, CosineAnnealingLR, ReduceLROnPlateau)}
