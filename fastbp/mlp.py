"""The multi-layer perceptron: flat buffers plus the layer table that drives
the kernels in ``kernels.network``."""
import threading
import warnings

import numpy as np

import kernels
from kernels.layers import DENSE, layer_table
from kernels.layers.table import BIAS_OFFSET
from kernels.inference import block_rows, inference_parts, network_predict, work_size
from kernels.network import buffer_sizes, layer_units, network_backward, network_forward
from fastbp import archive
from fastbp._checks import as_bool, as_dtype, as_int, as_matrix, as_seed, describe
from fastbp._state import as_state_array, check_equal, check_keys
from fastbp.activations import _TORCH_CLASSES, Activation, as_activation
from fastbp.backends.cuda import as_device

# the largest prediction buffer (in values) a thread keeps between calls
_KEPT_WORK = 1 << 20


def _require_torch(what):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch; install it with: pip install 'fastbp[torch]'") from None
    return torch


class MLP:
    """A stack of dense layers with activations, ``W`` shaped (n_out, n_in)
    as in torch.nn.Linear.

    Args:
        sizes: layer widths ``[n_in, hidden..., n_out]``, at least two, each >= 1.
        activation: the hidden layers' activation, a name or ``fastbp.Activation``,
            or a list with one per hidden layer.
        output_activation: the last layer's activation (default "identity",
            what the losses expect: they take logits).
        bias: whether every layer has a bias.
        dtype: "float32" or "float64".
        seed: seed for the initialisation, which draws W and b from
            U(-1/sqrt(n_in), 1/sqrt(n_in)) as torch.nn.Linear does.
        device: where ``Trainer.fit`` trains the model: "cpu", or "cuda" for an
            NVIDIA GPU (needs fastbp[cuda]); see ``to``.

    Shape:
        Input (batch, sizes[0]); output (batch, sizes[-1]).

    Parameters, gradients and the activations cached for backward live in
    flat buffers; ``params`` and ``grads`` are per-layer ``(W, b)`` views into
    them (``b`` is None without bias), so writing into a view changes the model.

    Example:
        >>> model = fastbp.MLP([2, 8, 1], activation="tanh", seed=0)
        >>> out = model.forward(np.ones((4, 2)))
        >>> dx = model.backward(np.ones_like(out))
    """

    def __init__(self, sizes, activation="relu", output_activation="identity", bias=True,
                 dtype="float32", seed=None, device="cpu"):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a list of layer widths, got {describe(sizes)}")
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output widths, got {list(sizes)}")
        sizes = tuple(as_int(f"sizes[{i}]", size, minimum=1) for i, size in enumerate(sizes))
        n_hidden = len(sizes) - 2
        if isinstance(activation, (list, tuple)):
            if len(activation) != n_hidden:
                raise ValueError(f"activation must list one activation per hidden layer ({n_hidden}), "
                                 f"got {len(activation)}")
            hidden = [as_activation(f"activation[{i}]", a) for i, a in enumerate(activation)]
        else:
            hidden = [as_activation("activation", activation)] * n_hidden
        self.sizes = sizes
        self.activations = hidden + [as_activation("output_activation", output_activation)]
        self.bias = as_bool("bias", bias)
        self.dtype = as_dtype("dtype", dtype)
        seed = as_seed("seed", seed)
        self.device = as_device("device", device)

        self._layers = layer_table([(DENSE, n_in, n_out, act.code, self.bias)
                                    for n_in, n_out, act in zip(sizes[:-1], sizes[1:], self.activations)])
        self._activation_params = np.array([(a.p1, a.p2) for a in self.activations], dtype=np.float64)
        n_params, self._total_units, self._max_width = buffer_sizes(self._layers)
        self._params = np.zeros(n_params, dtype=self.dtype)
        self._grads = np.zeros(n_params, dtype=self.dtype)
        self.params = self._views(self._params)
        self.grads = self._views(self._grads)
        self._capacity = 0
        self._forward_rows = None
        self._multiply_adds = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self._local = threading.local()
        self.reset_parameters(seed)

    def _bundle(self):
        """The network as the compiled epoch takes it (``kernels.Network``)."""
        return kernels.Network(self._params, self._grads, self._layers, self._activation_params)

    def _views(self, flat):
        views = []
        for n_in, n_out, w_offset, b_offset in self._layers[:, :BIAS_OFFSET + 1]:
            W = flat[w_offset:w_offset + n_out * n_in].reshape(n_out, n_in)
            b = flat[b_offset:b_offset + n_out] if b_offset >= 0 else None
            views.append((W, b))
        return views

    def reset_parameters(self, seed=None):
        """Redraw every W and b from U(-1/sqrt(n_in), 1/sqrt(n_in))."""
        rng = np.random.default_rng(as_seed("seed", seed))
        for W, b in self.params:
            bound = 1.0 / np.sqrt(W.shape[1])
            W[...] = rng.uniform(-bound, bound, size=W.shape)
            if b is not None:
                b[...] = rng.uniform(-bound, bound, size=b.shape)

    def __reduce__(self):
        # pickle and copy rebuild the flat buffers and the views into them
        # (pickling the views would cut them loose from the buffers)
        return (_rebuild, (self.sizes, self.activations, self.bias, self.dtype.name, self._params, self._grads,
                           self.device))

    def to(self, device):
        """Train on ``device`` from now on ("cpu" or "cuda"); returns the model.

        The parameters stay readable on the host either way: ``fit`` keeps
        them on the GPU while it runs and copies them back after each epoch,
        and ``predict``, ``save`` and ``to_torch`` read the host's copy.
        """
        self.device = as_device("device", device)
        return self

    @property
    def n_params(self):
        return self._params.size

    def __repr__(self):
        acts = ", ".join(repr(a.name) for a in self.activations)
        where = ", device='cuda'" if self.device == "cuda" else ""
        return (f"MLP(sizes={list(self.sizes)}, activations=[{acts}], bias={self.bias}, "
                f"dtype='{self.dtype.name}'{where})")

    def _ensure_capacity(self, rows):
        """Grow the activation and scratch buffers to hold ``rows`` samples."""
        if rows <= self._capacity:
            return
        self._z = np.empty(rows * self._total_units, dtype=self.dtype)
        self._a = np.empty(rows * self._total_units, dtype=self.dtype)
        self._scratch = np.empty((2, rows * self._max_width), dtype=self.dtype)
        self._inputs = np.empty(rows * self.sizes[0], dtype=self.dtype)
        self._capacity = rows
        self._forward_rows = None

    def forward(self, x):
        """The network's output for ``x`` (batch, n_in); caches what backward
        needs in the model's buffers, so one thread at a time (``predict``
        is the call for threads)."""
        x = as_matrix("x", x, self.dtype, self.sizes[0])
        rows = x.shape[0]
        self._ensure_capacity(rows)
        # Our own copy of x: backward must see the input forward saw.
        inputs = self._inputs[:x.size].reshape(x.shape)
        inputs[...] = x
        network_forward(self._z, self._a, inputs, self._params, self._layers, self._activation_params)
        self._forward_rows = rows
        return layer_units(self._a, self._layers, len(self._layers) - 1, rows).copy()

    __call__ = forward

    def predict(self, x):
        """The network's output for ``x`` (n_samples, n_in), not kept for
        backward. Safe to call from any number of threads at once (while
        nothing trains the model): each thread works in buffers of its own.

        One compiled call runs the whole network, a block of rows at a time
        (``kernels.inference``), on several threads when the batch is large
        enough to pay for them."""
        if not (type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 2 and x.shape[0] > 0
                and x.shape[1] == self.sizes[0] and x.flags.c_contiguous and x.flags.writeable):
            x = as_matrix("x", x, self.dtype, self.sizes[0])
        rows = x.shape[0]
        parts = inference_parts(rows, self._multiply_adds)
        block = block_rows(self._total_units, -(-rows // parts))
        size = work_size(self._total_units, block, parts)
        work = getattr(self._local, "work", None)
        if work is None or work.size < size or work.dtype != self.dtype:
            # kept for the next call on this thread, up to a bounded size
            work = np.empty(size, dtype=self.dtype)
            if size <= _KEPT_WORK:
                self._local.work = work
        out = np.empty((rows, self.sizes[-1]), dtype=self.dtype)
        if network_predict(out, x, self._params, self._layers, self._activation_params, work, block, parts) >= 0:
            as_matrix("x", x, self.dtype)  # raises, naming the first NaN or infinite value
        return out

    def backward(self, dout):
        """Accumulate parameter gradients into ``grads`` from d(loss)/d(output)
        (batch, n_out) of the last forward call; return d(loss)/d(x)."""
        if self._forward_rows is None:
            raise RuntimeError("backward() needs a forward() first: there is no cached forward pass "
                               "to differentiate")
        rows = self._forward_rows
        dout = as_matrix("dout", dout, self.dtype, self.sizes[-1], rows=rows, column_name="outputs")
        self._scratch[0, :dout.size] = dout.ravel()
        inputs = self._inputs[:rows * self.sizes[0]].reshape(rows, self.sizes[0])
        network_backward(self._grads, self._scratch, inputs, self._params, self._layers,
                         self._activation_params, self._z, self._a, True)
        return self._scratch[len(self._layers) % 2, :inputs.size].reshape(inputs.shape).copy()

    def zero_grad(self):
        """Set every gradient to zero (gradients accumulate until then, as in torch)."""
        self._grads[...] = 0

    def state_dict(self):
        """The layer table (``sizes``, ``activations`` as [name, params] per
        layer, ``bias``, ``dtype``) and a copy of the flat ``params``
        (layer by layer: W (n_out, n_in) row-major, then b)."""
        return {"sizes": list(self.sizes), "activations": [[a.name, dict(a.params)] for a in self.activations],
                "bias": self.bias, "dtype": self.dtype.name, "params": self._params.copy()}

    @classmethod
    def from_state_dict(cls, state):
        """The model of ``state``'s layer table, holding its parameters."""
        check_keys("state", state, ("sizes", "activations", "bias", "dtype", "params"))
        if not isinstance(state["activations"], (list, tuple)) or not state["activations"]:
            raise TypeError(f"state['activations'] must be a list of [name, params] per layer, got "
                            f"{describe(state['activations'])}")
        activations = [Activation(name, **params) for name, params in state["activations"]]
        model = cls(state["sizes"], activation=activations[:-1], output_activation=activations[-1],
                    bias=state["bias"], dtype=state["dtype"])
        model.load_state_dict(state)
        return model

    def load_state_dict(self, state):
        """Copy in the parameters of ``state`` (from ``state_dict()`` of a
        model with these layers); checks everything before changing anything."""
        check_keys("state", state, ("sizes", "activations", "bias", "dtype", "params"))
        advice = "build a model with these layers to take this state (fastbp.load does from a file)"
        check_equal("state['sizes']", list(state["sizes"]) if isinstance(state["sizes"], (list, tuple)) else
                    state["sizes"], list(self.sizes), advice)
        check_equal("state['activations']", state["activations"],
                    [[a.name, dict(a.params)] for a in self.activations], advice)
        check_equal("state['bias']", state["bias"], self.bias, advice)
        check_equal("state['dtype']", state["dtype"], self.dtype.name, advice)
        self._params[...] = as_state_array("state['params']", state["params"], self._params.shape, self.dtype)

    def save(self, path):
        """Write the model (sizes, activations, dtype, parameters) to an .npz
        file, atomically; read it back with ``fastbp.load``."""
        archive.write_model(path, self.state_dict())

    def to_torch(self):
        """A torch.nn.Sequential computing the same function (copies the weights)."""
        torch = _require_torch("MLP.to_torch()")
        modules = []
        for (W, b), act in zip(self.params, self.activations):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=self.bias,
                                     dtype=getattr(torch, self.dtype.name))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.copy()))
                if b is not None:
                    linear.bias.copy_(torch.from_numpy(b.copy()))
            modules.append(linear)
            if act.name != "identity":
                modules.append(act.to_torch())
        return torch.nn.Sequential(*modules)

    def to_onnx(self, path, opset=17):
        """Write the network to ``path`` as an ONNX graph (needs fastbp[onnx]):
        input "input" (N, sizes[0]), output "output" (N, sizes[-1]), both
        of the model's dtype; see ``fastbp.interop.onnx.export``."""
        from fastbp.interop.onnx import export

        export(path, self, opset=opset)

    @classmethod
    def from_torch(cls, sequential):
        """An MLP from a torch.nn.Sequential of Linear layers, each optionally
        followed by one activation module (copies the weights).

        Modules that do nothing at inference are left out: Identity,
        Flatten() (fastbp's input is already 2-D), and dropout, with a
        UserWarning, since fastbp trains without it."""
        torch = _require_torch("MLP.from_torch()")
        if not isinstance(sequential, torch.nn.Sequential):
            raise TypeError(f"sequential must be a torch.nn.Sequential, got {describe(sequential)}")
        dropouts = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
                    torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)
        linears, activations = [], []
        for index, module in enumerate(sequential):
            if isinstance(module, dropouts):
                warnings.warn(f"sequential[{index}] is {type(module).__name__}: left out, as dropout does nothing "
                              f"at inference (and fastbp trains without it)", UserWarning, stacklevel=2)
                continue
            if isinstance(module, torch.nn.Flatten):
                if (module.start_dim, module.end_dim) != (1, -1):
                    raise TypeError(f"sequential[{index}] is {module!r}; only Flatten(start_dim=1, end_dim=-1) is "
                                    f"supported, which leaves fastbp's 2-D input (batch, n_in) as it is")
                continue
            if isinstance(module, torch.nn.Identity):
                continue
            if isinstance(module, torch.nn.Linear):
                if linears and linears[-1].out_features != module.in_features:
                    raise ValueError(f"sequential[{index}] takes {module.in_features} inputs but the layer "
                                     f"before gives {linears[-1].out_features}")
                linears.append(module)
                activations.append(Activation("identity"))
                continue
            activation = Activation.from_torch(module)
            if activation is None:
                raise TypeError(f"sequential[{index}] is {type(module).__name__}; only Linear, the activations "
                                f"{', '.join(sorted(_TORCH_CLASSES.values()))}, Dropout and Flatten are supported")
            if not linears:
                raise ValueError(f"sequential[{index}] is an activation before any Linear layer")
            if activations[-1].name != "identity":
                raise ValueError(f"sequential[{index}] is a second activation after one Linear layer")
            activations[-1] = activation
        if not linears:
            raise ValueError("sequential has no Linear layer")
        has_bias = {linear.bias is not None for linear in linears}
        if len(has_bias) > 1:
            raise ValueError("every Linear layer must have a bias, or none")
        dtypes = {linear.weight.dtype for linear in linears}
        if len(dtypes) > 1 or dtypes.pop() not in (torch.float32, torch.float64):
            found = sorted(str(linear.weight.dtype) for linear in linears)
            raise TypeError(f"Linear weights must all be float32 or all float64, got {found}")
        sizes = [linears[0].in_features] + [linear.out_features for linear in linears]
        model = cls(sizes, activation=activations[:-1], output_activation=activations[-1],
                    bias=has_bias.pop(), dtype=str(linears[0].weight.dtype).replace("torch.", ""))
        for (W, b), linear in zip(model.params, linears):
            W[...] = linear.weight.detach().cpu().numpy()
            if b is not None:
                b[...] = linear.bias.detach().cpu().numpy()
        return model



def _rebuild(sizes, activations, bias, dtype, params, grads, device="cpu"):
    model = MLP(sizes, activation=activations[:-1], output_activation=activations[-1], bias=bias, dtype=dtype,
                device=device)
    model._params[...] = params
    model._grads[...] = grads
    return model
