"""Every kernel against torch autograd, elementwise within tests.conftest.TOLERANCE."""
import itertools

import numpy as np
import pytest

import kernels
from tests.conftest import TOLERANCE, assert_close, check_against_torch

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (batch, n_in, n_out): ones, odd sizes, and a large layer
DENSE_SHAPES = [(1, 1, 1), (1, 7, 1), (5, 1, 3), (3, 17, 9), (64, 33, 65), (257, 300, 129)]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense(shape, bias, dtype):
    batch, n_in, n_out = shape
    rng = np.random.default_rng(batch * 1000 + n_in)
    x = rng.standard_normal((batch, n_in))
    W = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    b = rng.standard_normal(n_out)
    dW_before = rng.standard_normal((n_out, n_in))  # backward must add to what is there
    db_before = rng.standard_normal(n_out)

    def fastbp_dense(x, W, *rest):
        dout = rest[-1]
        bias_array = rest[0] if bias else None
        out = np.empty((batch, n_out), dtype=x.dtype)
        kernels.dense_forward(out, x, W, bias_array)
        dx = np.full_like(x, np.nan)  # written, not accumulated
        dW = dW_before.astype(x.dtype)
        db = db_before.astype(x.dtype) if bias else None
        kernels.dense_backward(dx, dW, db, dout, x, W)
        grads = [dx, dW - dW_before.astype(x.dtype)]
        if bias:
            grads.append(db - db_before.astype(x.dtype))
        return out, grads

    inputs = [x, W, b] if bias else [x, W]
    check_against_torch("dense", inputs, lambda x, W, *b: F.linear(x, W, *b), fastbp_dense, dtype, TOLERANCE[dtype])


def test_dense_backward_skips_what_is_absent():
    rng = np.random.default_rng(1)
    x, W, dout = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal((4, 2))
    dW = np.zeros((2, 3))
    kernels.dense_backward(None, dW, None, dout, x, W)
    np.testing.assert_allclose(dW, dout.T @ x, rtol=1e-14)
    empty_dx, empty_db = np.empty((0, 3)), np.empty(0)
    kernels.dense_backward(empty_dx, dW, empty_db, dout, x, W)
    np.testing.assert_allclose(dW, 2 * dout.T @ x, rtol=1e-14)


