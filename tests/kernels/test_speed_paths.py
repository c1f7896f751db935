"""The fast paths of the fused training step compute what the plain paths compute."""
import numpy as np
import pytest

import fastbp
import kernels
from kernels.config import jit
from kernels.layers import DENSE, layer_table
from kernels.network import buffer_sizes
from kernels.views import borrowed, matrix_view


@jit
def _view(flat, start, rows, cols):
    return matrix_view(flat, start, rows, cols)


def test_matrix_view_matches_reshape_and_shares_memory():
    flat = np.arange(20, dtype=np.float32)
    view = _view(flat, 3, 4, 2)
    np.testing.assert_array_equal(view, flat[3:11].reshape(4, 2))
    view[1, 0] = -1.0
    assert flat[5] == -1.0
    assert _view(flat, 20, 0, 5).shape == (0, 5)


@pytest.mark.parametrize("start, rows, cols", [(15, 2, 3), (-1, 1, 1), (0, -1, 2)])
def test_matrix_view_refuses_what_does_not_fit(start, rows, cols):
    with pytest.raises(IndexError, match="does not fit"):
        _view(np.zeros(20), start, rows, cols)


@jit
def _borrowed_sum(array):
    return borrowed(array).sum()


def test_borrowed_reads_the_same_data():
    array = np.arange(6.0).reshape(2, 3)
    assert _borrowed_sum(array) == 15.0


@pytest.mark.parametrize("activation", [kernels.IDENTITY, kernels.RELU, kernels.TANH, kernels.SOFTPLUS])
@pytest.mark.parametrize("batch, n_in, n_out", [(1, 1, 1), (3, 2, 5), (7, 8, 9), (33, 17, 5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dense_layer_in_the_network_matches_the_products_bit_for_bit(activation, batch, n_in, n_out, bias, dtype):
    """A dense layer in the network's loops (plain loops below SMALL_GEMM,
    the products above, written or added gradients) gives exactly the
    numbers of dense_* (the products) followed by activation_*."""
    rng = np.random.default_rng(batch * 100 + n_in)
    x, W, dout = (rng.standard_normal(shape).astype(dtype) for shape in
                  [(batch, n_in), (n_out, n_in), (batch, n_out)])
    b = rng.standard_normal(n_out).astype(dtype) if bias else np.empty(0, dtype)
    p1, p2 = (1.0, 20.0) if activation == kernels.SOFTPLUS else (0.0, 0.0)
    layers = layer_table([(DENSE, n_in, n_out, activation, bias)])
    layer_params = np.array([[p1, p2]])
    params = np.concatenate([W.ravel(), b]).astype(dtype)

    z_ref, a_ref = np.empty((batch, n_out), dtype), np.empty((batch, n_out), dtype)
    kernels.dense_forward(z_ref, x, W, b)
    kernels.activation_forward(a_ref, z_ref, activation, p1, p2)
    z, a = np.empty(batch * n_out, dtype), np.empty(batch * n_out, dtype)
    kernels.network_forward(z, a, x, params, layers, layer_params)
    np.testing.assert_array_equal(z.reshape(batch, n_out), z_ref)
    np.testing.assert_array_equal(a.reshape(batch, n_out), a_ref)

    delta_ref = np.empty_like(dout)
    kernels.activation_backward(delta_ref, dout, z_ref, a_ref, activation, p1, p2)
    for accumulate, start in ((True, 1.0), (False, 0.0)):
        dx_ref, dW_ref, db_ref = np.empty_like(x), np.full_like(W, start), np.full_like(b, start)
        kernels.dense_backward(dx_ref, dW_ref, db_ref, delta_ref, x, W)
        scratch = np.empty((2, batch * max(n_in, n_out)), dtype)
        scratch[0, :dout.size] = dout.ravel()
        # what a written gradient held before must not matter
        grads = np.full_like(params, 1.0 if accumulate else np.nan)
        assert kernels.network_backward(grads, scratch, x, params, layers, layer_params, z, a, True, accumulate)
        np.testing.assert_array_equal(scratch[1, :x.size].reshape(x.shape), dx_ref)
        np.testing.assert_array_equal(grads[:W.size].reshape(W.shape), dW_ref)
        np.testing.assert_array_equal(grads[W.size:], db_ref)


def _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype, epochs=2, sizes=(12, 16, 9, 4)):
    """Train a fresh model with each minibatch split into ``chunks`` parts."""
    monkeypatch.setattr(kernels, "data_parallel_chunks", lambda n_params, batch_size, n_threads: chunks)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((203, sizes[0]))
    y = rng.integers(0, 4, 203) if loss == "cross_entropy" else rng.standard_normal((203, 4))
    model = fastbp.MLP(list(sizes), activation="tanh", dtype=dtype, seed=3)
    optimizer = (fastbp.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3) if optimizer == "sgd"
                 else fastbp.Adam(model, lr=1e-2, amsgrad=True))
    trainer = fastbp.Trainer(model, fastbp.losses.as_loss(loss), optimizer, max_grad_norm=max_grad_norm)
    history = trainer.fit(X, y, epochs=epochs, batch_size=40, seed=1)
    return np.array(history.loss), model._params.copy(), model._grads.copy()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("optimizer, max_grad_norm", [("sgd", None), ("adam", 0.5)])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_data_parallel_epochs_match_serial_ones_up_to_rounding(monkeypatch, loss, optimizer, max_grad_norm,
                                                               dtype, rtol):
    serial = _fit(monkeypatch, 1, loss, optimizer, max_grad_norm, dtype)
    for chunks in (2, 3):
        split = _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype)
        for got, expected in zip(split, serial):
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
        # the same split gives the same numbers, bit for bit
        for got, again in zip(split, _fit(monkeypatch, chunks, loss, optimizer, max_grad_norm, dtype)):
            np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_data_parallel_epochs_of_models_whose_update_is_split_between_threads(monkeypatch, optimizer):
    """From PARALLEL_UPDATE parameters the parts' gradients are summed and
    the update taken on several threads."""
    sizes = (512, 256, 4)
    assert 512 * 256 >= kernels.config.PARALLEL_UPDATE
    serial = _fit(monkeypatch, 1, "cross_entropy", optimizer, None, "float64", epochs=1, sizes=sizes)
    split = _fit(monkeypatch, 2, "cross_entropy", optimizer, None, "float64", epochs=1, sizes=sizes)
    for got, expected in zip(split, serial):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_parts_add_in_one_order_on_any_thread_count(dtype):
    from kernels.data_parallel import add_rows, add_rows_parallel
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((3, 1001)) * 10.0 ** rng.integers(-8, 8, (3, 1001))).astype(dtype)
    start = rng.standard_normal(1001).astype(dtype)
    expected = start.copy()
    add_rows(expected, rows)
    np.testing.assert_array_equal(expected, ((start + rows[0]) + rows[1]) + rows[2])
    for parts in (2, 3, 7):
        total = start.copy()
        add_rows_parallel(total, rows, parts)
        np.testing.assert_array_equal(total, expected)


