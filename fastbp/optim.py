"""Optimizers with torch.optim's names, hyperparameters, defaults and update
rules, each one loop over the model's flat parameter buffer."""
import numpy as np

import kernels
from fastbp._checks import as_bool, as_float, as_int, describe
from fastbp._state import as_state_array, check_equal, check_keys
from fastbp.mlp import MLP


class Optimizer:
    """Base class: owns the state buffers and the step count; ``step()``
    applies one update from the gradients in ``model.grads``.

    ``state_dict()`` holds ``kind`` (the name in OPTIMIZERS), the
    ``hyperparameters`` by name, ``step_count`` and ``state``, the
    ``(n_state, n_params)`` array of the state buffers in the kernel's order
    (a row this configuration does not update, see ``state_in_use``, is
    zeros)."""

    code = None
    # names of the kernel's scalar arguments, in the kernel's order
    hyperparameters = ()
    # rows of the state array: the buffers the update kernel may use
    n_state = 0

    def __init__(self, model, **hyper):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        self.model = model
        self._hyper = np.array([float(hyper[name]) for name in self.hyperparameters], dtype=np.float64)
        self.step_count = 0
        # one (k, n_params) array, k the buffers the kernel reads in this configuration
        self._state = np.zeros((kernels.state_rows(self.code, self._hyper), model.n_params), dtype=model.dtype)

    def _check_hyper(self, hyper):
        """Refuse a combination of hyperparameters the update rule does not define."""

    @property
    def state_in_use(self):
        """Per row of ``state_dict()["state"]``, whether this configuration updates it."""
        return tuple(bool(used) for used in kernels.optimizers.state_used(self.code, self._hyper))[:self.n_state]

    def _state_array(self):
        """The state buffers as one (n_state, n_params) array (a copy), the
        rows this configuration keeps no buffer for zeros."""
        rows = np.zeros((self.n_state, self.model.n_params), dtype=self.model.dtype)
        rows[:len(self._state)] = self._state
        return rows

    def _set_state_array(self, rows):
        """Copy ``rows`` (n_state, n_params), checked, into the state buffers
        this configuration (the hyperparameters already taken) keeps."""
        self._state = rows[:kernels.state_rows(self.code, self._hyper)].copy()

    def state_dict(self):
        """Everything ``load_state_dict`` restores, as plain values and a copy of the state."""
        return {"kind": self.name,
                "hyperparameters": {name: bool(value) if name in FLAGS else float(value)
                                    for name, value in zip(self.hyperparameters, self._hyper)},
                "step_count": self.step_count, "state": self._state_array()}

    @classmethod
    def from_state_dict(cls, model, state):
        """The optimizer of ``state``'s kind and hyperparameters on ``model``, holding its state."""
        check_keys("state", state, ("kind", "hyperparameters", "step_count", "state"))
        if state["kind"] not in OPTIMIZERS:
            raise ValueError(f"state['kind'] must be one of {', '.join(map(repr, OPTIMIZERS))}, got "
                             f"{describe(state['kind'])}")
        kind = OPTIMIZERS[state["kind"]]
        check_keys("state['hyperparameters']", state["hyperparameters"], kind.hyperparameters)
        # the constructor's arguments: Adam takes betas, and its class decides decoupled
        arguments = {name: value for name, value in state["hyperparameters"].items() if name != "decoupled"}
        if "beta1" in arguments:
            arguments["betas"] = (arguments.pop("beta1"), arguments.pop("beta2"))
        optimizer = kind(model, **arguments)
        optimizer.load_state_dict(state)
        return optimizer

    def load_state_dict(self, state):
        """Take the hyperparameters, step count and state of ``state``
        (from ``state_dict()`` of an optimizer of this kind and configuration
        on a model of this size); checks everything before changing anything."""
        check_keys("state", state, ("kind", "hyperparameters", "step_count", "state"))
        check_equal("state['kind']", state["kind"], self.name, f"load it into a {state['kind']!r} optimizer")
        given = state["hyperparameters"]
        check_keys("state['hyperparameters']", given, self.hyperparameters)
        hyper = self._hyper.copy()
        for i, name in enumerate(self.hyperparameters):
            key = f"state['hyperparameters'][{name!r}]"
            if name in FLAGS:
                # a flag decides which state rows are in use and the rule itself
                check_equal(key, as_bool(key, given[name]), bool(hyper[i]),
                            f"build the optimizer with {name}={given[name]} to take this state")
            else:
                hyper[i] = as_float(key, given[name], **_RANGES.get(name, {}))
        self._check_hyper(dict(zip(self.hyperparameters, hyper)))
        step_count = as_int("state['step_count']", state["step_count"], minimum=0)
        rows = as_state_array("state['state']", state["state"], (self.n_state, self.model.n_params),
                              self.model.dtype)
        self._hyper[...] = hyper
        self.step_count = step_count
        self._set_state_array(rows)

    _flags = ("nesterov", "amsgrad", "decoupled", "centered")

    def __getattr__(self, name):
        # Hyperparameters live only in the array the kernel reads, so that a
        # change (a learning-rate schedule) cannot leave a stale copy behind.
        hyper = self.__dict__.get("_hyper")
        if hyper is not None and name in type(self).hyperparameters:
            value = hyper[type(self).hyperparameters.index(name)]
            return bool(value) if name in self._flags else float(value)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def name(self):
        return next(name for name, cls in OPTIMIZERS.items() if cls is type(self))

    @property
    def lr(self):
        return float(self._hyper[0])

    @lr.setter
    def lr(self, value):
        self._hyper[0] = as_float("lr", value, low=0.0)

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.hyperparameters
                         if name != "decoupled")
        return f"{type(self).__name__}({args})"

    def step(self):
        """One update of every parameter from its gradient."""
        self.step_count += 1
        kernels.optimizer_step(self.code, self.model._params, self.model._grads, self._state, self._hyper,
                               self.step_count)

    def _bundle(self):
        """The optimizer as the compiled epoch takes it (``kernels.Optimizer``)."""
        return kernels.Optimizer(self.code, self._hyper, self._state)

    def zero_grad(self):
        self.model.zero_grad()


