"""The one comparison helper every kernel and model test goes through, and a
table of the worst errors seen, printed at the end of the run.

Every element must satisfy ``|ours - torch| <= atol + rtol * |torch|`` with
the per-dtype tolerances of ``fastbp.cli.check.TOLERANCE`` (the ones ``fastbp
check`` prints); a NaN must meet a NaN and an infinity the same infinity.
"""
import collections

import numpy as np
import pytest

from fastbp.cli import check
from tests import background

TOLERANCE = {np.float64: check.TOLERANCE["float64"], np.float32: check.TOLERANCE["float32"]}

# worst error ratio per (what, dtype), filled by passing comparisons
WORST = collections.defaultdict(float)


def assert_close(name, dtype, actual, expected, tolerance):
    """Every element of ``actual`` within ``tolerance`` (atol, rtol) of ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != torch's {expected.shape}"
    ratio = check.error_ratio(actual, expected, **tolerance)
    if ratio > 1.0:
        bad = np.unravel_index(np.argmax(~np.isclose(actual, expected, equal_nan=True, **tolerance)), actual.shape)
        raise AssertionError(
            f"{name} ({np.dtype(dtype).name}): |ours - expected| reaches {ratio:.3g} x (atol + rtol*|expected|) "
            f"with atol={tolerance['atol']:g}, rtol={tolerance['rtol']:g}; "
            f"at {bad}: ours {actual[bad]!r}, expected {expected[bad]!r}")
    key = (name, np.dtype(dtype).name)
    WORST[key] = max(WORST[key], ratio)


def check_against_torch(name, inputs, torch_fn, fastbp_fn, dtype, tolerance, constant=(), seed=0):
    """Compare a kernel (or model) with torch autograd.

    ``inputs``: list of float64 arrays (differentiated, unless their index is
    in ``constant``) or integer arrays (passed through). ``torch_fn(*tensors)`` builds the output in float64.
    ``fastbp_fn(*arrays, dout)`` gets the inputs cast to ``dtype`` (integers
    untouched) and an upstream gradient, and returns ``(output, grads)`` with
    one gradient per differentiated input. Forward values and gradients are both
    compared with torch.autograd.grad elementwise at ``tolerance`` (atol, rtol).
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
    assert_close(f"{name} forward", dtype, output, expected.detach().numpy(), tolerance)
    assert len(grads) == len(expected_grads)
    for i, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        expected_grad = np.zeros(differentiable[i].shape) if expected_grad is None else expected_grad.numpy()
        assert_close(f"{name} backward", dtype, grad, expected_grad, tolerance)


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request):
    return request.param


def pytest_terminal_summary(terminalreporter):
    if not WORST:
        return
    terminalreporter.section("worst |ours - torch| / (atol + rtol*|torch|) per element (at most 1 passes)")
    for dtype, tolerance in check.TOLERANCE.items():
        terminalreporter.write_line(f"{dtype}: atol {tolerance['atol']:g}, rtol {tolerance['rtol']:g}")
    for (name, dtype), ratio in sorted(WORST.items()):
        terminalreporter.write_line(f"{name:<44} {dtype:<8} {ratio:.2e}")


def pytest_configure(config):
    config.addinivalue_line("markers", "background(key): owns a suite run beside the session (tests/background.py)")


def pytest_collection_modifyitems(items):
    # the tests that wait for a background suite go last, so that the session runs beside the suite
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)


def pytest_collection_finish(session):
    background.start(background.keys_of(session.items))


def pytest_sessionfinish(session):
    background.stop()