def test_data_parallel_chunks_split_only_what_is_worth_it():
    assert kernels.data_parallel_chunks(10_000, 1024, 1) == 1
    assert kernels.data_parallel_chunks(10_000, 1, 2) == 1
    assert kernels.data_parallel_chunks(10_000, 64, 2) == 1
    assert kernels.data_parallel_chunks(10_000, 1024, 2) == 2
    assert kernels.data_parallel_chunks(1_000_000, 1024, 2) == 1


def _reference_epoch(params, grads, code, hyper, states, X, targets, labels, batch_size, max_grad_norm, layers,
                     activation_params, loss_code, loss_param, z, a, scratch):
    """train_epoch's steps taken one call at a time through the general path
    (views, BLAS-or-loops dense kernels), as the fused epoch took them before
    it had a path of its own for small networks."""
    from kernels import step as stages
    n, n_out, step = X.shape[0], layers[-1, 1], 0
    batch_x, batch_targets = np.empty(batch_size * X.shape[1], X.dtype), np.empty(batch_size * n_out, X.dtype)
    batch_labels, data = np.empty(batch_size, np.int64), kernels.Data(X, targets, labels, np.arange(n))
    network, loss = kernels.Network(params, grads, layers, activation_params), kernels.Loss(loss_code, loss_param, True)
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        xb, tb, lb, wb = stages.gather_batch(batch_x, batch_targets, batch_labels, np.empty(0), data, start, rows)
        scale = kernels.losses.mean_scale(loss_code, rows, n_out, True)
        stages.batch_gradients(grads, z, a, scratch, xb, tb, lb, wb, network, loss, scale, (step, 0))
        if max_grad_norm > 0.0:
            kernels.clip_grad_norm(grads, max_grad_norm)
        step += 1
        kernels.optimizer_step(code, params, grads, states, hyper, step)