# the hyperparameters that are switches (0.0 / 1.0 in the kernel's array)
FLAGS = ("nesterov", "amsgrad", "decoupled", "centered")
# the ranges the constructors accept, for the hyperparameters of a loaded state
_RANGES = {"lr": dict(low=0.0), "max_fun": dict(low=1.0), "history_size": dict(low=1.0), "tol": dict(low=0.0),
           "ftol": dict(low=0.0), "momentum": dict(low=0.0), "weight_decay": dict(low=0.0),
           "beta1": dict(low=0.0, high=1.0, high_open=True), "beta2": dict(low=0.0, high=1.0, high_open=True),
           "eps": dict(low=0.0, low_open=True), "alpha": dict(low=0.0, high=1.0)}


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {describe(betas)}")
    return tuple(as_float(f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True) for i, beta in enumerate(betas))


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD."""

    code = kernels.SGD
    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    n_state = 1  # the momentum buffer

    def __init__(self, model, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        hyper = dict(lr=as_float("lr", lr, low=0.0), momentum=as_float("momentum", momentum, low=0.0),
                     dampening=as_float("dampening", dampening),
                     weight_decay=as_float("weight_decay", weight_decay, low=0.0),
                     nesterov=as_bool("nesterov", nesterov))
        self._check_hyper(hyper)
        super().__init__(model, **hyper)

    def _check_hyper(self, hyper):
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening = 0, got momentum="
                             f"{hyper['momentum']}, dampening={hyper['dampening']}")



class Adam(Optimizer):
    """Adam, as torch.optim.Adam (L2 weight decay added to the gradient)."""

    code = kernels.ADAM
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "decoupled")
    n_state = 3  # first and second moments, the second's running maximum
    decoupled_weight_decay = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        beta1, beta2 = _check_betas(betas)
        super().__init__(model, lr=as_float("lr", lr, low=0.0), beta1=beta1, beta2=beta2,
                         eps=as_float("eps", eps, low=0.0, low_open=True),
                         weight_decay=as_float("weight_decay", weight_decay, low=0.0),
                         amsgrad=as_bool("amsgrad", amsgrad), decoupled=self.decoupled_weight_decay)

    @property
    def betas(self):
        return (self.beta1, self.beta2)



class AdamW(Adam):
    """AdamW, as torch.optim.AdamW (weight decay applied to the parameters)."""

    decoupled_weight_decay = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop."""

    code = kernels.RMSPROP
    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    n_state = 3  # square average, momentum buffer, gradient average

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(model, lr=as_float("lr", lr, low=0.0), alpha=as_float("alpha", alpha, low=0.0, high=1.0),
                         eps=as_float("eps", eps, low=0.0, low_open=True),
                         weight_decay=as_float("weight_decay", weight_decay, low=0.0),
                         momentum=as_float("momentum", momentum, low=0.0),
                         centered=as_bool("centered", centered))



