"""``MLP.to_torch`` and ``MLP.from_torch``: a model as a torch.nn.Sequential
and back. Each hidden layer is ``Linear``, its activation, then
``LayerNorm`` (with ``norm="layer"``) and ``Dropout`` (with a rate above
0), in that order; the output layer is ``Linear`` and its activation.

A residual model (``residual=True``) is ``Linear`` to the blocks' width,
one ``ResidualBlock`` per hidden layer (``x + body(x)``, the class defined
here), then [``LayerNorm``], the activation and the output ``Linear``."""
import functools
import warnings

from fastbp._checks import describe
from fastbp.activations import _TORCH_CLASSES, Activation
from kernels.layers import DENSE, DROPOUT, LAYERNORM, RESIDUAL_ADD, RESIDUAL_START
from kernels.layers.table import KIND


def require_torch(what):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch; install it with: pip install 'fastbp[torch]'") from None
    return torch


def to_torch(model):
    """The torch.nn.Sequential of ``model`` (see the module docstring), with its parameters copied."""
    torch = require_torch("MLP.to_torch()")
    dtype = getattr(torch, model.dtype.name)
    dense, norms = iter(model.params), iter(model.norms)
    # the modules of the Sequential, or of the residual branch being built
    modules, outer = [], []
    for (n_in, n_out, *_), kind, act, (p, _) in zip(model._layers, model._layers[:, KIND], model._row_activations,
                                                    model._activation_params):
        if kind == DENSE:
            W, b = next(dense)
            linear = torch.nn.Linear(int(n_in), int(n_out), bias=b is not None, dtype=dtype)
            _copy(linear.weight, W)
            if b is not None:
                _copy(linear.bias, b)
            modules.append(linear)
        elif kind == LAYERNORM:
            weight, bias = next(norms)
            norm = torch.nn.LayerNorm(int(n_out), eps=model.norm_eps, dtype=dtype)
            _copy(norm.weight, weight)
            _copy(norm.bias, bias)
            modules.append(norm)
        elif kind == DROPOUT:
            modules.append(torch.nn.Dropout(float(p)))
        elif kind == RESIDUAL_START:
            outer, modules = modules, []
        elif kind == RESIDUAL_ADD:
            outer.append(residual_block_class()(torch.nn.Sequential(*modules)))
            modules = outer
        if act is not None and act.name != "identity":
            modules.append(act.to_torch())
    return torch.nn.Sequential(*modules)


def __getattr__(name):
    # the residual block's class needs torch, imported when it is asked for
    if name == "ResidualBlock":
        return residual_block_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def residual_block_class():
    """``fastbp.interop.torch.ResidualBlock``, a torch.nn.Module: ``x + body(x)``."""
    torch = require_torch("fastbp.interop.torch.ResidualBlock")

    class ResidualBlock(torch.nn.Module):
        """A residual block of ``fastbp.MLP(residual=True)``: ``x + body(x)``,
        ``body`` a torch.nn.Sequential of [LayerNorm], Linear, activation,
        [Dropout], Linear, [Dropout], every Linear of the block's width."""

        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return x + self.body(x)

    ResidualBlock.__module__, ResidualBlock.__qualname__ = __name__, "ResidualBlock"
    return ResidualBlock


def _copy(parameter, array):
    import torch

    with torch.no_grad():
        parameter.copy_(torch.from_numpy(array.copy()))