_OPTIMIZERS = {
    "sgd": (kernels.SGD, [0.1, 0.0, 0.0, 0.0, 0.0]),
    "sgd_nesterov": (kernels.SGD, [0.1, 0.9, 0.0, 1e-2, 1.0]),
    "sgd_dampened": (kernels.SGD, [0.1, 0.8, 0.3, 0.0, 0.0]),
    "adam_amsgrad": (kernels.ADAM, [1e-2, 0.9, 0.999, 1e-8, 1e-2, 1.0, 0.0]),
    "adamw": (kernels.ADAM, [1e-2, 0.8, 0.99, 1e-6, 1e-1, 0.0, 1.0]),
    "rmsprop_centered": (kernels.RMSPROP, [1e-2, 0.9, 1e-8, 1e-2, 0.5, 1.0]),
}
_ACTIVATIONS = [(kernels.RELU, 0.0, 0.0), (kernels.TANH, 0.0, 0.0), (kernels.LEAKY_RELU, 0.1, 0.0),
                (kernels.SIGMOID, 0.0, 0.0), (kernels.GELU, 0.0, 0.0), (kernels.GELU_TANH, 0.0, 0.0),
                (kernels.SILU, 0.0, 0.0), (kernels.ELU, 1.0, 0.0), (kernels.SOFTPLUS, 2.0, 5.0)]


@pytest.mark.parametrize("sizes", [(1, 1), (3, 2), (2, 5, 3), (4, 3, 2, 3)])
@pytest.mark.parametrize("loss_code", [kernels.MSE, kernels.L1, kernels.HUBER, kernels.CROSS_ENTROPY,
                                       kernels.BCE_WITH_LOGITS])
@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_network_epochs_match_the_general_path_bit_for_bit(sizes, loss_code, optimizer, dtype):
    """A network whose every layer runs as plain loops trains on offsets into
    the flat buffers; its parameters, state and gradients after an epoch are
    those of the general path, for full and ragged last batches."""
    rng = np.random.default_rng(len(sizes) * 100 + loss_code)
    n_layers, n = len(sizes) - 1, 11
    rows, scalars = [], []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        code, p1, p2 = _ACTIVATIONS[(i + loss_code) % len(_ACTIVATIONS)] if i < n_layers - 1 else (0, 0.0, 0.0)
        # the last layer has a bias, an inner one of two-layer networks none
        rows.append((DENSE, n_in, n_out, code, i != 0 or n_layers == 1))
        scalars.append([p1, p2])
    layers = layer_table(rows)
    activation_params = np.array(scalars, np.float64)
    offset, units, _ = buffer_sizes(layers)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], n) if loss_code == kernels.CROSS_ENTROPY else np.empty(0, np.int64)
    targets = (np.empty((0, 0), dtype) if loss_code == kernels.CROSS_ENTROPY else
               rng.random((n, sizes[-1])).astype(dtype))
    loss_param = 0.1 if loss_code == kernels.CROSS_ENTROPY else 0.5
    code, hyper = _OPTIMIZERS[optimizer]
    hyper = np.array(hyper)
    initial = rng.standard_normal(offset).astype(dtype)
    for batch_size, max_grad_norm in [(1, 0.0), (4, 0.3), (11, 0.0)]:
        results = []
        # the fused epoch's small steps, the fused epoch told to take the
        # general path (False at run time, None at compile time), and the
        # general path one call at a time
        for small_steps in (True, False, None, "reference"):
            params, grads = initial.copy(), np.zeros(offset, dtype)
            states = np.zeros((3, offset), dtype)
            z, a = np.empty(batch_size * units, dtype), np.empty(batch_size * units, dtype)
            scratch = np.empty((2, batch_size * max(sizes)), dtype)
            if small_steps != "reference":
                kernels.train_epoch(
                    kernels.Network(params, grads, layers, activation_params), kernels.Optimizer(code, hyper, states),
                    kernels.Loss(loss_code, loss_param, True), kernels.Data(X, targets, labels, np.arange(n)),
                    kernels.Work(np.empty(batch_size * sizes[0], dtype), np.empty(batch_size * sizes[-1], dtype),
                                 np.empty(batch_size, np.int64), z, a, scratch),
                    0, 0.0, batch_size, max_grad_norm, None, True, small_steps)
            else:
                _reference_epoch(params, grads, code, hyper, states, X, targets, labels, batch_size,
                                 max_grad_norm, layers, activation_params, loss_code, loss_param, z, a, scratch)
            results.append([params, grads, *states])
        for other in results[1:]:
            for fused, general in zip(results[0], other):
                np.testing.assert_array_equal(fused, general)
        if loss_code != kernels.CROSS_ENTROPY or sizes[-1] > 1:  # one class has no gradient
            assert not np.array_equal(results[0][0], initial)


