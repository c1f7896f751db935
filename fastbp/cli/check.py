"""``fastbp check``: this machine's compiled kernels against torch autograd.

Every row runs the kernels through the public API on seeded data in float32
and float64 and compares with torch in float64, element by element, with the
criterion the test suite uses: ``|ours - torch| <= atol + rtol * |torch|``.

On ``device="cuda"`` the same cases run through the CUDA twins of
``kernels/cuda`` (inputs copied to the device, results back; training is
``Trainer.fit`` of a model on the GPU, the fused device epoch), against the
same torch computation on the CPU.
"""
import collections

import numpy as np

from fastbp.activations import NAMES, Activation
from fastbp.losses import LOSSES
from fastbp.interop.torch import require_torch as _require_torch
from fastbp.mlp import MLP
from fastbp.optim import SGD, Adam, AdamW, RMSprop
from fastbp.trainer import Trainer
import kernels
from kernels.layers import DROPOUT, EVALUATION
from kernels.layers.table import KIND

# Every element must satisfy |ours - torch| <= atol + rtol * |torch|, torch in
# float64. float64 kernels stay below 1e-2 of this tolerance. float32 kernels
# compute in float64 and round once (3e-8 relative), but their inputs are
# rounded to float32 first (6e-8, times the function's condition number), and
# the gemm products accumulate in float32: up to 3e-6 relative on a 129-long
# sum, and 1.4e-5 absolute where a sum of 257 O(1) products cancels to near
# zero. rtol 1e-5 and atol 5e-5 hold those with room to spare, and still reject
# a kernel off by 1e-3 relative on any value above 0.05.
TOLERANCE = {"float32": {"atol": 5e-5, "rtol": 1e-5}, "float64": {"atol": 1e-12, "rtol": 1e-10}}


