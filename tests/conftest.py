"""The one comparison helper every kernel and model test goes through, and a
table of the worst relative errors seen, printed at the end of the run."""
import collections

import numpy as np
import pytest

from fastbp import check

# worst relative error per (what, dtype), filled by check_against_torch
WORST = collections.defaultdict(float)


def relative_error(actual, expected):
    """fastbp.check's max-norm relative error, with the reason when it is inf."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != torch's {expected.shape}"
    assert np.isfinite(actual).all(), "non-finite values where torch has finite ones"
    return check.relative_error(actual, expected)


def record(name, dtype, error):
    key = (name, np.dtype(dtype).name)
    WORST[key] = max(WORST[key], error)


def assert_close(name, dtype, actual, expected, rtol):
    error = relative_error(actual, expected)
    record(name, dtype, error)
    assert error <= rtol, f"{name} ({np.dtype(dtype).name}): relative error {error:.3g} > {rtol:g}"


def check_against_torch(name, inputs, torch_fn, fastbp_fn, dtype, rtol, constant=(), seed=0):
    """Compare a kernel (or model) with torch autograd.

    ``inputs``: list of float64 arrays (differentiated, unless their index is
    in ``constant``) or integer arrays (passed through). ``torch_fn(*tensors)`` builds the output in float64.
    ``fastbp_fn(*arrays, dout)`` gets the inputs cast to ``dtype`` (integers
    untouched) and an upstream gradient, and returns ``(output, grads)`` with
    one gradient per differentiated input. Forward values and gradients are both
    compared with torch.autograd.grad at ``rtol`` (max-norm relative).
    """
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=i not in constant) if a.dtype.kind == "f"
               else torch.tensor(a) for i, a in enumerate(inputs)]
    expected = torch_fn(*tensors)
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal(tuple(expected.shape)) if expected.dim() else np.array(1.0)
    differentiable = [t for t in tensors if t.requires_grad]
    expected_grads = torch.autograd.grad(expected, differentiable, torch.tensor(dout), allow_unused=True)
    arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in inputs]
    output, grads = fastbp_fn(*arrays, dout.astype(dtype))
    assert_close(f"{name} forward", dtype, output, expected.detach().numpy(), rtol)
    assert len(grads) == len(expected_grads)
    for i, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        expected_grad = np.zeros(differentiable[i].shape) if expected_grad is None else expected_grad.numpy()
        assert_close(f"{name} backward", dtype, grad, expected_grad, rtol)


RTOL = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param


def pytest_terminal_summary(terminalreporter):
    if not WORST:
        return
    terminalreporter.section("worst relative error against torch (max-norm)")
    for (name, dtype), error in sorted(WORST.items()):
        terminalreporter.write_line(f"{name:<44} {dtype:<8} {error:.2e}")