def test_passes_are_split_from_many_parameters_or_threaded_products():
    from kernels.config import PARALLEL_GEMM, PARALLEL_UPDATE, TILED, split_passes
    if not TILED:
        # the products run on BLAS's threads: no second pool beside them
        assert not any(split_passes(n, batch) for n in (1000, PARALLEL_UPDATE, 1 << 24) for batch in (1, 64, 4096))
        return
    assert split_passes(PARALLEL_UPDATE, 1) and not split_passes(PARALLEL_UPDATE - 1, 1)
    # 784-128-10 at batch 64: its weight-gradient products run on both threads
    assert 101770 < PARALLEL_UPDATE and 128 * 784 * 64 >= PARALLEL_GEMM and split_passes(101770, 64)
    assert not split_passes(1000, PARALLEL_GEMM // 1000 - 1)


# big enough for the finite check and the update to be split between threads
# (kernels.config.split_passes), by their parameters or by their threaded
# products
@pytest.mark.parametrize("sizes", [[300, 420, 20], [784, 60, 10]])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_split_passes_and_threaded_products_train_what_one_thread_trains_bit_for_bit(optimizer, sizes):
    import numba

    from kernels.config import TILED, split_passes
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], 256)
    X[200] = np.finfo(np.float32).max  # a batch that overflows: the run stops at the same step
    params = {}
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            model = fastbp.MLP(sizes, seed=0)
            assert split_passes(model.n_params, 25) == TILED
            opt = fastbp.SGD(model, lr=0.01, momentum=0.9) if optimizer == "sgd" else fastbp.Adam(model)
            trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), opt)
            with pytest.raises(FloatingPointError, match="batch 9 of 11"):
                trainer.fit(X, y, epochs=1, batch_size=25, shuffle=False)
            params[threads] = np.concatenate([p.ravel() for W, b in model.params for p in (W, b)])
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(params[1], params[2])


@jit
def _power_correction(beta, step):
    return 1.0 - beta ** step


def test_adam_bias_correction_is_the_power_it_skips():
    """Skipped or computed, the bias correction is 1 - beta**step exactly."""
    from kernels.optimizers import bias_correction
    for beta in (0.0, 1e-300, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0 - 2.0 ** -40):
        for step in [1, 2, 3, 10, 100] + [int(s) for s in np.geomspace(10, 1e12, 300)]:
            assert bias_correction(beta, step) == _power_correction(beta, step), (beta, step)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_a_batch_of_consecutive_rows_is_read_in_place(loss):
    from kernels.step import gather_batch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    targets = rng.standard_normal((20, 2)) if loss == "mse" else np.empty((0, 0))
    labels = rng.integers(0, 2, 20) if loss == "cross_entropy" else np.empty(0, np.int64)
    weights = rng.random(20)
    buffers = (np.zeros(8 * 3), np.zeros(8 * 2 if loss == "mse" else 0), np.zeros(8 if labels.size else 0, np.int64),
               np.zeros(8))
    for order in (np.arange(20), np.arange(20)[::-1].copy(), np.array([4, 5, 6, 8, 9, 10, 11, 12, 13, 14]),
                  np.array([9, 9, 9])):
        for start, rows in ((0, 3), (2, 1), (len(order) - 3, 3)):
            xb, tb, lb, wb = gather_batch(*buffers, kernels.Data(X, targets, labels, order, weights), start, rows)
            picked = order[start:start + rows]
            assert np.shares_memory(xb, X) == bool(np.all(np.diff(picked) == 1))
            np.testing.assert_array_equal(xb, X[picked])
            np.testing.assert_array_equal(tb, targets[picked] if targets.size else np.empty((0, 0)))
            np.testing.assert_array_equal(lb, labels[picked] if labels.size else np.empty(0))
            np.testing.assert_array_equal(wb, weights[picked])


def test_fit_runs_the_epoch_compiled_without_argument_checks(monkeypatch):
    """fit has checked its data and built every buffer, so the epoch it runs
    leaves the kernel's argument checks out (check_arguments=None); called
    directly, the kernel keeps them (tests/kernels/test_kernel_arguments.py)."""
    seen = []
    original = kernels.train_epoch

    def recording(*args):
        seen.append(args[-1])
        return original(*args)

    monkeypatch.setattr(kernels, "train_epoch", recording)
    model = fastbp.MLP([4, 8, 3], seed=0)
    X = np.random.default_rng(0).standard_normal((32, 4))
    fastbp.Trainer(model, "cross_entropy", fastbp.SGD(model, lr=0.1)).fit(X, np.arange(32) % 3, batch_size=8)
    assert seen == [None]