ACTIVATIONS = [Activation(name) for name in NAMES] + [Activation("gelu", approximate="tanh")]
# the cases' sizes (training: samples, batch, layers, epochs); "simulator"
# keeps them tiny, since the CUDA simulator runs every GPU thread as a Python
# thread (the tile there is 4: the sizes still do not divide it)
SIZES = {
    "full": {"layer": (17, 13, 9), "loss": (11, 5), "network": (33, [20, 32, 16, 4]),
             "training": (48, 16, [6, 10, 3], 3)},
    "simulator": {"layer": (5, 7, 3), "loss": (5, 3), "network": (5, [3, 6, 5, 2]),
                  "training": (5, 4, [3, 5, 3], 2)},
}
# what every case runs with: torch, the device of the kernels, the sizes
Setup = collections.namedtuple("Setup", "torch device sizes")
OPTIMIZERS = {
    "sgd nesterov": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "adam amsgrad": (Adam, dict(lr=0.01, amsgrad=True, weight_decay=1e-3)),
    "adamw": (AdamW, dict(lr=0.01)),
    "rmsprop centered": (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
}


def error_ratio(actual, expected, atol, rtol):
    """The worst ``|actual - expected| / (atol + rtol * |expected|)`` over the
    elements: at most 1 means every element is within tolerance.

    A NaN must meet a NaN and an infinity the same infinity; any other
    non-finite value, or a shape mismatch, gives inf.
    """
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return np.inf
    with np.errstate(invalid="ignore"):
        ratio = np.atleast_1d(np.abs(actual - expected) / (atol + rtol * np.abs(expected)))
    ratio[np.atleast_1d((actual == expected) | (np.isnan(actual) & np.isnan(expected)))] = 0.0
    ratio[np.isnan(ratio)] = np.inf  # a NaN against a number, or an inf against a finite value
    return ratio.max(initial=0.0)


def _error(actual, expected, dtype):
    return error_ratio(actual, expected, **TOLERANCE[dtype])


def _torch_model(model, torch):
    """``model`` in torch, float64, with the same weights."""
    return model.to_torch().to(torch.float64)


def _forward_backward(model, x, dout, device):
    """The model's output for ``x`` (batch, n_in), then from ``dout`` (batch,
    n_out) the input's gradient and the flat parameter gradients: on "cpu"
    by ``forward`` and ``backward``, on "cuda" by the network twins of
    ``kernels.cuda`` over copies of the model's buffers."""
    if device == "cpu":
        out = model.forward(x)
        return out, model.backward(dout), model._grads
    from numba import cuda

    import kernels.cuda
    from kernels.network import layer_units

    x, dout = (np.ascontiguousarray(a, dtype=model.dtype) for a in (x, dout))
    rows, last = x.shape[0], len(model._layers) - 1
    scratch = np.zeros((2, rows * max(model.sizes)), dtype=model.dtype)
    scratch[0, :dout.size] = dout.ravel()  # where network_backward reads d(loss)/d(output)
    device_x, device_params, device_grads, device_scratch = (
        cuda.to_device(a) for a in (x, model._params, model._grads, scratch))
    device_z, device_a = (cuda.device_array(rows * model._total_units, model.dtype) for _ in range(2))
    # a first forward in training mode, as model.forward's: step 0
    kernels.cuda.network_forward(device_z, device_a, device_x, device_params, model._layers,
                                 model._activation_params, (0, 0) if model.training else EVALUATION)
    kernels.cuda.network_backward(device_grads, device_scratch, device_x, device_params, model._layers,
                                  model._activation_params, device_z, device_a, True)
    out = layer_units(device_a.copy_to_host(), model._layers, last, rows)
    dx = device_scratch.copy_to_host()[len(model._layers) % 2, :x.size].reshape(x.shape)
    return out, dx, device_grads.copy_to_host()


def _loss_value_and_grad(loss, pred, target, device):
    """``loss``'s value at ``pred`` and its gradient with respect to ``pred``,
    on "cpu" by the loss object, on "cuda" by the twin kernel."""
    if device == "cpu":
        return loss(pred, target), loss.backward()
    from numba import cuda

    import kernels.cuda

    targets, labels = loss.targets(target, *pred.shape, pred.dtype)
    device_dpred, device_pred, device_targets, device_labels = (
        cuda.to_device(np.ascontiguousarray(a)) for a in (np.empty_like(pred), pred, targets, labels))
    value = kernels.cuda.loss_value_and_grad(device_dpred, device_pred, device_targets, device_labels, loss.code,
                                             loss.param, loss.reduction == "mean")
    return value, device_dpred.copy_to_host()


def _layer(activation, dtype, setup):
    """Dense layer + ``activation``: forward output and every gradient."""
    torch, device, sizes = setup
    batch, n_in, n_out = sizes["layer"]
    rng = np.random.default_rng(1)
    model = MLP([n_in, n_out], output_activation=activation, dtype=dtype, seed=2)
    x = rng.standard_normal((batch, n_in)) * 2
    dout = rng.standard_normal((batch, n_out))
    out, dx, grads = _forward_backward(model, x, dout, device)
    reference = _torch_model(model, torch)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = reference(x_t)
    out_t.backward(torch.tensor(dout))
    ours = [out, dx, grads]
    theirs = [out_t, x_t.grad, torch.cat([p.grad.reshape(-1) for p in reference.parameters()])]
    return [_error(a, b.detach().numpy(), dtype) for a, b in zip(ours, theirs)]


def _loss(name, dtype, setup):
    """Loss value and gradient with respect to the predictions."""
    torch, device, sizes = setup
    batch, n_out = sizes["loss"]
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((batch, n_out)) * 3
    if name == "cross_entropy":
        loss, target = LOSSES[name](label_smoothing=0.1), rng.integers(0, n_out, size=batch)
    else:
        loss = LOSSES[name]()
        target = {"bce_with_logits": lambda: rng.random((batch, n_out)),
                  "poisson_nll": lambda: rng.poisson(2.0, (batch, n_out)).astype(np.float64)}.get(
            name, lambda: rng.standard_normal((batch, n_out)))()
    target_t = torch.tensor(target)
    value, dpred = _loss_value_and_grad(loss, pred.astype(dtype), target, device)
    pred_t = torch.tensor(pred, requires_grad=True)
    torch_loss = {"mse": torch.nn.MSELoss(), "l1": torch.nn.L1Loss(), "huber": torch.nn.HuberLoss(),
                  "cross_entropy": torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                  "bce_with_logits": torch.nn.BCEWithLogitsLoss(),
                  "poisson_nll": torch.nn.PoissonNLLLoss(log_input=True)}[name]
    value_t = torch_loss(pred_t, target_t)
    value_t.backward()
    return [_error(value, value_t.item(), dtype), _error(dpred, pred_t.grad.numpy(), dtype)]


def _weighted_loss(dtype, setup):
    """Cross-entropy with sample weights, class weights and label smoothing:
    the weighted mean and its gradient (the CPU kernels: weighted training
    runs there)."""
    torch, _, sizes = setup
    batch, n_out = sizes["loss"]
    rng = np.random.default_rng(8)
    pred, labels = rng.standard_normal((batch, n_out)) * 3, rng.integers(0, n_out, size=batch)
    weights, class_weights = rng.random(batch) * 2, rng.random(n_out) + 0.5
    loss = LOSSES["cross_entropy"](label_smoothing=0.1, weight=class_weights)
    value = loss(pred.astype(dtype), labels, sample_weight=weights)
    pred_t, labels_t, weights_t = torch.tensor(pred, requires_grad=True), torch.tensor(labels), torch.tensor(weights)
    rows = torch.nn.functional.cross_entropy(pred_t, labels_t, weight=torch.tensor(class_weights), reduction="none",
                                             label_smoothing=0.1)
    value_t = (rows * weights_t).sum() / (weights_t * torch.tensor(class_weights)[labels_t]).sum()
    value_t.backward()
    return [_error(value, value_t.item(), dtype), _error(loss.backward(), pred_t.grad.numpy(), dtype)]


def _training(optimizer_name, dtype, setup):
    """A few epochs of Trainer.fit (the fused epoch kernel, clipping and the
    optimizer) against the same loop in torch: the final parameters."""
    torch, device, sizes = setup
    n_samples, batch, layer_sizes, epochs = sizes["training"]
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n_samples, layer_sizes[0]))
    y = rng.integers(0, layer_sizes[-1], size=n_samples)
    model = MLP(layer_sizes, activation="tanh", dtype=dtype, seed=5)
    reference = _torch_model(model, torch)
    model.to(device)
    optimizer_class, kwargs = OPTIMIZERS[optimizer_name]
    trainer = Trainer(model, "cross_entropy", optimizer_class(model, **kwargs), max_grad_norm=1.0)
    trainer.fit(X, y, epochs=epochs, batch_size=batch, shuffle=False)
    torch_class = getattr(torch.optim, optimizer_class.__name__)
    torch_optimizer = torch_class(reference.parameters(), **kwargs)
    X_t, y_t = torch.tensor(X), torch.tensor(y)
    for _ in range(epochs):
        for start in range(0, n_samples, batch):
            torch_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(X_t[start:start + batch]),
                                              y_t[start:start + batch]).backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            torch_optimizer.step()
    expected = torch.cat([p.detach().reshape(-1) for p in reference.parameters()]).numpy()
    return [_error(model._params, expected, dtype)]