@pytest.mark.parametrize("m, n, k", [(5, 7, 3), (19, 23, 17)], ids=["loops", "blas"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_transposes_and_strided_views(trans_a, trans_b, m, n, k, dtype):
    assert (m * n * k < kernels.blas.SMALL_GEMM) == (m == 5)  # both routes are exercised
    rng = np.random.default_rng(2)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    expected = 0.5 * ((A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B)) + 2.0 * C
    kernels.gemm(C, A, B, trans_a, trans_b, 0.5, 2.0)
    assert_close("gemm", dtype, C, expected, TOLERANCE[dtype])
    # a view with a row stride larger than its width is fine for BLAS too,
    # and a view with strided columns takes the loops
    big = rng.standard_normal((m, 2 * n)).astype(dtype)
    for view in (big[:, :n], big[:, ::2]):
        before = view.copy()
        kernels.gemm(view, A, B, trans_a, trans_b, 1.0, 1.0)
        assert_close("gemm", dtype, view, before + (A.T if trans_a else A) @ (B.T if trans_b else B),
                     TOLERANCE[dtype])


# Memory layouts a caller may hand to the dense kernels and gemm; the first two
# overlap themselves (a row stride below the row, or 0), which BLAS refuses.
LAYOUTS = ["sliding window", "broadcast", "fortran", "column slice"]


def _structured(shape, layout, rng):
    """float64 values that ``layout`` can hold: Hankel for a sliding window,
    equal rows for a broadcast, anything otherwise."""
    rows, cols = shape
    if layout == "sliding window":
        return np.lib.stride_tricks.sliding_window_view(rng.standard_normal(rows + cols - 1), cols).copy()
    if layout == "broadcast":
        return np.tile(rng.standard_normal(cols), (rows, 1))
    return rng.standard_normal(shape)


def _relayout(a, layout, writeable=False):
    """The values of ``a`` (made by _structured) in ``layout``'s memory layout."""
    if layout == "sliding window":
        series = np.concatenate([a[0], a[1:, -1]])
        view = np.lib.stride_tricks.sliding_window_view(series, a.shape[1], writeable=writeable)
    elif layout == "broadcast":
        view = np.lib.stride_tricks.as_strided(a[0].copy(), a.shape, (0, a.itemsize), writeable=writeable)
    elif layout == "fortran":
        view = np.asfortranarray(a)
    elif layout == "column slice":
        wide = np.zeros((a.shape[0], 2 * a.shape[1]), dtype=a.dtype)
        wide[:, ::2] = a
        view = wide[:, ::2]
    else:
        view = a.copy()
    np.testing.assert_array_equal(view, a)
    return view


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("operand", ["A", "B", "C"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["nn", "tn", "nt", "tt"])
def test_gemm_any_layout(trans_a, trans_b, operand, layout, dtype):
    m, n, k = 24, 16, 20  # above SMALL_GEMM: the BLAS route
    shapes = {"A": (k, m) if trans_a else (m, k), "B": (n, k) if trans_b else (k, n), "C": (m, n)}
    rng = np.random.default_rng(8)
    values = {name: _structured(shape, layout if name == operand else "", rng) for name, shape in shapes.items()}
    A, B, C = (_relayout(values[name].astype(dtype), layout if name == operand else "", writeable=name == "C")
               for name in "ABC")
    if operand == "C" and layout in ("sliding window", "broadcast"):
        before = C.copy()
        with pytest.raises(ValueError, match="C overlaps itself"):
            kernels.gemm(C, A, B, trans_a, trans_b, 1.0, 1.0)
        np.testing.assert_array_equal(C, before)
        return
    kernels.gemm(C, A, B, trans_a, trans_b, 0.5, 2.0)
    op_a = values["A"].T if trans_a else values["A"]
    op_b = values["B"].T if trans_b else values["B"]
    assert_close(f"gemm {layout}", dtype, C, 0.5 * op_a @ op_b + 2.0 * values["C"], TOLERANCE[dtype])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("operand", ["x", "W", "dout", "out", "dx", "dW"])
def test_dense_any_layout(operand, layout, dtype):
    batch, n_in, n_out = 64, 16, 24
    shapes = {"x": (batch, n_in), "W": (n_out, n_in), "dout": (batch, n_out),
              "out": (batch, n_out), "dx": (batch, n_in), "dW": (n_out, n_in)}
    rng = np.random.default_rng(9)
    values = {name: _structured(shape, layout if name == operand else "", rng) for name, shape in shapes.items()}
    x, W, dout, out, dx, dW = (
        _relayout(values[name].astype(dtype), layout if name == operand else "", writeable=name in ("out", "dx", "dW"))
        for name in shapes)
    b = rng.standard_normal(n_out)
    db = np.zeros(n_out, dtype=dtype)
    if operand in ("out", "dx", "dW") and layout in ("sliding window", "broadcast"):
        before = {"out": out, "dx": dx, "dW": dW}[operand].copy()
        with pytest.raises(ValueError, match=f"{operand} overlaps itself"):
            if operand == "out":
                kernels.dense_forward(out, x, W, b.astype(dtype))
            else:
                kernels.dense_backward(dx, dW, db, dout, x, W)
        np.testing.assert_array_equal({"out": out, "dx": dx, "dW": dW}[operand], before)
        return
    kernels.dense_forward(out, x, W, b.astype(dtype))
    kernels.dense_backward(dx, dW, db, dout, x, W)
    x, W, dout = values["x"], values["W"], values["dout"]
    assert_close(f"dense forward {layout}", dtype, out, x @ W.T + b, TOLERANCE[dtype])
    assert_close(f"dense backward {layout}", dtype, dx, dout @ W, TOLERANCE[dtype])
    assert_close(f"dense backward {layout}", dtype, dW, values["dW"] + dout.T @ x, TOLERANCE[dtype])
    assert_close(f"dense backward {layout}", dtype, db, dout.sum(axis=0), TOLERANCE[dtype])


def test_overlaps_itself_agrees_with_counting_addresses():
    memory = np.zeros(200)
    for rows, cols, row_step, column_step in itertools.product(range(5), range(5), range(-6, 7), range(-6, 7)):
        a = np.lib.stride_tricks.as_strided(memory[100:], (rows, cols), (row_step * 8, column_step * 8))
        addresses = {i * row_step + j * column_step for i in range(rows) for j in range(cols)}
        assert kernels.blas.overlaps_itself(a) == (len(addresses) < rows * cols), a.strides


# name, torch function, kernel code, p1, p2
ACTIVATIONS = [
    ("identity", lambda x: x * 1, kernels.IDENTITY, 0.0, 0.0),
    ("relu", F.relu, kernels.RELU, 0.0, 0.0),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), kernels.LEAKY_RELU, 0.1, 0.0),
    ("sigmoid", torch.sigmoid, kernels.SIGMOID, 0.0, 0.0),
    ("tanh", torch.tanh, kernels.TANH, 0.0, 0.0),
    ("gelu", F.gelu, kernels.GELU, 0.0, 0.0),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), kernels.GELU_TANH, 0.0, 0.0),
    ("silu", F.silu, kernels.SILU, 0.0, 0.0),
    ("elu", lambda x: F.elu(x, 0.7), kernels.ELU, 0.7, 0.0),
    ("softplus", lambda x: F.softplus(x, 2.0, 15.0), kernels.SOFTPLUS, 2.0, 15.0),
    ("softplus_default", F.softplus, kernels.SOFTPLUS, 1.0, 20.0),
]

