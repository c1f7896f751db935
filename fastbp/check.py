"""``fastbp check``: this machine's compiled kernels against torch autograd.

Every row runs the kernels through the public API on seeded data in float32
and float64 and compares with torch in float64, element by element, with the
criterion the test suite uses: ``|ours - torch| <= atol + rtol * |torch|``.
"""
import numpy as np

from fastbp.activations import NAMES, Activation
from fastbp.losses import LOSSES
from fastbp.mlp import MLP, _require_torch
from fastbp.optim import SGD, Adam, AdamW, RMSprop
from fastbp.trainer import Trainer

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


def _layer(activation, dtype, torch):
    """Dense layer + ``activation``: forward output and every gradient."""
    rng = np.random.default_rng(1)
    model = MLP([13, 9], output_activation=activation, dtype=dtype, seed=2)
    x = rng.standard_normal((17, 13)) * 2
    dout = rng.standard_normal((17, 9))
    out = model.forward(x)
    dx = model.backward(dout)
    reference = _torch_model(model, torch)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = reference(x_t)
    out_t.backward(torch.tensor(dout))
    ours = [out, dx, model._grads]
    theirs = [out_t, x_t.grad, torch.cat([p.grad.reshape(-1) for p in reference.parameters()])]
    return [_error(a, b.detach().numpy(), dtype) for a, b in zip(ours, theirs)]


def _loss(name, dtype, torch):
    """Loss value and gradient with respect to the predictions."""
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((11, 5)) * 3
    if name == "cross_entropy":
        loss, target = LOSSES[name](label_smoothing=0.1), rng.integers(0, 5, size=11)
    else:
        loss = LOSSES[name]()
        target = rng.random((11, 5)) if name == "bce_with_logits" else rng.standard_normal((11, 5))
    target_t = torch.tensor(target)
    value = loss(pred.astype(dtype), target)
    pred_t = torch.tensor(pred, requires_grad=True)
    torch_loss = {"mse": torch.nn.MSELoss(), "l1": torch.nn.L1Loss(), "huber": torch.nn.HuberLoss(),
                  "cross_entropy": torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                  "bce_with_logits": torch.nn.BCEWithLogitsLoss()}[name]
    value_t = torch_loss(pred_t, target_t)
    value_t.backward()
    return [_error(value, value_t.item(), dtype), _error(loss.backward(), pred_t.grad.numpy(), dtype)]


def _training(optimizer_name, dtype, torch):
    """Three epochs of Trainer.fit (the fused epoch kernel, clipping and the
    optimizer) against the same loop in torch: the final parameters."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((48, 6))
    y = rng.integers(0, 3, size=48)
    model = MLP([6, 10, 3], activation="tanh", dtype=dtype, seed=5)
    reference = _torch_model(model, torch)
    optimizer_class, kwargs = OPTIMIZERS[optimizer_name]
    trainer = Trainer(model, "cross_entropy", optimizer_class(model, **kwargs), max_grad_norm=1.0)
    trainer.fit(X, y, epochs=3, batch_size=16, shuffle=False)
    torch_class = getattr(torch.optim, optimizer_class.__name__)
    torch_optimizer = torch_class(reference.parameters(), **kwargs)
    X_t, y_t = torch.tensor(X), torch.tensor(y)
    for _ in range(3):
        for start in range(0, 48, 16):
            torch_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(X_t[start:start + 16]), y_t[start:start + 16]).backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            torch_optimizer.step()
    expected = torch.cat([p.detach().reshape(-1) for p in reference.parameters()]).numpy()
    return [_error(model._params, expected, dtype)]


def _network(dtype, torch):
    """A three-layer MLP's output and parameter gradients."""
    rng = np.random.default_rng(6)
    model = MLP([20, 32, 16, 4], activation=["gelu", "silu"], dtype=dtype, seed=7)
    x, dout = rng.standard_normal((33, 20)), rng.standard_normal((33, 4))
    out = model.forward(x)
    model.backward(dout)
    reference = _torch_model(model, torch)
    out_t = reference(torch.tensor(x))
    out_t.backward(torch.tensor(dout))
    grads = torch.cat([p.grad.reshape(-1) for p in reference.parameters()]).numpy()
    return [_error(out, out_t.detach().numpy(), dtype), _error(model._grads, grads, dtype)]


def rows():
    """(name, parts, {dtype: [error per part]}) for every check."""
    torch = _require_torch("fastbp check")
    checks = [(f"dense + {a.name}{'_tanh' if a.params.get('approximate') == 'tanh' else ''}",
               ("out", "dx", "dW,db"), lambda d, a=a: _layer(a, d, torch)) for a in ACTIVATIONS]
    checks += [(f"loss {name}", ("value", "dpred"), lambda d, n=name: _loss(n, d, torch)) for name in LOSSES]
    checks.append(("mlp 20-32-16-4 gelu/silu", ("out", "grads"), lambda d: _network(d, torch)))
    checks += [(f"3 epochs {name}", ("params",), lambda d, n=name: _training(n, d, torch))
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
