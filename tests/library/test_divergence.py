"""A step whose loss or gradient goes NaN or infinite is caught at that step:
by default fit raises naming the epoch, the step and the first layer whose
gradient went non-finite, and the model and optimizer keep the last finite
step's parameters and state; with on_nonfinite="skip" the batch is left out
and counted in the history."""
import re

import numpy as np
import pytest

import fastbp
import kernels

BATCH = 8


def data(poisoned=(), dtype=np.float32):
    """96 samples of 6 features, 3 classes; ``poisoned`` rows hold the
    largest finite value, whose products overflow in the first layer."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 6)).astype(dtype)
    X[list(poisoned)] = np.finfo(dtype).max
    return X, rng.integers(0, 3, 96)


def make(optimizer, lr, dtype="float32"):
    model = fastbp.MLP([6, 16, 3], seed=0, dtype=dtype)
    opt = (fastbp.SGD(model, lr=lr, momentum=0.9) if optimizer == "sgd" else
           fastbp.Adam(model, lr=lr) if optimizer == "adam" else fastbp.RMSprop(model, lr=lr))
    return fastbp.Trainer(model, "cross_entropy", opt)


def first_nonfinite_layer(model, X, y):
    """The first (layer, part) whose torch autograd gradient on (X, y) is not
    finite, or None: independent of fastbp's kernels."""
    import torch

    net = model.to_torch()
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    grads = torch.autograd.grad(loss, [p for layer in layers for p in (layer.weight, layer.bias)])
    for i in range(len(layers)):
        for part, grad in (("weight", grads[2 * i]), ("bias", grads[2 * i + 1])):
            if not torch.isfinite(grad).all():
                return i, part
    return None


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e4), ("adam", 1e30), ("rmsprop", 1e30)])
def test_divergence_stops_at_the_step_and_keeps_the_last_finite_one(optimizer, lr):
    X, y = data()
    X *= 1e3
    trainer = make(optimizer, lr)
    with pytest.raises(FloatingPointError) as raised:
        trainer.fit(X, y, epochs=3, batch_size=BATCH, shuffle=False)
    message = str(raised.value)
    found = re.search(r"diverged at step (\d+) \(batch (\d+) of 12 in epoch 1\): layer (\d+)'s (weight|bias) "
                      r"gradient holds NaN or infinity", message)
    assert found, message
    step, batch, layer, part = int(found[1]), int(found[2]), int(found[3]), found[4]
    assert step == batch and step >= 2, message  # some finite steps first
    assert "lower the learning rate" in message and f"state of step {step - 1}" in message
    # the same run stopped by the data just before the diverging batch
    reference = make(optimizer, lr)
    reference.fit(X[:(batch - 1) * BATCH], y[:(batch - 1) * BATCH], epochs=1, batch_size=BATCH, shuffle=False)
    np.testing.assert_array_equal(trainer.model._params, reference.model._params)
    for state, expected in zip(trainer.optimizer._state, reference.optimizer._state):
        np.testing.assert_array_equal(state, expected)
    assert trainer.optimizer.step_count == reference.optimizer.step_count == step - 1
    assert trainer.epoch == 0 and len(trainer.history) == 0
    assert np.isfinite(trainer.model._params).all()
    # torch, from those parameters on that batch, finds the same first layer
    rows = slice((batch - 1) * BATCH, batch * BATCH)
    assert first_nonfinite_layer(reference.model, X[rows], y[rows]) == (layer, part)