EXTREMES = np.array([[-1000.0, -100.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 100.0, 1000.0]])


def _activation(code, p1, p2):
    """The kernel pair as check_against_torch calls it."""
    def fastbp_activation(x, dout):
        out = np.empty_like(x)
        kernels.activation_forward(out, x, code, p1, p2)
        dx = np.empty_like(x)
        kernels.activation_backward(dx, dout, x, out, code, p1, p2)
        return out, [dx]
    return fastbp_activation


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 13), (128, 300)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, torch_fn, code, p1, p2", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(name, torch_fn, code, p1, p2, shape, dtype):
    x = np.random.default_rng(sum(shape)).standard_normal(shape) * 3
    check_against_torch(name, [x], torch_fn, _activation(code, p1, p2), dtype, TOLERANCE[dtype])


@pytest.mark.parametrize("name, torch_fn, code, p1, p2", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_extremes(name, torch_fn, code, p1, p2, dtype):
    with np.errstate(all="raise"):  # no overflow anywhere on the NumPy side either
        check_against_torch(f"{name} extremes", [EXTREMES], torch_fn, _activation(code, p1, p2), dtype,
                            TOLERANCE[dtype])


@pytest.mark.parametrize("name, torch_fn, code, p1, p2", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_non_finite(name, torch_fn, code, p1, p2, dtype):
    """NaN and ±inf give what torch gives, forward and backward: a NaN must stay NaN."""
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -1.5, 2.0]])
    check_against_torch(f"{name} nan/inf", [x], torch_fn, _activation(code, p1, p2), dtype, TOLERANCE[dtype])


def _scaled(kernel_output):
    """Wraps a check_against_torch function so that one of its results is
    1e-3 too large: ``kernel_output(output, grads)`` picks the array."""
    def wrap(fastbp_fn):
        def mutant(*args):
            output, grads = fastbp_fn(*args)
            kernel_output(output, grads)[...] *= 1 + 1e-3
            return output, grads
        return mutant
    return wrap


