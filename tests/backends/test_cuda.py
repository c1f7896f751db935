"""The CUDA twins in kernels/cuda and training on device="cuda", against the
CPU kernels and torch, elementwise within tests.conftest.TOLERANCE.

On a machine with a GPU these tests run on it. Without one they run under
Numba's CUDA simulator, which must be switched on (NUMBA_ENABLE_CUDASIM=1)
before numba.cuda is first imported, and numba.cuda is imported once per
process: so ``test_under_simulator`` runs this file again in a subprocess
with the variable set, and the device tests of this process are skipped.
Under the simulator every thread is a Python thread: sizes stay tiny, and
still do not divide the tile (kernels.cuda.config.TILE, 4 there).
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import kernels
from fastbp.activations import NAMES, Activation
from tests import background
from tests.conftest import TOLERANCE, assert_close, check_against_torch

pytestmark = pytest.mark.gpu

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _where():
    """"here" when the device tests run in this process, "subprocess" when
    only the simulator can run them, else the reason they cannot run."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'fastbp[cuda]'), so there is no GPU and no simulator"
    if SIMULATED:
        return "here"
    from numba import cuda

    return "here" if cuda.is_available() else "subprocess"


WHERE = _where()
on_device = pytest.mark.skipif(
    WHERE != "here",
    reason="no GPU: run under the CUDA simulator in a subprocess by test_under_simulator"
    if WHERE == "subprocess" else WHERE)


def simulator_job(test_file):
    """The key of the background job that runs the tests of ``test_file``
    again under the CUDA simulator, declared where this process cannot run
    them on a device."""
    key = f"simulator:{pathlib.Path(test_file).name}"
    if WHERE == "subprocess":
        background.declare(key, [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                 str(pathlib.Path(test_file))], dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), ROOT,
                           timeout=1800)
    return key


def run_under_simulator(key):
    if WHERE != "subprocess":
        pytest.skip("the device tests run in this process" if WHERE == "here" else WHERE)
    result = background.result(key)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


SIMULATOR_JOB = simulator_job(__file__)


@background.mark(SIMULATOR_JOB)
def test_under_simulator():
    run_under_simulator(SIMULATOR_JOB)


def device(*arrays):
    from numba import cuda

    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def host(array):
    return array.copy_to_host()


ACTIVATIONS = [Activation(name) for name in NAMES] + [Activation("gelu", approximate="tanh"),
                                                       Activation("softplus", beta=2.0, threshold=1.0)]
# (batch, n_in, n_out): ones, sizes that do not divide the tile, batch 1, width 1
DENSE_SHAPES = [(1, 1, 1), (5, 7, 3), (1, 9, 1), (6, 1, 5)]