def from_torch(cls, sequential):
    """The ``cls`` (fastbp.MLP) of a torch.nn.Sequential of the layout of the
    module docstring, its parameters copied; Identity and Flatten() are
    left out, as are the dropouts other than ``Dropout`` and those outside
    a hidden layer, with a UserWarning."""
    torch = require_torch("MLP.from_torch()")
    if not isinstance(sequential, torch.nn.Sequential):
        raise TypeError(f"sequential must be a torch.nn.Sequential, got {describe(sequential)}")
    if any(isinstance(module, residual_block_class()) for module in sequential):
        return _from_residual(cls, torch, sequential)
    other_dropouts = (torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout,
                      torch.nn.FeatureAlphaDropout)
    # per Linear: [linear, activation, layer norm, dropout rate]
    layers = []
    for index, module in enumerate(sequential):
        where = f"sequential[{index}]"
        if isinstance(module, other_dropouts) or (isinstance(module, torch.nn.Dropout) and not layers):
            warnings.warn(f"{where} is {type(module).__name__}: left out, as dropout does nothing at inference "
                          f"(and fastbp trains with torch.nn.Dropout after a hidden layer only)", UserWarning,
                          stacklevel=3)
            continue
        if isinstance(module, torch.nn.Flatten):
            if (module.start_dim, module.end_dim) != (1, -1):
                raise TypeError(f"{where} is {module!r}; only Flatten(start_dim=1, end_dim=-1) is "
                                f"supported, which leaves fastbp's 2-D input (batch, n_in) as it is")
            continue
        if isinstance(module, torch.nn.Identity):
            continue
        if isinstance(module, torch.nn.Linear):
            if layers and layers[-1][0].out_features != module.in_features:
                raise ValueError(f"{where} takes {module.in_features} inputs but the layer "
                                 f"before gives {layers[-1][0].out_features}")
            layers.append([module, Activation("identity"), None, 0.0])
            continue
        if not layers:
            raise ValueError(f"{where} is {type(module).__name__} before any Linear layer")
        layer = layers[-1]
        if isinstance(module, torch.nn.Dropout):
            # two in a row drop as one would
            layer[3] = module.p if layer[3] == 0 else 1.0 - (1.0 - layer[3]) * (1.0 - module.p)
            continue
        if isinstance(module, torch.nn.LayerNorm):
            if layer[2] is not None or layer[3] > 0:
                raise ValueError(f"{where} is a LayerNorm after a LayerNorm or Dropout; fastbp's hidden layer "
                                 f"is Linear, activation, LayerNorm, Dropout in that order")
            if (tuple(module.normalized_shape) != (layer[0].out_features,) or module.weight is None
                    or module.bias is None):
                raise TypeError(f"{where} is {module!r}; fastbp's LayerNorm is over the features of the layer "
                                f"before, with weight and bias")
            layer[2] = module
            continue
        activation = Activation.from_torch(module)
        if activation is None:
            raise TypeError(f"{where} is {type(module).__name__}; only Linear, the activations "
                            f"{', '.join(sorted(_TORCH_CLASSES.values()))}, LayerNorm, Dropout and Flatten are "
                            f"supported")
        if layer[1].name != "identity" or layer[2] is not None or layer[3] > 0:
            raise ValueError(f"{where} is an activation after another activation, a LayerNorm or a Dropout; "
                             f"fastbp's hidden layer is Linear, activation, LayerNorm, Dropout in that order")
        layer[1] = activation
    if not layers:
        raise ValueError("sequential has no Linear layer")
    linears = [layer[0] for layer in layers]
    has_bias = {linear.bias is not None for linear in linears}
    if len(has_bias) > 1:
        raise ValueError("every Linear layer must have a bias, or none")
    dtypes = {linear.weight.dtype for linear in linears}
    if len(dtypes) > 1 or dtypes.pop() not in (torch.float32, torch.float64):
        found = sorted(str(linear.weight.dtype) for linear in linears)
        raise TypeError(f"Linear weights must all be float32 or all float64, got {found}")
    *hidden, last = layers
    if last[2] is not None:
        raise ValueError("a LayerNorm after the last Linear layer is not one of fastbp's layers; "
                         "it normalises the hidden layers only")
    if last[3] > 0:
        warnings.warn("a Dropout after the last Linear layer is left out, as it does nothing at inference "
                      "(and fastbp trains with dropout after a hidden layer only)", UserWarning, stacklevel=3)
    norms = {layer[2] is not None for layer in hidden}
    if len(norms) > 1:
        raise ValueError("every hidden Linear layer must be followed by a LayerNorm, or none")
    eps = {layer[2].eps for layer in hidden if layer[2] is not None}
    if len(eps) > 1:
        raise ValueError(f"every LayerNorm must have the same eps, got {sorted(eps)}")
    sizes = [linears[0].in_features] + [linear.out_features for linear in linears]
    model = cls(sizes, activation=[layer[1] for layer in hidden], output_activation=last[1], bias=has_bias.pop(),
                dtype=str(linears[0].weight.dtype).replace("torch.", ""), dropout=[layer[3] for layer in hidden],
                norm="layer" if norms == {True} else None, norm_eps=eps.pop() if eps else 1e-5)
    for (W, b), linear in zip(model.params, linears):
        W[...] = linear.weight.detach().cpu().numpy()
        if b is not None:
            b[...] = linear.bias.detach().cpu().numpy()
    for (weight, bias), layer in zip(model.norms, hidden):
        weight[...] = layer[2].weight.detach().cpu().numpy()
        bias[...] = layer[2].bias.detach().cpu().numpy()
    return model