def _dense(x, W, b, dout):
    out = np.empty((x.shape[0], W.shape[0]), dtype=x.dtype)
    kernels.dense_forward(out, x, W, b)
    dx, dW, db = np.empty_like(x), np.zeros_like(W), np.zeros_like(b)
    kernels.dense_backward(dx, dW, db, dout, x, W)
    return out, [dx, dW, db]


def _softplus_off_near_zero(x, dout):
    # wrong by 0.05 where |x| < 5: 5e-5 of the largest value once ±1000 share the array
    out, grads = _activation(kernels.SOFTPLUS, 1.0, 20.0)(x, dout)
    return np.where(np.abs(x) < 5, out + 0.05, out).astype(x.dtype), grads


MUTANTS = [
    ("dense forward", _scaled(lambda out, grads: out)(_dense)),
    ("dense dW", _scaled(lambda out, grads: grads[1])(_dense)),
    ("tanh backward", _scaled(lambda out, grads: grads[0])(_activation(kernels.TANH, 0.0, 0.0))),
    ("softplus near 0", _softplus_off_near_zero),
]


@pytest.mark.parametrize("name, mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_the_comparison_rejects_a_kernel_off_by_a_little(name, mutant, dtype):
    rng = np.random.default_rng(5)
    if name.startswith("dense"):
        inputs, torch_fn = [rng.standard_normal((9, 7)), rng.standard_normal((5, 7)), rng.standard_normal(5)], F.linear
    else:
        inputs = [np.concatenate([EXTREMES, rng.standard_normal((1, 40)) * 3], axis=1)]
        torch_fn = torch.tanh if name.startswith("tanh") else F.softplus
    with pytest.raises(AssertionError, match="reaches"):
        check_against_torch(name, inputs, torch_fn, mutant, dtype, TOLERANCE[dtype])


def test_activation_in_place():
    x = np.array([[-2.0, np.nan, 3.0]])
    out = x.copy()
    kernels.activation_forward(out, out, kernels.TANH, 0.0, 0.0)
    assert np.isnan(out[0, 1]) and out[0, 0] == np.tanh(-2.0)


@pytest.mark.parametrize("code", range(kernels.activations.N_ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_backward_in_place_gives_the_numbers_of_a_separate_output(code, dtype):
    """Written over its own input, the backward computes what it writes
    elsewhere, for whole arrays and for strided views."""
    rng = np.random.default_rng(code)
    x = np.concatenate([rng.standard_normal((37, 19)) * 3, np.resize(EXTREMES, (1, 19)), [[np.nan] * 19]]).astype(dtype)
    out, dout = np.empty_like(x), rng.standard_normal(x.shape).astype(dtype)
    p1, p2 = (1.5, 20.0) if code == kernels.SOFTPLUS else (0.1, 0.0)
    kernels.activation_forward(out, x, code, p1, p2)
    expected = np.empty_like(x)
    kernels.activation_backward(expected, dout, x, out, code, p1, p2)
    got = dout.copy()
    kernels.activation_backward(got, got, x, out, code, p1, p2)
    np.testing.assert_array_equal(got, expected)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype)
    wide[:, ::2] = dout
    kernels.activation_backward(wide[:, ::2], wide[:, ::2], x, out, code, p1, p2)
    np.testing.assert_array_equal(wide[:, ::2], expected)


def _labels(batch, n_classes, seed):
    return np.random.default_rng(seed).integers(0, n_classes, size=batch)


# name, torch function of (pred, target, reduction), code, param
POINTWISE = [
    ("mse", lambda p, t, r: F.mse_loss(p, t, reduction=r), kernels.MSE, 0.0),
    ("l1", lambda p, t, r: F.l1_loss(p, t, reduction=r), kernels.L1, 0.0),
    ("huber", lambda p, t, r: F.huber_loss(p, t, reduction=r, delta=0.8), kernels.HUBER, 0.8),
    ("bce_with_logits", lambda p, t, r: F.binary_cross_entropy_with_logits(p, t, reduction=r),
     kernels.BCE_WITH_LOGITS, 0.0),
    ("poisson_nll", lambda p, t, r: F.poisson_nll_loss(p, t, log_input=True, full=False, reduction=r),
     kernels.POISSON_NLL, 0.0),
]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (256, 10)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name, torch_fn, code, param", POINTWISE, ids=[p[0] for p in POINTWISE])
def test_pointwise_loss(name, torch_fn, code, param, shape, reduction, dtype):
    rng = np.random.default_rng(shape[0])
    pred = rng.standard_normal(shape) * 2
    if code == kernels.BCE_WITH_LOGITS:
        target = rng.uniform(size=shape)
        pred.reshape(-1)[:2] = [1000.0, -1000.0][:pred.size]  # extreme logits stay finite
    elif code == kernels.POISSON_NLL:
        target = rng.poisson(np.exp(pred)).astype(np.float64)  # counts, zeros among them
    else:
        target = pred + rng.standard_normal(shape)
        target.reshape(-1)[:1] = pred.reshape(-1)[:1]  # a zero residual: L1's subgradient 0

    def fastbp_loss(pred, target, dout):
        dpred = np.empty_like(pred)
        value = kernels.pointwise_loss(dpred, pred, target, code, param, reduction == "mean")
        return value, [dpred * dout]  # the upstream gradient of a scalar is a scalar

    check_against_torch(f"{name} loss", [pred, target], lambda p, t: torch_fn(p, t, reduction),
                        fastbp_loss, dtype, TOLERANCE[dtype], constant=(1,))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (9, 5), (300, 10)], ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy(shape, reduction, label_smoothing, dtype):
    rng = np.random.default_rng(shape[0] + shape[1])
    logits = rng.standard_normal(shape) * 3
    logits.reshape(-1)[:3] = [1e4, -1e4, 5e3][:logits.size]  # softmax must not overflow
    labels = _labels(shape[0], shape[1], seed=shape[0])

    def fastbp_cross_entropy(logits, labels, dout):
        dlogits = np.empty_like(logits)
        value = kernels.cross_entropy_loss(dlogits, logits, labels, label_smoothing, reduction == "mean")
        return value, [dlogits * dout]

    check_against_torch(
        "cross_entropy loss", [logits, labels],
        lambda x, y: F.cross_entropy(x, y, reduction=reduction, label_smoothing=label_smoothing),
        fastbp_cross_entropy, dtype, TOLERANCE[dtype])


# name, torch optimizer factory, fastbp kernel call (params, grads, state, step)
def _sgd(params, grads, state, step, lr, momentum, dampening, weight_decay, nesterov):
    kernels.sgd_step(params, grads, state[0], lr, momentum, dampening, weight_decay, nesterov, step)


def _adam(params, grads, state, step, lr, betas, eps, weight_decay, amsgrad, decoupled):
    kernels.adam_step(params, grads, state[0], state[1], state[2], lr, betas[0], betas[1], eps,
                      weight_decay, amsgrad, decoupled, step)


def _rmsprop(params, grads, state, step, lr, alpha, eps, weight_decay, momentum, centered):
    kernels.rmsprop_step(params, grads, state[0], state[1], state[2], lr, alpha, eps, weight_decay,
                         momentum, centered)


OPTIMIZERS = [
    ("sgd", torch.optim.SGD, _sgd, dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)),
    ("sgd_momentum", torch.optim.SGD, _sgd,
     dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False)),
    ("sgd_nesterov", torch.optim.SGD, _sgd,
     dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True)),
    ("adam", torch.optim.Adam, _adam,
     dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False)),
    ("adam_l2_amsgrad", torch.optim.Adam, _adam,
     dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("adamw", torch.optim.AdamW, _adam,
     dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, amsgrad=False)),
    ("adamw_amsgrad", torch.optim.AdamW, _adam,
     dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, amsgrad=True)),
    ("rmsprop", torch.optim.RMSprop, _rmsprop,
     dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)),
    ("rmsprop_centered_momentum", torch.optim.RMSprop, _rmsprop,
     dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.8, centered=True)),
]