def _network(dtype, setup):
    """A three-layer MLP's output and parameter gradients."""
    torch, device, sizes = setup
    batch, layer_sizes = sizes["network"]
    rng = np.random.default_rng(6)
    model = MLP(layer_sizes, activation=["gelu", "silu"], dtype=dtype, seed=7)
    x, dout = rng.standard_normal((batch, layer_sizes[0])), rng.standard_normal((batch, layer_sizes[-1]))
    out, _, ours = _forward_backward(model, x, dout, device)
    reference = _torch_model(model, torch)
    out_t = reference(torch.tensor(x))
    out_t.backward(torch.tensor(dout))
    grads = torch.cat([p.grad.reshape(-1) for p in reference.parameters()]).numpy()
    return [_error(out, out_t.detach().numpy(), dtype), _error(ours, grads, dtype)]


def _norm_dropout_network(dtype, setup, residual):
    """An MLP with layer norms and dropout (``residual``: residual blocks
    too), in training mode: output, input and parameter gradients, torch
    given the masks fastbp drew."""
    torch, device, sizes = setup
    batch, layer_sizes = sizes["network"]
    rng = np.random.default_rng(8)
    model = MLP(layer_sizes[:2] + layer_sizes[1:2] + layer_sizes[-1:], activation="relu", dtype=dtype, seed=9,
                dropout=0.25, norm="layer", residual=residual)
    x, dout = rng.standard_normal((batch, layer_sizes[0])), rng.standard_normal((batch, layer_sizes[-1]))
    out, dx, ours = _forward_backward(model, x, dout, device)
    reference = _torch_model(model, torch)
    # each dropout layer's mask at step 0, the first forward's
    masks = []
    for i in np.flatnonzero(model._layers[:, KIND] == DROPOUT):
        n = int(model._layers[i, 1])
        mask, ones = np.empty((batch, n)), np.ones((batch, n))
        kernels.dropout_forward(np.empty_like(mask), mask, ones, 0.25, model.dropout_seed, 0, int(i))
        masks.append(mask)

    def masked(sequential):
        for index, module in enumerate(sequential):
            if isinstance(module, torch.nn.Dropout):
                sequential[index] = _Masked(torch.from_numpy(masks.pop(0)))
            elif hasattr(module, "body"):
                masked(module.body)
    masked(reference)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = reference(x_t)
    out_t.backward(torch.tensor(dout))
    grads = torch.cat([p.grad.reshape(-1) for p in reference.parameters()]).numpy()
    return [_error(out, out_t.detach().numpy(), dtype), _error(dx, x_t.grad.numpy(), dtype),
            _error(ours, grads, dtype)]