class LBFGS(Optimizer):
    """L-BFGS as a ``fastbp.Trainer``'s optimizer: each epoch of
    ``Trainer.fit`` is one L-BFGS iteration over the whole training set
    (SciPy's L-BFGS-B on the compiled full-batch loss, ``fastbp.lbfgs``;
    ``batch_size`` and ``shuffle`` do not apply), with the history,
    validation, early stopping and callbacks of any fit.

    Args:
        model: the fastbp.MLP the trainer trains.
        weight_decay: L2 coefficient, ``0.5 * weight_decay * sum(W**2)`` over
            the weight matrices (not the biases) added to the loss.
        max_fun, tol, ftol, history_size: as ``fastbp.lbfgs.fit``.

    SciPy keeps the curvature pairs inside one ``fit`` call: the next call,
    or a run resumed from a checkpoint, starts them afresh. After a fit,
    ``result`` holds SciPy's ``OptimizeResult`` (why it stopped: ``message``).
    """

    code = None
    hyperparameters = ("weight_decay", "max_fun", "tol", "ftol", "history_size")
    n_state = 0
    # the line search picks each step's length; 1 is reported as the epoch's rate
    lr = 1.0

    def __init__(self, model, weight_decay=0.0, max_fun=15000, tol=1e-4, ftol=2.2e-9, history_size=10):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        self.model = model
        # counts come back from a state dict as whole floats
        max_fun, history_size = (int(v) if isinstance(v, float) and v.is_integer() else v for v in (max_fun, history_size))
        self._hyper = np.array([as_float("weight_decay", weight_decay, low=0.0), as_int("max_fun", max_fun, minimum=1),
                                as_float("tol", tol, low=0.0), as_float("ftol", ftol, low=0.0),
                                as_int("history_size", history_size, minimum=1)], dtype=np.float64)
        self.step_count = 0  # loss-and-gradient evaluations, over every fit
        self._state = np.zeros((0, model.n_params), dtype=model.dtype)
        self.result = None

    def __repr__(self):
        return (f"LBFGS(weight_decay={self.weight_decay}, max_fun={int(self.max_fun)}, tol={self.tol}, "
                f"ftol={self.ftol}, history_size={int(self.history_size)})")

    @property
    def state_in_use(self):
        return ()

    def _set_state_array(self, rows):
        self._state = rows[:0].copy()

    def step(self):
        raise TypeError("LBFGS takes its steps inside Trainer.fit (or fastbp.lbfgs.fit), over the whole training "
                        "set; it has no step() of one minibatch")

    def _bundle(self):
        self.step()

    def run(self, loss, X, targets, labels, epochs, end_epoch, weights=None):
        """Up to ``epochs`` iterations over ``(X, targets, labels)`` (as the
        Trainer holds them, with its row ``weights`` or None);
        ``end_epoch(loss)`` after each, the model at the iterate, returns
        whether to stop."""
        from fastbp.lbfgs import FullBatchObjective, minimize

        model = self.model
        y = labels if loss.code == kernels.CROSS_ENTROPY else targets
        objective = FullBatchObjective(model, loss, X, y, sample_weight=weights, l2=self.weight_decay)

        def each_iteration(iteration, value):
            return end_epoch(value - objective.penalty())  # the data loss, as the other optimizers report

        self.result = minimize(objective, max_iter=epochs, max_fun=int(self.max_fun), tol=self.tol, ftol=self.ftol,
                               history_size=int(self.history_size), callback=each_iteration)
        self.step_count += int(self.result.nfev)
        if not np.isfinite(model._params).all():
            raise FloatingPointError(f"L-BFGS diverged: the parameters hold NaN or infinity ({self.result.message}); "
                                     "scale the inputs, or add weight_decay")


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "lbfgs": LBFGS}
