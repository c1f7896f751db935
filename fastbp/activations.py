"""Activation specifications: a name plus torch's keyword arguments."""
import kernels
from fastbp._checks import as_choice, as_float, describe

# name -> (kernel code, default keyword arguments in torch's names)
_ACTIVATIONS = {
    "identity": (kernels.IDENTITY, {}),
    "relu": (kernels.RELU, {}),
    "leaky_relu": (kernels.LEAKY_RELU, {"negative_slope": 0.01}),
    "sigmoid": (kernels.SIGMOID, {}),
    "tanh": (kernels.TANH, {}),
    "gelu": (kernels.GELU, {"approximate": "none"}),
    "silu": (kernels.SILU, {}),
    "elu": (kernels.ELU, {"alpha": 1.0}),
    "softplus": (kernels.SOFTPLUS, {"beta": 1.0, "threshold": 20.0}),
}
_TORCH_CLASSES = {
    "identity": "Identity", "relu": "ReLU", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid",
    "tanh": "Tanh", "gelu": "GELU", "silu": "SiLU", "elu": "ELU", "softplus": "Softplus",
}
NAMES = tuple(_ACTIVATIONS)


class Activation:
    """An activation function and its parameters.

    Args:
        name: one of ``fastbp.activations.NAMES``.
        **params: torch's keyword arguments: ``negative_slope`` (leaky_relu),
            ``approximate`` ("none" or "tanh", gelu), ``alpha`` (elu),
            ``beta`` and ``threshold`` (softplus).

    Example:
        >>> fastbp.MLP([4, 16, 1], activation=Activation("leaky_relu", negative_slope=0.2))
    """

    def __init__(self, name, **params):
        name = as_choice("activation", name, NAMES)
        code, defaults = _ACTIVATIONS[name]
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f"activation {name!r} takes {sorted(defaults) or 'no parameters'}, got {sorted(unknown)}")
        merged = {**defaults, **params}
        for key, value in merged.items():
            if key == "approximate":
                as_choice("approximate", value, ("none", "tanh"))
            elif key == "beta":
                merged[key] = as_float(key, value, low=0.0, low_open=True)
            else:
                merged[key] = as_float(key, value)
        self.name = name
        self.params = merged
        if name == "gelu" and merged["approximate"] == "tanh":
            code = kernels.GELU_TANH
        self.code = code
        values = [v for k, v in merged.items() if k != "approximate"]
        self.p1, self.p2 = (values + [0.0, 0.0])[:2]

    def __repr__(self):
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Activation({self.name!r}{args})"

    def __eq__(self, other):
        return isinstance(other, Activation) and (self.name, self.params) == (other.name, other.params)

    def to_torch(self):
        import torch

        return getattr(torch.nn, _TORCH_CLASSES[self.name])(**self.params)

    @classmethod
    def from_torch(cls, module):
        """The Activation matching a torch.nn activation module, or None."""
        for name, torch_class in _TORCH_CLASSES.items():
            if type(module).__name__ == torch_class and type(module).__module__.startswith("torch.nn"):
                return cls(name, **{key: getattr(module, key) for key in _ACTIVATIONS[name][1]})
        return None


def as_activation(argument, value):
    """An Activation from a name or an Activation."""
    if isinstance(value, Activation):
        return value
    if isinstance(value, str):
        return Activation(as_choice(argument, value, NAMES))
    raise TypeError(f"{argument} must be an activation name or fastbp.Activation, got {describe(value)}")