@on_device
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: repr(a))
def test_activation(activation, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((3, 5)) * 3, [[0.0, -1e-3, 25.0, -40.0, 1.0]]]).astype(dtype)
    code, p1, p2 = activation.code, activation.p1, activation.p2
    out, dx = np.empty_like(x), np.empty_like(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    kernels.activation_forward(out, x, code, p1, p2)
    kernels.activation_backward(dx, dout, x, out, code, p1, p2)
    device_out, device_x, device_dout = device(np.empty_like(x), x, dout)
    device_dx = device(np.empty_like(x))[0]
    device_kernels.activation_forward(device_out, device_x, code, p1, p2)
    device_kernels.activation_backward(device_dx, device_dout, device_x, device_out, code, p1, p2)
    assert_close("cuda activation forward", dtype, host(device_out), out, TOLERANCE[dtype])
    assert_close("cuda activation backward", dtype, host(device_dx), dx, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_against_torch(shape, bias, dtype):
    import kernels.cuda as device_kernels

    torch = pytest.importorskip("torch")
    batch, n_in, n_out = shape
    rng = np.random.default_rng(batch * 100 + n_in)
    x, W, b = rng.standard_normal((batch, n_in)), rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
    dW_before, db_before = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)

    def fastbp_dense(x, W, *rest):
        dout = rest[-1]
        device_x, device_W, device_dout, device_dW, device_db = device(x, W, dout, dW_before.astype(x.dtype),
                                                                       db_before.astype(x.dtype))
        device_b = device(rest[0])[0] if bias else None
        device_out, device_dx = device(np.full((batch, n_out), np.nan, x.dtype), np.full_like(x, np.nan))
        device_kernels.dense_forward(device_out, device_x, device_W, device_b)
        device_kernels.dense_backward(device_dx, device_dW, device_db if bias else None, device_dout,
                                      device_x, device_W)
        grads = [host(device_dx), host(device_dW) - dW_before.astype(x.dtype)]
        if bias:
            grads.append(host(device_db) - db_before.astype(x.dtype))
        return host(device_out), grads

    inputs = [x, W, b] if bias else [x, W]
    check_against_torch("cuda dense", inputs, lambda x, W, *b: torch.nn.functional.linear(x, W, *b),
                        fastbp_dense, dtype, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: repr(a))
def test_dense_with_activation_fused_matches_cpu(activation, dtype):
    """The fused layer against the CPU's dense then activation, both ways."""
    import kernels.cuda as device_kernels

    batch, n_in, n_out = 3, 5, 2
    rng = np.random.default_rng(3)
    x, W, b, dout = (rng.standard_normal(shape).astype(dtype) for shape in
                     [(batch, n_in), (n_out, n_in), (n_out,), (batch, n_out)])
    code, p1, p2 = activation.code, activation.p1, activation.p2
    z, out = np.empty((batch, n_out), dtype), np.empty((batch, n_out), dtype)
    kernels.dense_forward(z, x, W, b)
    kernels.activation_forward(out, z, code, p1, p2)
    delta, dx = np.empty_like(z), np.empty_like(x)
    dW, db = np.zeros_like(W), np.zeros_like(b)
    kernels.activation_backward(delta, dout, z, out, code, p1, p2)
    kernels.dense_backward(dx, dW, db, delta, x, W)

    device_x, device_W, device_b, device_dout = device(x, W, b, dout)
    device_z, device_out, device_dx, device_dW, device_db = device(
        np.empty_like(z), np.empty_like(z), np.empty_like(x), np.zeros_like(W), np.zeros_like(b))
    device_kernels.dense_forward(device_out, device_x, device_W, device_b, device_z, code, p1, p2)
    device_kernels.dense_backward(device_dx, device_dW, device_db, device_dout, device_x, device_W,
                                  device_z, device_out, code, p1, p2)
    for name, ours, expected in [("z", device_z, z), ("out", device_out, out), ("dx", device_dx, dx),
                                 ("dW", device_dW, dW), ("db", device_db, db)]:
        assert_close(f"cuda fused dense {name}", dtype, host(ours), expected, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("rows", [1, 3, 21])
def test_column_sums(rows, dtype):
    import kernels.cuda as device_kernels

    matrix = np.random.default_rng(rows).standard_normal((rows, 5)).astype(dtype)
    before = np.arange(5, dtype=dtype)
    device_sums, device_matrix = device(before, matrix)
    device_kernels.column_sums(device_sums, device_matrix)
    assert_close("cuda column sums", dtype, host(device_sums), before + matrix.sum(axis=0, dtype=np.float64),
                 TOLERANCE[dtype])


LOSSES = [(kernels.MSE, 0.0), (kernels.L1, 0.0), (kernels.HUBER, 0.7), (kernels.BCE_WITH_LOGITS, 0.0),
          (kernels.POISSON_NLL, 0.0), (kernels.CROSS_ENTROPY, 0.0), (kernels.CROSS_ENTROPY, 0.2)]


@on_device
@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("code, param", LOSSES, ids=["mse", "l1", "huber", "bce", "poisson", "ce", "ce_smooth"])
@pytest.mark.parametrize("shape", [(1, 1), (11, 3)], ids=["1x1", "11x3"])
def test_loss(code, param, mean, shape, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(5)
    pred = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.uniform(size=shape).astype(dtype) if code != kernels.CROSS_ENTROPY else np.empty((0, 0), dtype)
    labels = rng.integers(0, shape[1], shape[0]) if code == kernels.CROSS_ENTROPY else np.empty(0, np.int64)
    dpred = np.empty_like(pred)
    expected = kernels.loss_value_and_grad(dpred, pred, target, labels, code, param, mean)
    device_dpred, device_pred, device_target, device_labels = device(np.empty_like(pred), pred, target, labels)
    value = device_kernels.loss_value_and_grad(device_dpred, device_pred, device_target, device_labels,
                                               code, param, mean)
    assert_close("cuda loss value", dtype, value, expected, TOLERANCE[dtype])
    assert_close("cuda loss gradient", dtype, host(device_dpred), dpred, TOLERANCE[dtype])
    # added into a device scalar, times a weight, as the training epoch sums it
    device_sum = device(np.array([1.5]))[0]
    device_kernels.loss_value_and_grad(device_dpred, device_pred, device_target, device_labels,
                                       code, param, mean, device_sum, 4.0)
    assert_close("cuda loss sum", dtype, host(device_sum)[0], 1.5 + 4.0 * expected, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("code, param", LOSSES, ids=["mse", "l1", "huber", "bce", "poisson", "ce", "ce_smooth"])
def test_weighted_loss(code, param, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(6)
    shape = (11, 3)
    pred = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.uniform(size=shape).astype(dtype) if code != kernels.CROSS_ENTROPY else np.empty((0, 0), dtype)
    labels = rng.integers(0, shape[1], shape[0]) if code == kernels.CROSS_ENTROPY else np.empty(0, np.int64)
    weights = rng.random(shape[0]) * 2
    class_weights = rng.random(3) + 0.5 if code == kernels.CROSS_ENTROPY else np.empty(0)
    dpred = np.empty_like(pred)
    scale = 0.37
    expected = kernels.weighted_loss_value_and_grad(dpred, pred, target, labels, weights, class_weights, code,
                                                    param, scale)
    device_dpred, device_pred, device_target, device_labels, device_weights, device_class_weights = device(
        np.empty_like(pred), pred, target, labels, weights, class_weights)
    value = device_kernels.loss_value_and_grad(device_dpred, device_pred, device_target, device_labels, code, param,
                                               True, weights=device_weights, scale=scale,
                                               class_weights=device_class_weights if class_weights.size else None)
    assert_close("cuda weighted loss value", dtype, value, expected, TOLERANCE[dtype])
    assert_close("cuda weighted loss gradient", dtype, host(device_dpred), dpred, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_weighted_training_follows_the_cpu(loss):
    import fastbp

    def make(model):
        return fastbp.Adam(model, lr=0.05)

    weights = np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25, 1.5])
    options = dict(loss=fastbp.CrossEntropyLoss(weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
                   if loss == "cross_entropy" else loss, dtype="float64", sample_weight=weights)
    _assert_same_training(_fit("cuda", make, **options), _fit("cpu", make, **options), "float64")


@on_device
@pytest.mark.parametrize("shape, p", [((1, 1), 0.5), ((13, 7), 0.1), ((9, 30), 0.7)])
def test_dropout_draws_the_cpus_mask(shape, p, dtype):
    import kernels.cuda as device_kernels

    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    out, mask = np.empty_like(x), np.empty_like(x)
    kernels.dropout_forward(out, mask, x, p, 4, 12, 3, 5)
    device_out, device_mask, device_x = device(np.empty_like(x), np.empty_like(x), x)
    device_kernels.dropout_forward(device_out, device_mask, device_x, p, 4, 12, 3, 5)
    np.testing.assert_array_equal(host(device_mask), mask)
    np.testing.assert_array_equal(host(device_out), out)
    dout = np.random.default_rng(8).standard_normal(shape).astype(dtype)
    dx = np.empty_like(x)
    kernels.dropout_backward(dx, dout, mask)
    device_dx, device_dout = device(np.empty_like(x), dout)
    device_kernels.dropout_backward(device_dx, device_dout, device_mask)
    np.testing.assert_array_equal(host(device_dx), dx)


@on_device
@pytest.mark.parametrize("shape", [(1, 1), (13, 7), (9, 30)])
def test_layernorm_computes_the_cpus_numbers(shape, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(9)
    x, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    weight, bias = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    out, mean, rstd = np.empty_like(x), np.empty(shape[0]), np.empty(shape[0])
    kernels.layernorm_forward(out, mean, rstd, x, weight, bias, 1e-5)
    dx, dweight, dbias = np.empty_like(x), np.zeros_like(weight), np.zeros_like(bias)
    kernels.layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd)
    arrays = device(np.empty_like(x), np.empty(shape[0]), np.empty(shape[0]), x, weight, bias, np.empty_like(x),
                    np.zeros_like(weight), np.zeros_like(bias), dout)
    device_out, device_mean, device_rstd, device_x, device_weight, device_bias, device_dx, device_dweight, \
        device_dbias, device_dout = arrays
    device_kernels.layernorm_forward(device_out, device_mean, device_rstd, device_x, device_weight, device_bias, 1e-5)
    device_kernels.layernorm_backward(device_dx, device_dweight, device_dbias, device_dout, device_x, device_weight,
                                      device_mean, device_rstd)
    for name, ours, expected in [("out", device_out, out), ("mean", device_mean, mean), ("rstd", device_rstd, rstd),
                                 ("dx", device_dx, dx), ("dweight", device_dweight, dweight),
                                 ("dbias", device_dbias, dbias)]:
        assert_close(f"cuda layernorm {name}", dtype, host(ours), expected, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("shape", [(2, 1), (13, 7), (30, 9)])
def test_batchnorm_computes_the_cpus_numbers(shape, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(10)
    n = shape[1]
    x, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    weight, bias = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    out, mean, rstd, running_mean, running_var = np.empty_like(x), np.empty(n), np.empty(n), np.zeros(n), np.ones(n)
    kernels.batchnorm_forward(out, mean, rstd, running_mean, running_var, x, weight, bias, 1e-5, 0.1)
    dx, dweight, dbias = np.empty_like(x), np.zeros_like(weight), np.zeros_like(bias)
    kernels.batchnorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd)
    evaluated = np.empty_like(x)
    kernels.batchnorm_inference(evaluated, x, weight, bias, running_mean, running_var, 1e-5)
    (device_out, device_mean, device_rstd, device_running_mean, device_running_var, device_x, device_weight,
     device_bias, device_dx, device_dweight, device_dbias, device_dout, device_evaluated) = device(
        np.empty_like(x), np.empty(n), np.empty(n), np.zeros(n), np.ones(n), x, weight, bias, np.empty_like(x),
        np.zeros_like(weight), np.zeros_like(bias), dout, np.empty_like(x))
    device_kernels.batchnorm_forward(device_out, device_mean, device_rstd, device_running_mean, device_running_var,
                                     device_x, device_weight, device_bias, 1e-5, 0.1)
    device_kernels.batchnorm_backward(device_dx, device_dweight, device_dbias, device_dout, device_x, device_weight,
                                      device_mean, device_rstd)
    device_kernels.batchnorm_inference(device_evaluated, device_x, device_weight, device_bias, device_running_mean,
                                       device_running_var, 1e-5)
    for name, ours, expected in [("out", device_out, out), ("mean", device_mean, mean), ("rstd", device_rstd, rstd),
                                 ("running mean", device_running_mean, running_mean),
                                 ("running var", device_running_var, running_var), ("dx", device_dx, dx),
                                 ("dweight", device_dweight, dweight), ("dbias", device_dbias, dbias),
                                 ("evaluation", device_evaluated, evaluated)]:
        assert_close(f"cuda batchnorm {name}", dtype, host(ours), expected, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("batch, n_features, k, d", [(1, 1, 1, 1), (11, 3, 2, 4)])
def test_periodic_embeddings_compute_the_cpus_numbers(batch, n_features, k, d, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(12)
    x = rng.standard_normal((batch, n_features)).astype(dtype)
    frequencies = (rng.standard_normal((n_features, k)) * 0.3).astype(dtype)
    weight = rng.standard_normal((n_features, d, 2 * k)).astype(dtype)
    bias = rng.standard_normal((n_features, d)).astype(dtype)
    dout = rng.standard_normal((batch, n_features * d)).astype(dtype)
    out, z = np.empty((batch, n_features * d), dtype), np.empty((batch, n_features * d), dtype)
    kernels.periodic_forward(out, z, x, frequencies, weight, bias)
    grads = [np.zeros_like(a) for a in (x, frequencies, weight, bias)]
    kernels.periodic_backward(*grads, dout, x, frequencies, weight, z)
    device_out, device_z, device_x, device_frequencies, device_weight, device_bias, device_dout = device(
        np.empty_like(out), np.empty_like(z), x, frequencies, weight, bias, dout)
    device_kernels.periodic_forward(device_out, device_z, device_x, device_frequencies, device_weight, device_bias)
    device_grads = device(*(np.zeros_like(a) for a in (x, frequencies, weight, bias)))
    device_kernels.periodic_backward(*device_grads, device_dout, device_x, device_frequencies, device_weight,
                                     device_z)
    assert_close("cuda periodic out", dtype, host(device_out), out, TOLERANCE[dtype])
    for name, ours, expected in zip(("dx", "dfrequencies", "dweight", "dbias"), device_grads, grads):
        assert_close(f"cuda periodic {name}", dtype, host(ours), expected, TOLERANCE[dtype])


@on_device
def test_embeddings_compute_the_cpus_numbers(dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(13)
    offsets = np.array([0, 3, 4, 9])
    codes = np.stack([rng.integers(0, n, 10) for n in (3, 1, 5)], axis=1)
    table, dout = rng.standard_normal((9, 2)).astype(dtype), rng.standard_normal((10, 6)).astype(dtype)
    out, dtable = np.empty((10, 6), dtype), np.zeros((9, 2), dtype)
    kernels.embedding_forward(out, codes, table, offsets)
    kernels.embedding_backward(dtable, dout, codes, offsets)
    device_out, device_codes, device_table, device_offsets, device_dtable, device_dout = device(
        np.empty_like(out), codes, table, offsets, np.zeros_like(dtable), dout)
    device_kernels.embedding_forward(device_out, device_codes, device_table, device_offsets)
    device_kernels.embedding_backward(device_dtable, device_dout, device_codes, device_offsets)
    np.testing.assert_array_equal(host(device_out), out)
    np.testing.assert_array_equal(host(device_dtable), dtable)


OPTIMIZERS = [
    (kernels.SGD, [0.1, 0.0, 0.0, 0.0, 0.0]),
    (kernels.SGD, [0.1, 0.9, 0.1, 0.01, 0.0]),
    (kernels.SGD, [0.1, 0.9, 0.0, 0.01, 1.0]),
    (kernels.ADAM, [0.01, 0.9, 0.999, 1e-8, 0.01, 0.0, 0.0]),
    (kernels.ADAM, [0.01, 0.8, 0.99, 1e-8, 0.01, 1.0, 1.0]),
    (kernels.RMSPROP, [0.01, 0.99, 1e-8, 0.01, 0.0, 0.0]),
    (kernels.RMSPROP, [0.01, 0.9, 1e-8, 0.0, 0.5, 1.0]),
]


@on_device
@pytest.mark.parametrize("code, hyper", OPTIMIZERS,
                         ids=["sgd", "sgd_momentum", "sgd_nesterov", "adam", "adamw_amsgrad", "rmsprop",
                              "rmsprop_centered_momentum"])
@pytest.mark.parametrize("n", [1, 13])
def test_optimizer_steps(code, hyper, n, dtype):
    import kernels.cuda as device_kernels

    rng = np.random.default_rng(n)
    params = rng.standard_normal(n).astype(dtype)
    hyper = np.array(hyper)
    state = np.zeros((kernels.state_rows(code, hyper), n), dtype)
    device_params, device_state = device(params, state)
    for step in (1, 2, 3):
        grads = rng.standard_normal(n).astype(dtype)
        kernels.optimizer_step(code, params, grads, state, hyper, step)
        device_kernels.optimizer_step(code, device_params, device(grads)[0], device_state, hyper, step)
    assert_close("cuda optimizer params", dtype, host(device_params), params, TOLERANCE[dtype])
    assert_close("cuda optimizer state", dtype, host(device_state), state, TOLERANCE[dtype])


@on_device
@pytest.mark.parametrize("max_norm", [0.5, 100.0], ids=["clipped", "untouched"])
def test_clip_grad_norm(max_norm, dtype):
    import kernels.cuda as device_kernels

    grads = np.random.default_rng(7).standard_normal(19).astype(dtype)
    device_grads, device_norm = device(grads, np.zeros(1))
    norm = kernels.clip_grad_norm(grads, max_norm)
    device_kernels.clip_grad_norm(device_grads, max_norm, device_norm)
    assert_close("cuda gradient norm", dtype, host(device_norm)[0], norm, TOLERANCE[dtype])
    assert_close("cuda clipped gradients", dtype, host(device_grads), grads, TOLERANCE[dtype])


def _data(loss="mse"):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((7, 3))
    if loss == "cross_entropy":
        return X, rng.integers(0, 3, 7)
    return X, rng.uniform(size=(7, 2)) if loss == "bce_with_logits" else rng.standard_normal((7, 2))


def _fit(device, make_optimizer, loss="mse", epochs=2, dtype="float32", **fit):
    """A tiny model trained with shuffling, two batches an epoch, the second
    smaller; returns the trainer."""
    import fastbp

    X, y = _data(getattr(loss, "name", loss))
    n_out = 3 if getattr(loss, "name", loss) == "cross_entropy" else 2
    model = fastbp.MLP([3, 5, n_out], activation="tanh", dtype=dtype, seed=0, **fit.pop("layers", {})).to(device)
    trainer = fastbp.Trainer(model, loss, make_optimizer(model), **fit.pop("trainer", {}))
    trainer.fit(X, y, epochs=epochs, batch_size=4, seed=3, **fit)
    return trainer


def _optimizers():
    import fastbp

    return {
        "sgd_momentum": lambda m: fastbp.SGD(m, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
        "sgd_nesterov": lambda m: fastbp.SGD(m, lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda m: fastbp.Adam(m, lr=0.05, amsgrad=True, weight_decay=1e-3),
        "adamw": lambda m: fastbp.AdamW(m, lr=0.05),
        "rmsprop": lambda m: fastbp.RMSprop(m, lr=0.01, momentum=0.5, centered=True),
    }


def _assert_same_training(ours, expected, dtype, tolerance=None):
    tolerance = tolerance or TOLERANCE[np.dtype(dtype).type]
    assert ours.epoch == expected.epoch and ours.optimizer.step_count == expected.optimizer.step_count
    assert_close("cuda training loss", dtype, ours.history.loss, expected.history.loss, tolerance)
    assert_close("cuda validation loss", dtype, ours.history.val_loss, expected.history.val_loss, tolerance)
    assert_close("cuda trained params", dtype, ours.model._params, expected.model._params, tolerance)
    for state, expected_state in zip(ours.optimizer._state, expected.optimizer._state):
        assert_close("cuda optimizer state", dtype, state, expected_state, tolerance)


@on_device
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "sgd_nesterov", "adam", "adamw", "rmsprop"])
def test_training_follows_the_cpu(optimizer):
    make = _optimizers()[optimizer]
    _assert_same_training(_fit("cuda", make), _fit("cpu", make), "float32")


@on_device
@pytest.mark.parametrize("layers", [{"dropout": 0.3, "norm": "layer"},
                                    {"dropout": 0.2, "norm": "layer", "residual": True}])
def test_norm_dropout_and_residual_training_follows_the_cpu(layers):
    # the same masks on either device: the numbers differ by rounding alone
    import fastbp

    def make(model):
        return fastbp.Adam(model, lr=0.05)
    options = dict(loss="cross_entropy", dtype="float64", layers=layers)
    _assert_same_training(_fit("cuda", make, **options), _fit("cpu", make, **options), "float64")


@on_device
@pytest.mark.parametrize("loss", ["cross_entropy", "bce_with_logits"])
def test_training_follows_the_cpu_with_clipping_and_validation(loss):
    import fastbp

    def make(model):
        return fastbp.SGD(model, lr=0.5)

    options = dict(loss=loss, dtype="float64", trainer={"max_grad_norm": 0.1}, validation_split=0.3)
    if loss == "bce_with_logits":
        options["epochs"] = 1
    _assert_same_training(_fit("cuda", make, **options), _fit("cpu", make, **options), "float64")


@on_device
def test_checkpoint_taken_on_the_gpu_resumes_on_the_cpu(tmp_path):
    import fastbp

    make = _optimizers()["adam"]
    straight = _fit("cpu", make, epochs=3)
    trainer = _fit("cuda", make, epochs=2)
    trainer.save(tmp_path / "gpu.npz")
    resumed = fastbp.Trainer.load(tmp_path / "gpu.npz")
    assert resumed.model.device == "cpu"
    np.testing.assert_array_equal(resumed.model._params, trainer.model._params)
    for state, saved in zip(resumed.optimizer._state, trainer.optimizer._state):
        np.testing.assert_array_equal(state, saved)
    X, y = _data()
    resumed.fit(X, y, epochs=1, batch_size=4)
    _assert_same_training(resumed, straight, "float32")
    # and back: the CPU's checkpoint goes on on the GPU
    resumed.save(tmp_path / "cpu.npz")
    again = fastbp.Trainer.load(tmp_path / "cpu.npz")
    again.model.to("cuda")
    again.fit(X, y, epochs=1, batch_size=4)
    straight.fit(X, y, epochs=1, batch_size=4)
    _assert_same_training(again, straight, "float32")


@on_device
def test_a_model_on_the_gpu_predicts_scores_and_saves(tmp_path):
    import fastbp

    trainer = _fit("cuda", _optimizers()["adamw"], epochs=1)
    model = trainer.model
    X = np.random.default_rng(1).standard_normal((4, 3))
    cpu = fastbp.MLP([3, 5, 2], activation="tanh", seed=0)
    cpu._params[...] = model._params
    np.testing.assert_array_equal(model.predict(X), cpu.predict(X))
    assert np.isfinite(trainer.evaluate(X, np.zeros((4, 2)))) and np.isfinite(trainer.score(X, np.zeros((4, 2))))
    model.save(tmp_path / "model.npz")
    np.testing.assert_array_equal(fastbp.load(tmp_path / "model.npz").predict(X), cpu.predict(X))
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        assert_close("cuda model to_torch", np.float32, model.to_torch()(torch.from_numpy(X.astype(np.float32))),
                     cpu.predict(X), TOLERANCE[np.float32])
    assert model.to("cpu") is model and model.device == "cpu" and "cuda" not in repr(model)


def _poisoned_fit(device, sizes, poisoned, **fit):
    """A model trained on 24 samples in 6 batches of 4, ``poisoned`` rows
    holding the largest float32, whose products overflow in the first layer
    (its weights all above 0.5); returns the trainer and what fit raised
    (None if nothing)."""
    import fastbp

    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((24, sizes[0])), rng.integers(0, sizes[-1], 24)
    X[list(poisoned)] = np.finfo(np.float32).max
    model = fastbp.MLP(sizes, seed=0).to(device)
    W = model.params[0][0]
    W[...] = np.abs(W) + 0.5
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model, lr=0.05))
    try:
        trainer.fit(X, y, batch_size=4, **fit)
    except FloatingPointError as error:
        return trainer, str(error)
    return trainer, None


# a network that takes the fused path (every layer at most FUSED_WIDTH wide
# under the simulator, 8) and one that runs layer by layer
NETWORKS = pytest.mark.parametrize("sizes", [[3, 5, 2], [3, 9, 2]], ids=["fused", "layer_by_layer"])


@on_device
@NETWORKS
def test_a_nonfinite_step_on_the_gpu_stops_there_as_on_the_cpu(sizes):
    # row 13 spoils the fourth batch
    (gpu, gpu_error), (cpu, cpu_error) = (_poisoned_fit(device, sizes, [13], epochs=3, shuffle=False)
                                          for device in ("cuda", "cpu"))
    assert cpu_error is not None and "diverged at step 4 (batch 4 of 6 in epoch 1)" in cpu_error, cpu_error
    assert gpu_error == cpu_error
    assert gpu.optimizer.step_count == cpu.optimizer.step_count == 3 and gpu.epoch == cpu.epoch == 0
    # the parameters and state of step 3, and the offending step's gradients
    assert_close("cuda params at the last finite step", np.float32, gpu.model._params, cpu.model._params,
                 TOLERANCE[np.float32])
    for state, expected in zip(gpu.optimizer._state, cpu.optimizer._state):
        assert_close("cuda optimizer state at the last finite step", np.float32, state, expected,
                     TOLERANCE[np.float32])
    np.testing.assert_array_equal(np.isfinite(gpu.model._grads), np.isfinite(cpu.model._grads))


@on_device
@NETWORKS
def test_skip_on_the_gpu_skips_the_batches_the_cpu_skips(sizes):
    # shuffled: rows 1 and 20 spoil a batch or two of every epoch
    (gpu, gpu_error), (cpu, cpu_error) = (_poisoned_fit(device, sizes, [1, 20], epochs=3, seed=5, on_nonfinite="skip")
                                          for device in ("cuda", "cpu"))
    assert gpu_error is cpu_error is None
    assert gpu.history.skipped == cpu.history.skipped and sum(cpu.history.skipped) >= 4
    assert gpu.optimizer.step_count == cpu.optimizer.step_count == 18 - sum(cpu.history.skipped)
    assert_close("cuda loss with skipped batches", np.float32, gpu.history.loss, cpu.history.loss,
                 TOLERANCE[np.float32])
    assert_close("cuda params with skipped batches", np.float32, gpu.model._params, cpu.model._params,
                 TOLERANCE[np.float32])


@on_device
def test_a_checkpoint_in_the_middle_of_a_gpu_epoch_resumes_on_the_gpu(tmp_path):
    import fastbp

    make = _optimizers()["adam"]
    straight = _fit("cuda", make, epochs=2)
    # two steps an epoch: the checkpoint after step 3 is in the middle of epoch 2
    stopped = _fit("cuda", make, epochs=2, checkpoint_every=3, checkpoint_path=tmp_path / "ck.npz")
    _assert_same_training(stopped, straight, "float32")
    resumed = fastbp.Trainer.load(tmp_path / "ck.npz")
    assert resumed._epoch_state["position"] == 4 and resumed.optimizer.step_count == 3
    resumed.model.to("cuda")
    X, y = _data()
    resumed.fit(X, y, epochs=1, batch_size=4)
    np.testing.assert_array_equal(resumed.model._params, straight.model._params)
    assert resumed.history.loss == straight.history.loss


def test_the_old_module_name_still_imports_with_a_warning():
    code = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from fastbp.cuda import DeviceFit, as_device
import fastbp.backends.cuda as backend
assert DeviceFit is backend.DeviceFit and as_device is backend.as_device
print([str(w.message) for w in caught if w.category is DeprecationWarning])
"""
    assert _run_python(code).strip() == "['fastbp.cuda is deprecated: import fastbp.backends.cuda']"


def _run_python(code, **environment):
    """Run ``code`` in a fresh interpreter without the simulator (unless
    asked); returns its stdout, asserting it succeeded."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, **environment),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_cpu_training_never_imports_numba_cuda(tmp_path):
    code = f"""
import sys, numpy as np, fastbp
model = fastbp.MLP([3, 4, 2], seed=0)
trainer = fastbp.Trainer(model, "mse", fastbp.Adam(model))
trainer.fit(np.ones((5, 3)), np.zeros((5, 2)), epochs=2, batch_size=2, seed=0)
model.predict(np.ones((2, 3))); trainer.save({str(tmp_path / 'checkpoint.npz')!r})
fastbp.Trainer.load({str(tmp_path / 'checkpoint.npz')!r}).model.to("cpu")
print(sorted(m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda", "kernels.cuda",
                                                     "fastbp.backends.cuda")) and m != "fastbp.backends.cuda"))
"""
    assert _run_python(code).strip() == "[]"


@pytest.mark.parametrize("missing", ["numba-cuda", "gpu"])
def test_cuda_without_a_gpu_fails_in_one_sentence_and_changes_nothing(missing):
    if missing == "gpu" and WHERE == "here" and not SIMULATED:
        pytest.skip("this machine has a GPU")
    if missing == "gpu" and WHERE not in ("here", "subprocess"):
        pytest.skip(WHERE)
    hide = "sys.modules['numba_cuda'] = None" if missing == "numba-cuda" else ""
    code = f"""
import sys
{hide}
import fastbp
model = fastbp.MLP([3, 1], seed=0)
before = model._params.copy()
for attempt in (lambda: fastbp.MLP([3, 1], device="cuda"), lambda: model.to("cuda")):
    try:
        attempt()
    except RuntimeError as error:
        print(error)
assert model.device == "cpu" and (model._params == before).all()
from fastbp import cli
sys.stderr = sys.stdout
try:
    cli.main(["train", "--dataset", "iris", "--device", "cuda"])
except SystemExit as stop:
    assert stop.code == 2
"""
    messages = _run_python(code).strip().splitlines()
    assert len(messages) == 3 and messages[0] == messages[1], messages
    assert messages[2] == f"fastbp: error: --device cuda: {messages[0]}"
    expected = "numba-cuda, which is not installed" if missing == "numba-cuda" else "finds none here"
    assert expected in messages[0] and "device='cpu'" in messages[0] and messages[0].count(". ") == 0


@on_device
def test_fastbp_train_on_the_gpu_follows_the_cpu(tmp_path, capsys):
    import fastbp
    from fastbp import cli

    pytest.importorskip("sklearn.datasets")
    trained = {}
    for device in ("cuda", "cpu"):
        arguments = ["train", "--dataset", "iris", "--hidden", "4", "--epochs", "2", "--batch-size", "64",
                     "--quiet", "--device", device, "--save", tmp_path / f"{device}.npz"]
        assert cli.main([str(a) for a in arguments]) == 0
        trained[device] = fastbp.Trainer.load(tmp_path / f"{device}.npz")
    assert "on the GPU" in capsys.readouterr().out
    _assert_same_training(trained["cuda"], trained["cpu"], "float32")


@on_device
def test_a_fit_larger_than_free_device_memory_is_refused_before_copying(monkeypatch):
    import fastbp
    from numba import cuda

    context = cuda.current_context()
    free = 4000 * 8 * 2  # bytes: a little more than the data itself
    monkeypatch.setattr(type(context), "get_memory_info", lambda self: _memory_info(free))
    X, y = np.random.default_rng(0).standard_normal((4000, 8)), np.zeros(4000, dtype=np.int64)
    model = fastbp.MLP([8, 4, 2], seed=0, device="cuda", dtype="float64")
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model))
    before = model._params.copy()
    copies = []
    monkeypatch.setattr(cuda, "to_device", lambda *args, **kwargs: copies.append(args))
    with pytest.raises(MemoryError, match=r"needs [\d.,]+ MiB of device memory \(the data 0.3 MiB.*but 0.1 MiB "
                                          r"are free; use a smaller batch_size"):
        trainer.fit(X, y, epochs=1)
    assert copies == [] and trainer.epoch == 0 and (model._params == before).all()


def _memory_info(free):
    from collections import namedtuple

    return namedtuple("MemoryInfo", "free total")(free, free)


@on_device
@pytest.mark.parametrize("sizes, activations", [
    ([3, 8, 2], ["tanh", "identity"]),
    ([20, 5, 8, 1], ["relu", "gelu", "identity"]),
    ([2, 1, 1], ["sigmoid", "identity"]),
    ([4, 9, 3], ["tanh", "identity"]),  # one unit wider than the fused path takes
], ids=["8-wide", "wide-input", "width-1", "too-wide"])
@pytest.mark.parametrize("batch", [1, 4, 7])
def test_the_fused_path_matches_the_layer_by_layer_one(sizes, activations, batch, dtype):
    import fastbp
    from kernels.cuda import network
    from kernels.cuda.config import FUSED_WIDTH

    model = fastbp.MLP(sizes, activation=activations[:-1], dtype=dtype, seed=1)
    layers, params_ = model._layers, model._activation_params
    assert network.fits_fused(layers) == (max(sizes[1:]) <= FUSED_WIDTH)
    if not network.fits_fused(layers):
        return
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    dprediction = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    units = batch * model._total_units
    results = []
    for fused in (False, True):
        z, a = device(np.zeros(units, dtype), np.zeros(units, dtype))
        scratch = np.zeros((2, batch * max(sizes)), dtype)
        scratch[0, :dprediction.size] = dprediction.ravel()
        # stale gradients: the fused path writes them, the other adds to zeros
        start = np.zeros(model.n_params, dtype) if not fused else np.full(model.n_params, np.nan, dtype)
        grads, scratch, dx, params = device(start, scratch, x, model._params)
        if fused:
            tables = network.fused_tables(layers, params_)
            network.fused_network_forward(z, a, dx, params, tables)
            forward = z.copy_to_host(), a.copy_to_host()
            network.fused_network_backward(grads, scratch, dx, params, layers, z, a, tables)
        else:
            network.network_forward(z, a, dx, params, layers, params_)
            forward = z.copy_to_host(), a.copy_to_host()
            network.network_backward(grads, scratch, dx, params, layers, params_, z, a, False)
        results.append((*forward, grads.copy_to_host()))
    (z0, a0, g0), (z1, a1, g1) = results
    np.testing.assert_array_equal(z1, z0)
    np.testing.assert_array_equal(a1, a0)
    # the bias gradients are summed in row order, not by a tree over the
    # block; and in float32 d(loss)/d(z) is rounded once more
    assert_close("fused backward", dtype, g1, g0, TOLERANCE[dtype])
