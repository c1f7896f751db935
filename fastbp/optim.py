"""Optimizers with torch.optim's names, hyperparameters, defaults and update
rules, each one loop over the model's flat parameter buffer."""
import numpy as np

import kernels
from fastbp._checks import as_bool, as_float, describe
from fastbp.mlp import MLP


class Optimizer:
    """Base class: owns the state buffers and the step count; ``step()``
    applies one update from the gradients in ``model.grads``.

    A subclass names its kernel (``code``) and the kernel's scalar
    arguments (``hyperparameters``); its state is one (k, n_params) array,
    ``k`` the buffers the kernel reads in this configuration
    (``kernels.state_rows``)."""

    code = None
    # names of the kernel's scalar arguments, in the kernel's order
    hyperparameters = ()

    def __init__(self, model, **hyper):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastbp.MLP, got {describe(model)}")
        self.model = model
        self._hyper = np.array([float(hyper[name]) for name in self.hyperparameters], dtype=np.float64)
        self.step_count = 0
        self._state = np.zeros((kernels.state_rows(self.code, self._hyper), model.n_params), dtype=model.dtype)

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


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {describe(betas)}")
    return tuple(as_float(f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True) for i, beta in enumerate(betas))


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD."""

    code = kernels.SGD
    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, model, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        hyper = dict(lr=as_float("lr", lr, low=0.0), momentum=as_float("momentum", momentum, low=0.0),
                     dampening=as_float("dampening", dampening),
                     weight_decay=as_float("weight_decay", weight_decay, low=0.0),
                     nesterov=as_bool("nesterov", nesterov))
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening = 0, got momentum="
                             f"{hyper['momentum']}, dampening={hyper['dampening']}")
        super().__init__(model, **hyper)



class Adam(Optimizer):
    """Adam, as torch.optim.Adam (L2 weight decay added to the gradient)."""

    code = kernels.ADAM
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "decoupled")
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

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(model, lr=as_float("lr", lr, low=0.0), alpha=as_float("alpha", alpha, low=0.0, high=1.0),
                         eps=as_float("eps", eps, low=0.0, low_open=True),
                         weight_decay=as_float("weight_decay", weight_decay, low=0.0),
                         momentum=as_float("momentum", momentum, low=0.0),
                         centered=as_bool("centered", centered))



OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