def _Masked(mask):
    """A torch module multiplying by ``mask``: dropout, given its mask."""
    import torch

    class Masked(torch.nn.Module):
        def forward(self, x):
            return x * mask
    return Masked()


def rows(device="cpu"):
    """(name, parts, {dtype: [error per part]}) for every check, the kernels
    run on ``device`` ("cpu", or "cuda": a RuntimeError saying what is
    missing where it cannot run, before any case runs)."""
    torch = _require_torch("fastbp check")
    sizes = SIZES["full"]
    if device == "cuda":
        from fastbp.backends.cuda import require_cuda

        require_cuda()
        from kernels.cuda.config import SIMULATED

        sizes = SIZES["simulator" if SIMULATED else "full"]
    setup = Setup(torch, device, sizes)
    network = "-".join(map(str, sizes["network"][1]))
    checks = [(f"dense + {a.name}{'_tanh' if a.params.get('approximate') == 'tanh' else ''}",
               ("out", "dx", "dW,db"), lambda d, a=a: _layer(a, d, setup)) for a in ACTIVATIONS]
    checks += [(f"loss {name}", ("value", "dpred"), lambda d, n=name: _loss(n, d, setup)) for name in LOSSES]
    if device == "cpu":
        checks.append(("loss cross_entropy weighted", ("value", "dpred"), lambda d: _weighted_loss(d, setup)))
    checks.append((f"mlp {network} gelu/silu", ("out", "grads"), lambda d: _network(d, setup)))
    checks.append(("mlp + layer norm, dropout", ("out", "dx", "grads"),
                   lambda d: _norm_dropout_network(d, setup, False)))
    checks.append(("resnet + norm, dropout", ("out", "dx", "grads"), lambda d: _norm_dropout_network(d, setup, True)))
    checks += [(f"{sizes['training'][3]} epochs {name}", ("params",), lambda d, n=name: _training(n, d, setup))
               for name in OPTIMIZERS]
    return [(name, parts, {dtype: run(dtype) for dtype in TOLERANCE}) for name, parts, run in checks]


def report(results):
    """The table as text, and whether every error is within its limit."""
    lines = [f"{'check':<28}{'parts':<16}{'float32':>26}{'float64':>26}  result"]
    passed = True
    for name, parts, errors in results:
        ok = all(e <= 1.0 for dtype in TOLERANCE for e in errors[dtype])
        passed &= ok
        cells = [" ".join(f"{e:.1e}" for e in errors[dtype]) for dtype in TOLERANCE]
        lines.append(f"{name:<28}{'/'.join(parts):<16}{cells[0]:>26}{cells[1]:>26}  {'ok' if ok else 'MISS'}")
    lines.append("each figure is the worst |ours - torch| / (atol + rtol * |torch|) over the elements, "
                 "torch in float64; at most 1 passes")
    lines.append(", ".join(f"{dtype}: atol {t['atol']:g}, rtol {t['rtol']:g}" for dtype, t in TOLERANCE.items()))
    return "\n".join(lines), passed