def test_a_later_epoch_names_its_epoch_and_keeps_the_earlier_ones():
    X, y = data()
    trainer = make("sgd", 1e-2)
    trainer.fit(X, y, epochs=2, batch_size=BATCH, seed=0)
    trainer.optimizer.lr = 1e4
    with pytest.raises(FloatingPointError, match=r"\(batch \d+ of 12 in epoch 3\)"):
        trainer.fit(X * 1e3, y, epochs=5, batch_size=BATCH)
    assert trainer.epoch == 2 and len(trainer.history) == 2
    assert np.isfinite(trainer.model._params).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_skip_leaves_out_the_nonfinite_batches_and_counts_them(optimizer, dtype):
    # rows 9 and 40 spoil batches 2 and 6 (of 12), every epoch
    X, y = data(poisoned=(9, 40), dtype=dtype)
    trainer = make(optimizer, 1e-2, dtype)
    history = trainer.fit(X, y, epochs=3, batch_size=BATCH, shuffle=False, on_nonfinite="skip")
    assert history.skipped == [2, 2, 2]
    # the same run on the data without those two batches
    kept = np.r_[0:8, 16:40, 48:96]
    reference = make(optimizer, 1e-2, dtype)
    expected = reference.fit(X[kept], y[kept], epochs=3, batch_size=BATCH, shuffle=False)
    np.testing.assert_array_equal(trainer.model._params, reference.model._params)
    assert trainer.optimizer.step_count == reference.optimizer.step_count == 30
    assert history.loss == expected.loss and expected.skipped == [0, 0, 0]


def test_skip_with_shuffling_counts_every_spoiled_batch():
    X, y = data(poisoned=(3,))
    history = make("adam", 1e-2).fit(X, y, epochs=4, batch_size=BATCH, seed=1, on_nonfinite="skip")
    assert history.skipped == [1, 1, 1, 1] and np.isfinite(history.loss).all()


def test_every_batch_skipped_raises():
    X, y = data(poisoned=range(96))
    trainer = make("adam", 1e-2)
    before = trainer.model._params.copy()
    with pytest.raises(FloatingPointError, match="every batch of epoch 1 .12. had a non-finite"):
        trainer.fit(X, y, epochs=2, batch_size=BATCH, on_nonfinite="skip", seed=0)
    np.testing.assert_array_equal(trainer.model._params, before)


def test_on_nonfinite_is_checked():
    X, y = data()
    with pytest.raises(ValueError, match="on_nonfinite"):
        make("sgd", 0.1).fit(X, y, on_nonfinite="ignore")


def test_skips_survive_a_mid_epoch_checkpoint(tmp_path):
    X, y = data(poisoned=(9,))
    uninterrupted = make("adam", 1e-2)
    uninterrupted.fit(X, y, epochs=2, batch_size=BATCH, seed=3, on_nonfinite="skip")
    stopped = make("adam", 1e-2)
    # 11 steps an epoch: one checkpoint at step 5, the last one written before step 11
    stopped.fit(X, y, epochs=1, batch_size=BATCH, seed=3, on_nonfinite="skip", checkpoint_every=5,
                checkpoint_path=tmp_path / "ck.npz")
    resumed = fastbp.Trainer.load(tmp_path / "ck.npz")
    assert resumed._epoch_state is not None and resumed.optimizer.step_count == 10
    resumed.fit(X, y, epochs=2 - resumed.epoch, batch_size=BATCH, on_nonfinite="skip")
    np.testing.assert_array_equal(resumed.model._params, uninterrupted.model._params)
    assert resumed.history.skipped == uninterrupted.history.skipped == [1, 1]
    assert resumed.history.loss == uninterrupted.history.loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100])
