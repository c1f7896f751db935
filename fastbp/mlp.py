"""The multi-layer perceptron: flat buffers plus the layer table that drives
the kernels in ``kernels.network``."""
import threading

import numpy as np

import kernels
from kernels.layers import DENSE, DROPOUT, EVALUATION, LAYERNORM, layer_table
from kernels.layers.table import KIND
from kernels.inference import block_rows, inference_parts, network_predict, work_size
from kernels.network import buffer_sizes, layer_units, network_backward, network_forward
from fastbp import archive
from fastbp._checks import as_bool, as_choice, as_dtype, as_float, as_int, as_matrix, as_seed, describe
from fastbp._state import as_state_array, check_equal, check_keys
from fastbp.activations import Activation, as_activation
from fastbp.interop.torch import from_torch, to_torch
from fastbp.layout import layout as _layout, per_hidden_layer as _per_hidden_layer
from fastbp.backends.cuda import as_device

# the largest prediction buffer (in values) a thread keeps between calls
_KEPT_WORK = 1 << 20


class MLP:
    """A stack of dense layers with activations, ``W`` shaped (n_out, n_in)
    as in torch.nn.Linear; each hidden layer optionally followed by a layer
    norm and dropout.

    Args:
        sizes: layer widths ``[n_in, hidden..., n_out]``, at least two, each >= 1.
        activation: the hidden layers' activation, a name or ``fastbp.Activation``,
            or a list with one per hidden layer.
        output_activation: the last layer's activation (default "identity",
            what the losses expect: they take logits).
        bias: whether every dense layer has a bias.
        dtype: "float32" or "float64".
        seed: seed for the initialisation, which draws W and b from
            U(-1/sqrt(n_in), 1/sqrt(n_in)) as torch.nn.Linear does, and
            for dropout's masks.
        device: where ``Trainer.fit`` trains the model: "cpu", or "cuda" for an
            NVIDIA GPU (needs fastbp[cuda]); see ``to``.
        dropout: the rate in [0, 1) of (inverted) dropout after each hidden
            layer, or a list with one per hidden layer (0: none), as
            torch.nn.Dropout; in training only (see ``train``).
        norm: None, or "layer" for a layer norm (torch.nn.LayerNorm over
            the features, weight 1 and bias 0 at first) after each hidden
            layer's activation, before its dropout.
        norm_eps: the layer norm's eps.
        residual: a ResNet (Gorishniy et al.) instead: a dense layer from
            the inputs to the hidden width ``d`` (every hidden width the
            same), then per hidden layer a residual block
            ``x + Dropout(Linear(Dropout(activation(Linear(Norm(x))))))``
            of width ``d``, then ``Norm``, the activation and the output
            layer (``Norm`` the layer norm, or nothing without ``norm``).

    Shape:
        Input (batch, sizes[0]); output (batch, sizes[-1]).

    Parameters, gradients and the activations cached for backward live in
    flat buffers; ``params`` and ``grads`` are per-layer ``(W, b)`` views into
    them (``b`` is None without bias), ``norms`` and ``norm_grads`` the layer
    norms' ``(weight, bias)``, so writing into a view changes the model.

    Example:
        >>> model = fastbp.MLP([2, 8, 1], activation="tanh", seed=0)
        >>> out = model.forward(np.ones((4, 2)))
        >>> dx = model.backward(np.ones_like(out))
    """

    def __init__(self, sizes, activation="relu", output_activation="identity", bias=True,
                 dtype="float32", seed=None, device="cpu", dropout=0.0, norm=None, norm_eps=1e-5, residual=False):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a list of layer widths, got {describe(sizes)}")
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output widths, got {list(sizes)}")
        sizes = tuple(as_int(f"sizes[{i}]", size, minimum=1) for i, size in enumerate(sizes))
        n_hidden = len(sizes) - 2
        hidden = [as_activation(f"activation[{i}]" if isinstance(activation, (list, tuple)) else "activation", a)
                  for i, a in enumerate(_per_hidden_layer("activation", activation, n_hidden))]
        self.sizes = sizes
        self.activations = hidden + [as_activation("output_activation", output_activation)]
        self.bias = as_bool("bias", bias)
        self.dtype = as_dtype("dtype", dtype)
        seed = as_seed("seed", seed)
        self.device = as_device("device", device)
        self.dropout = tuple(as_float(f"dropout[{i}]" if isinstance(dropout, (list, tuple)) else "dropout", p,
                                      low=0.0, high=1.0, high_open=True)
                             for i, p in enumerate(_per_hidden_layer("dropout", dropout, n_hidden)))
        self.norm = None if norm is None else as_choice("norm", norm, ("layer",))
        self.norm_eps = as_float("norm_eps", norm_eps, low=0.0, low_open=True)
        self.training = True
        # dropout's masks are keyed by this seed, drawn by reset_parameters
        self._dropout_seed = 0
        self._forward_count = 0

        self.residual = as_bool("residual", residual)
        if self.residual and len(set(sizes[1:-1])) != 1:
            raise ValueError(f"residual=True needs hidden layers of one width (each a residual block of it), "
                             f"got sizes {list(sizes)}")
        rows, scalars, _ = self._layout()
        self._layers = layer_table(rows)
        self._activation_params = np.array(scalars, dtype=np.float64)
        n_params, self._total_units, self._max_width = buffer_sizes(self._layers)
        self._params = np.zeros(n_params, dtype=self.dtype)
        self._grads = np.zeros(n_params, dtype=self.dtype)
        self.params, self.norms = self._views(self._params)
        self.grads, self.norm_grads = self._views(self._grads)
        self._capacity = 0
        self._forward_rows = None
        self._multiply_adds = sum(int(n_in * n_out) for n_in, n_out, *_ in self._layers[self._layers[:, KIND] == DENSE])
        self._local = threading.local()
        self.reset_parameters(seed)

    def _layout(self):
        return _layout(self.sizes, self.activations, self.bias, self.dropout, self.norm, self.norm_eps,
                       self.residual)

    @property
    def _row_activations(self):
        """The ``fastbp.Activation`` each row of the layer table applies (None: none), from ``activations``."""
        return self._layout()[2]

    @property
    def plain(self):
        """Whether the model is dense layers alone (no norm, dropout or residual block)."""
        return bool(np.all(self._layers[:, KIND] == DENSE))

    @property
    def dropout_seed(self):
        """The seed dropout's masks are keyed by (with the update number,
        the layer and the element: the same on any thread count and after
        a resume)."""
        return self._dropout_seed

    def _set_dropout_seed(self, seed):
        self._dropout_seed = int(seed)
        self._activation_params[self._layers[:, KIND] == DROPOUT, 1] = float(seed)

    def _bundle(self):
        """The network as the compiled epoch takes it (``kernels.Network``)."""
        return kernels.Network(self._params, self._grads, self._layers, self._activation_params)

    def _views(self, flat):
        # the (W, b) of each dense layer and the (weight, bias) of each layer norm
        dense, norms = [], []
        for n_in, n_out, w_offset, b_offset, _, _, kind, _ in self._layers:
            if kind == DENSE:
                W = flat[w_offset:w_offset + n_out * n_in].reshape(n_out, n_in)
                dense.append((W, flat[b_offset:b_offset + n_out] if b_offset >= 0 else None))
            elif kind == LAYERNORM:
                norms.append((flat[w_offset:w_offset + n_out], flat[b_offset:b_offset + n_out]))
        return dense, norms

    def reset_parameters(self, seed=None):
        """Redraw every W and b from U(-1/sqrt(n_in), 1/sqrt(n_in)), set the
        layer norms' weights to 1 and biases to 0, and draw dropout's seed."""
        rng = np.random.default_rng(as_seed("seed", seed))
        for W, b in self.params:
            bound = 1.0 / np.sqrt(W.shape[1])
            W[...] = rng.uniform(-bound, bound, size=W.shape)
            if b is not None:
                b[...] = rng.uniform(-bound, bound, size=b.shape)
        for weight, bias in self.norms:
            weight[...] = 1.0
            bias[...] = 0.0
        if any(p > 0 for p in self.dropout):
            # drawn after the weights, so that they are those of a model without dropout
            self._set_dropout_seed(rng.integers(1 << 53))

    def train(self, mode=True):
        """Set training mode (dropout drops, as in torch); returns the model.
        ``Trainer.fit`` trains in training mode whatever this says, and
        ``predict`` is always in evaluation mode."""
        self.training = as_bool("mode", mode)
        return self

    def eval(self):
        """Evaluation mode for ``forward``: dropout passes its inputs through."""
        return self.train(False)

    def __reduce__(self):
        # pickle and copy rebuild the flat buffers and the views into them
        # (pickling the views would cut them loose from the buffers)
        return (_rebuild, (self.sizes, self.activations, self.bias, self.dtype.name, self._params, self._grads,
                           self.device, self._layer_options(), self._dropout_seed, self.training))

    def _layer_options(self):
        return {"dropout": list(self.dropout), "norm": self.norm, "norm_eps": self.norm_eps,
                "residual": self.residual}

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
        if any(p > 0 for p in self.dropout):
            rates = set(self.dropout)
            where += f", dropout={rates.pop() if len(rates) == 1 else list(self.dropout)}"
        if self.norm is not None:
            where += f", norm={self.norm!r}"
        if self.residual:
            where += ", residual=True"
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
        """The network's output for ``x`` (batch, n_in), in training mode
        (``train``, the default, as in torch) or evaluation mode (``eval``);
        caches what backward needs in the model's buffers, so one thread at
        a time (``predict`` is the call for threads, in evaluation mode)."""
        x = as_matrix("x", x, self.dtype, self.sizes[0])
        rows = x.shape[0]
        self._ensure_capacity(rows)
        # Our own copy of x: backward must see the input forward saw.
        inputs = self._inputs[:x.size].reshape(x.shape)
        inputs[...] = x
        mode = EVALUATION
        if self.training and not self.plain:
            # a manual training loop's masks: a new key for every forward
            mode = (self._forward_count, 0)
            self._forward_count += 1
        network_forward(self._z, self._a, inputs, self._params, self._layers, self._activation_params, mode)
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
        layer, ``bias``, ``dtype``; for a model with norms, dropout or
        residual blocks, ``layers``: its ``dropout``, ``norm``, ``norm_eps``,
        ``residual`` and ``dropout_seed``) and a copy of the flat ``params``
        (layer by layer in the order of the layer table: a dense layer's W
        (n_out, n_in) row-major, then b; a layer norm's weight, then bias)."""
        state = {"sizes": list(self.sizes), "activations": [[a.name, dict(a.params)] for a in self.activations],
                 "bias": self.bias, "dtype": self.dtype.name, "params": self._params.copy()}
        if not self.plain:
            state["layers"] = {**self._layer_options(), "dropout_seed": self._dropout_seed}
        return state

    @classmethod
    def from_state_dict(cls, state):
        """The model of ``state``'s layer table, holding its parameters."""
        check_keys("state", state, _STATE_KEYS + (("layers",) if isinstance(state, dict) and "layers" in state
                                                  else ()))
        if not isinstance(state["activations"], (list, tuple)) or not state["activations"]:
            raise TypeError(f"state['activations'] must be a list of [name, params] per layer, got "
                            f"{describe(state['activations'])}")
        activations = [Activation(name, **params) for name, params in state["activations"]]
        options = {}
        if "layers" in state:
            check_keys("state['layers']", state["layers"], _LAYER_KEYS)
            options = {key: state["layers"][key] for key in _LAYER_KEYS[:-1]}
        model = cls(state["sizes"], activation=activations[:-1], output_activation=activations[-1],
                    bias=state["bias"], dtype=state["dtype"], **options)
        model.load_state_dict(state)
        return model

    def load_state_dict(self, state):
        """Copy in the parameters of ``state`` (from ``state_dict()`` of a
        model with these layers); checks everything before changing anything."""
        check_keys("state", state, _STATE_KEYS + (() if self.plain else ("layers",)))
        advice = "build a model with these layers to take this state (fastbp.load does from a file)"
        check_equal("state['sizes']", list(state["sizes"]) if isinstance(state["sizes"], (list, tuple)) else
                    state["sizes"], list(self.sizes), advice)
        check_equal("state['activations']", state["activations"],
                    [[a.name, dict(a.params)] for a in self.activations], advice)
        check_equal("state['bias']", state["bias"], self.bias, advice)
        check_equal("state['dtype']", state["dtype"], self.dtype.name, advice)
        seed = self._dropout_seed
        if not self.plain:
            layers = state["layers"]
            check_keys("state['layers']", layers, _LAYER_KEYS)
            given = {key: list(value) if isinstance(value, (list, tuple)) else value for key, value in layers.items()
                     if key != "dropout_seed"}
            check_equal("state['layers']", given, self._layer_options(), advice)
            seed = as_int("state['layers']['dropout_seed']", layers["dropout_seed"], minimum=0)
            if seed >= 1 << 53:
                raise ValueError(f"state['layers']['dropout_seed'] must be below 2**53, got {seed}")
        self._params[...] = as_state_array("state['params']", state["params"], self._params.shape, self.dtype)
        self._set_dropout_seed(seed)

    def save(self, path):
        """Write the model (sizes, activations, dtype, parameters) to an .npz
        file, atomically; read it back with ``fastbp.load``."""
        archive.write_model(path, self.state_dict())

    def to_torch(self):
        """A torch.nn.Sequential computing the same function (copies the
        parameters; see ``fastbp.interop.torch`` for its layout)."""
        return to_torch(self)

    def to_onnx(self, path, opset=17):
        """Write the network to ``path`` as an ONNX graph (needs fastbp[onnx]):
        input "input" (N, sizes[0]), output "output" (N, sizes[-1]), both
        of the model's dtype; see ``fastbp.interop.onnx.export``."""
        from fastbp.interop.onnx import export

        export(path, self, opset=opset)

    @classmethod
    def from_torch(cls, sequential):
        """An MLP from a torch.nn.Sequential of Linear layers, each optionally
        followed by an activation, then (hidden layers) LayerNorm and Dropout
        (copies the parameters; see ``fastbp.interop.torch``).

        Modules that do nothing at inference are left out: Identity,
        Flatten() (fastbp's input is already 2-D), and dropout where fastbp
        has none (before the first Linear, after the last, or of another
        kind than Dropout), with a UserWarning."""
        return from_torch(cls, sequential)


_STATE_KEYS = ("sizes", "activations", "bias", "dtype", "params")
_LAYER_KEYS = ("dropout", "norm", "norm_eps", "residual", "dropout_seed")


def _rebuild(sizes, activations, bias, dtype, params, grads, device="cpu", options=None, dropout_seed=0,
             training=True):
    model = MLP(sizes, activation=activations[:-1], output_activation=activations[-1], bias=bias, dtype=dtype,
                device=device, **(options or {}))
    model._params[...] = params
    model._grads[...] = grads
    model._set_dropout_seed(dropout_seed)
    model.training = training
    return model