@pytest.mark.parametrize("size", [1, 7, 1000])
@pytest.mark.parametrize("name, torch_class, kernel, hyper", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_kernel(name, torch_class, kernel, hyper, size, dtype):
    rng = np.random.default_rng(size)
    start = rng.standard_normal(size)
    gradients = rng.standard_normal((20, size)) * np.logspace(-3, 1, 20)[:, None]
    reference = torch.tensor(start, requires_grad=True)
    optimizer = torch_class([reference], **hyper)
    params = start.astype(dtype)
    state = np.zeros((3, size), dtype=dtype)
    extra = {"decoupled": torch_class is torch.optim.AdamW} if kernel is _adam else {}
    for step, grad in enumerate(gradients, start=1):
        reference.grad = torch.tensor(grad)
        optimizer.step()
        kernel(params, grad.astype(dtype), state, step, **hyper, **extra)
    assert_close(f"{name} optimizer", dtype, params, reference.detach().numpy(), TOLERANCE[dtype])


def test_optimizer_step_dispatch_matches_direct_kernels():
    rng = np.random.default_rng(3)
    grads = rng.standard_normal(11)
    for code, hyper, call in [
        (kernels.SGD, [0.1, 0.9, 0.0, 0.01, 1.0],
         lambda p, s: kernels.sgd_step(p, grads, s[0], 0.1, 0.9, 0.0, 0.01, True, 2)),
        (kernels.ADAM, [0.01, 0.9, 0.99, 1e-8, 0.1, 1.0, 1.0],
         lambda p, s: kernels.adam_step(p, grads, s[0], s[1], s[2], 0.01, 0.9, 0.99, 1e-8, 0.1, True, True, 2)),
        (kernels.RMSPROP, [0.01, 0.9, 1e-8, 0.0, 0.5, 1.0],
         lambda p, s: kernels.rmsprop_step(p, grads, s[0], s[1], s[2], 0.01, 0.9, 1e-8, 0.0, 0.5, True)),
    ]:
        params, state = rng.standard_normal(11), np.abs(rng.standard_normal((3, 11)))
        p1, s1, p2, s2 = params.copy(), state.copy(), params.copy(), state.copy()
        kernels.optimizer_step(code, p1, grads, s1, np.array(hyper), 2)
        call(p2, s2)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("pieces", [[(0, 4)], [(3, 4), (2, 3), (1, 2), (0, 1)], [(2, 4), (0, 2)], [(1, 4), (0, 1)]])
def test_network_backward_layers_in_pieces_is_the_whole_backward(pieces):
    import fastbp

    model = fastbp.MLP([5, 8, 9, 7, 3], activation="tanh", dtype="float64", seed=0)
    model._ensure_capacity(6)
    x = np.random.default_rng(0).normal(size=(6, 5))
    kernels.network_forward(model._z, model._a, x, model._params, model._layers, model._activation_params)
    dout = np.random.default_rng(1).normal(size=(6, 3))
    results = []
    for run in ("whole", "pieces"):
        grads, scratch = np.full_like(model._grads, np.nan), np.zeros_like(model._scratch)
        scratch[0, :dout.size] = dout.ravel()
        arguments = (grads, scratch, x, model._params, model._layers, model._activation_params, model._z, model._a)
        if run == "whole":
            kernels.network_backward(*arguments, False, False)
        for first, end in pieces if run == "pieces" else ():
            kernels.network_backward_layers(*arguments, first, end)
        results.append(grads)
    np.testing.assert_array_equal(results[1], results[0])