def _from_residual(cls, torch, sequential):
    """``from_torch`` of a residual model's Sequential (see the module docstring)."""
    block_class = residual_block_class()
    modules = [m for m in sequential if not isinstance(m, torch.nn.Identity)]
    layout = ("Linear, ResidualBlock per hidden layer, [LayerNorm], activation, Linear[, activation]; each "
              "block's body [LayerNorm], Linear, activation, [Dropout], Linear, [Dropout]")

    def refuse(what):
        raise ValueError(f"sequential: {what}; a residual fastbp.MLP is {layout}")
    if not modules or not isinstance(modules[0], torch.nn.Linear):
        refuse("the first module is not a Linear layer")
    first, position = modules[0], 1
    blocks = []
    while position < len(modules) and isinstance(modules[position], block_class):
        blocks.append(_block(torch, modules[position].body, first.out_features, refuse))
        position += 1
    head = modules[position:]
    head_norm = head[0] if head and isinstance(head[0], torch.nn.LayerNorm) else None
    head = head[1:] if head_norm is not None else head
    activation = Activation.from_torch(head[0]) if head else None
    head = head[1:] if activation is not None else head
    if not head or not isinstance(head[0], torch.nn.Linear) or len(head) > 2:
        refuse("after the blocks come modules it does not have")
    output = Activation.from_torch(head[1]) if len(head) == 2 else Activation("identity")
    if output is None:
        refuse(f"{type(head[1]).__name__} after the last Linear is not an activation")
    norms = {block[0] is not None for block in blocks} | {head_norm is not None}
    if len(norms) > 1:
        refuse("some blocks (or the head) have a LayerNorm and some do not")
    if any(block[2] != activation for block in blocks):
        refuse("the blocks' activations differ from the head's")
    linears = [first] + [linear for block in blocks for linear in block[1]] + [head[0]]
    model = cls([first.in_features] + [first.out_features] * len(blocks) + [head[0].out_features],
                activation=activation or Activation("identity"), output_activation=output,
                bias=first.bias is not None, dtype=str(first.weight.dtype).replace("torch.", ""),
                dropout=[block[3] for block in blocks], norm="layer" if head_norm is not None else None,
                norm_eps=head_norm.eps if head_norm is not None else 1e-5, residual=True)
    for (W, b), linear in zip(model.params, linears):
        if linear.weight.shape != W.shape or (linear.bias is None) != (b is None) or linear.weight.dtype != first.weight.dtype:
            refuse(f"{linear!r} does not fit the layer of {model!r} it would be")
        W[...] = linear.weight.detach().cpu().numpy()
        if b is not None:
            b[...] = linear.bias.detach().cpu().numpy()
    layer_norms = [block[0] for block in blocks] + [head_norm]
    for (weight, bias), norm in zip(model.norms, layer_norms):
        if norm.weight is None or norm.bias is None or norm.eps != head_norm.eps:
            refuse(f"{norm!r} has no weight or bias, or another eps than the others")
        weight[...] = norm.weight.detach().cpu().numpy()
        bias[...] = norm.bias.detach().cpu().numpy()
    return model


def _block(torch, body, width, refuse):
    """(LayerNorm or None, [the two Linears], activation, dropout rate) of a ResidualBlock's body."""
    modules = [m for m in body if not isinstance(m, torch.nn.Identity)] if isinstance(body, torch.nn.Sequential) \
        else refuse(f"a ResidualBlock's body is {type(body).__name__}, not a Sequential")
    norm = modules.pop(0) if modules and isinstance(modules[0], torch.nn.LayerNorm) else None
    kinds = [type(m).__name__ for m in modules]
    if len(modules) < 3 or not isinstance(modules[0], torch.nn.Linear):
        refuse(f"a block's body is {kinds}")
    activation = Activation.from_torch(modules[1])
    rest = modules[2:]
    first_rate = rest.pop(0).p if rest and type(rest[0]) is torch.nn.Dropout else 0.0
    second = rest.pop(0) if rest and isinstance(rest[0], torch.nn.Linear) else None
    second_rate = rest.pop(0).p if rest and type(rest[0]) is torch.nn.Dropout else 0.0
    if activation is None or second is None or rest or first_rate != second_rate:
        refuse(f"a block's body is {kinds} (its two dropouts, if any, of one rate)")
    if {modules[0].in_features, modules[0].out_features, second.in_features, second.out_features} != {width}:
        refuse(f"a block's Linear layers are not all {width} wide, the first layer's width")
    return norm, [modules[0], second], activation, first_rate