def test_all_finite_agrees_with_numpy(dtype, n):
    values = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert kernels.all_finite(values)
    for bad in (np.nan, np.inf, -np.inf):
        for i in {0, n // 2, n - 1} if n else ():
            spoiled = values.copy()
            spoiled[i] = bad
            assert not kernels.all_finite(spoiled) and not np.isfinite(spoiled).all()
    big = np.full(n, np.finfo(dtype).max, dtype=dtype)
    assert kernels.all_finite(big)


def test_train_epoch_over_parts_of_the_order_is_one_call_over_the_whole():
    X, y = data()
    whole, parts = make("adam", 1e-2), make("adam", 1e-2)
    order = np.random.default_rng(0).permutation(96)
    whole.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False)  # compiles; reset below
    results = []
    for trainer, cuts in ((whole, [0, 96]), (parts, [0, 24, 40, 96])):
        trainer.model.reset_parameters(0)
        opt, model, loss = trainer.optimizer, trainer.model, trainer.loss
        for state in opt._state:
            state[...] = 0
        step, loss_sum = 0, 0.0
        bx, bl = np.empty(BATCH * 6, np.float32), np.empty(BATCH, np.int64)
        model._ensure_capacity(BATCH)
        for a, b in zip(cuts, cuts[1:]):
            loss_sum, step, done = kernels.train_epoch(
                kernels.Network(model._params, model._grads, model._layers, model._activation_params),
                kernels.Optimizer(opt.code, opt._hyper, opt._state), kernels.Loss(loss.code, loss.param, True),
                kernels.Data(X, np.zeros((0, 0), np.float32), y, order[a:b]),
                kernels.Work(bx, np.zeros(0, np.float32), bl, model._z, model._a, model._scratch),
                step, loss_sum, BATCH, 0.0)
            assert done == b - a
        results.append((model._params.copy(), loss_sum, step))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:] == (results[0][1], 12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_gradient_that_overflows_under_a_finite_loss_is_caught(dtype, threads):
    """The first layer's weights are zero, so the forward pass never sees
    how large the first batch's inputs are and the loss is finite; its
    weight gradient, inputs times deltas summed over the batch, overflows
    (as torch finds too).
    The products that write that gradient are large enough to be split
    between threads, and check what they write."""
    import numba

    import torch

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 300)).astype(dtype)
    y = rng.integers(0, 20, 100)
    X[:25] = np.finfo(dtype).max / 8

    def trainer():
        model = fastbp.MLP([300, 420, 20], activation="tanh", seed=0, dtype=dtype)
        model.params[0][0][...] = 0.0
        model.params[1][0][...] *= 1e4  # deltas of the first layer well above 1
        return fastbp.Trainer(model, "cross_entropy", fastbp.SGD(model, lr=0.01))

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        diverging = trainer()
        initial = diverging.model._params.copy()
        net = diverging.model.to_torch()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X[:25])), torch.from_numpy(y[:25]))
        assert torch.isfinite(loss)
        assert first_nonfinite_layer(diverging.model, X[:25], y[:25]) == (0, "weight")
        with pytest.raises(FloatingPointError, match=r"diverged at step 1 \(batch 1 of 4 in epoch 1\): layer 0's "
                                                     r"weight gradient holds NaN or infinity"):
            diverging.fit(X, y, epochs=1, batch_size=25, shuffle=False)
        np.testing.assert_array_equal(diverging.model._params, initial)
        skipping = trainer()
        assert skipping.fit(X, y, epochs=1, batch_size=25, shuffle=False, on_nonfinite="skip").skipped == [1]
        reference = trainer()
        reference.fit(X[25:], y[25:], epochs=1, batch_size=25, shuffle=False)
        np.testing.assert_array_equal(skipping.model._params, reference.model._params)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("sizes, batch", [([6, 16, 3], 8), ([300, 420, 20], 25)])
def test_network_backward_says_whether_its_gradients_are_finite(sizes, batch):
    """Through small loops or the tiles, the backward pass returns its check
    of every gradient it wrote, the bias gradients too."""
    model = fastbp.MLP(sizes, seed=0, activation="tanh")
    model._ensure_capacity(batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    args = (model._params, model._layers, model._activation_params)
    scratch = np.zeros((2, batch * max(sizes)), np.float32)

    def backward(dout):
        kernels.network_forward(model._z, model._a, x, *args)
        scratch[0, :dout.size] = dout.ravel()
        return kernels.network_backward(model._grads, scratch, x, *args, model._z, model._a, False, False)

    dout = rng.standard_normal((batch, sizes[-1])).astype(np.float32)
    assert backward(dout) is True and np.isfinite(model._grads).all()
    dout[batch // 2, 1] = np.inf
    assert backward(dout) is False and not np.isfinite(model._grads).all()
    # one huge input column overflows the first layer's weight gradient alone
    dout[batch // 2, 1] = 1.0
    x[:, 0] = np.finfo(np.float32).max
    model.params[0][0][...] = 0.0
    assert backward(dout * 1e3) is False
    W0 = model.grads[0][0]
    assert not np.isfinite(W0[:, 0]).all() and np.isfinite(W0[:, 1:]).all()
