"""Whole models against torch: forward, every parameter gradient, and
training trajectories with each optimizer."""
import numpy as np
import pytest

import fastbp
from tests.conftest import TOLERANCE, assert_close, check_against_torch

torch = pytest.importorskip("torch")

ACTIVATION_CHOICES = [
    "relu", "tanh", "sigmoid", "silu", "gelu", fastbp.Activation("gelu", approximate="tanh"),
    fastbp.Activation("leaky_relu", negative_slope=0.2), fastbp.Activation("elu", alpha=0.5),
    fastbp.Activation("softplus", beta=2.0, threshold=10.0), "identity",
]
LOSSES = [
    (fastbp.MSELoss(), torch.nn.MSELoss()),
    (fastbp.L1Loss(reduction="sum"), torch.nn.L1Loss(reduction="sum")),
    (fastbp.HuberLoss(delta=0.5), torch.nn.HuberLoss(delta=0.5)),
    (fastbp.CrossEntropyLoss(label_smoothing=0.05), torch.nn.CrossEntropyLoss(label_smoothing=0.05)),
    (fastbp.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss()),
]


def random_architecture(seed):
    """1-5 layers, widths 1-300, a mix of activations."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 6))
    sizes = [int(w) for w in rng.choice([1, 2, 3, 7, 16, 33, 64, 128, 300], size=n_layers + 1)]
    hidden = [ACTIVATION_CHOICES[i] for i in rng.integers(0, len(ACTIVATION_CHOICES), size=n_layers - 1)]
    return sizes, hidden


def targets_for(loss, batch, n_out, rng):
    if isinstance(loss, fastbp.CrossEntropyLoss):
        return rng.integers(0, n_out, size=batch)
    if isinstance(loss, fastbp.BCEWithLogitsLoss):
        return rng.uniform(size=(batch, n_out))
    return rng.standard_normal((batch, n_out))


@pytest.mark.parametrize("seed", range(12))
def test_model_forward_and_gradients(seed, dtype):
    sizes, hidden = random_architecture(seed)
    model = fastbp.MLP(sizes, activation=hidden, bias=seed % 4 != 3, dtype=dtype, seed=seed)
    reference = model.to_torch().double()
    batch = [1, 5, 64][seed % 3]
    x = np.random.default_rng(seed).standard_normal((batch, sizes[0]))
    weights = [w for W, b in model.params for w in ((W, b) if b is not None else (W,))]

    def torch_model(x, *params):
        with torch.no_grad():
            for p, value in zip(reference.parameters(), params):
                p.copy_(value)
        return torch.func.functional_call(reference, dict(zip(
            [name for name, _ in reference.named_parameters()], params)), (x,))

    def fastbp_model(x, *rest):
        dout = rest[-1]
        model.zero_grad()
        out = model.forward(x)
        dx = model.backward(dout)
        grads = [dx] + [g for dW, db in model.grads for g in ((dW, db) if db is not None else (dW,))]
        return out, grads

    inputs = [x] + [w.astype(np.float64) for w in weights]
    check_against_torch("MLP", inputs, torch_model, fastbp_model, dtype, TOLERANCE[dtype])


@pytest.mark.parametrize("loss_index", range(len(LOSSES)))
@pytest.mark.parametrize("seed", range(3))
def test_model_with_loss_gradients(seed, loss_index, dtype):
    fastbp_loss, torch_loss = LOSSES[loss_index]
    sizes, hidden = random_architecture(100 + seed)
    if isinstance(fastbp_loss, fastbp.CrossEntropyLoss):
        sizes[-1] = max(sizes[-1], 2)
    model = fastbp.MLP(sizes, activation=hidden, dtype=dtype, seed=seed)
    reference = model.to_torch().double()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((17, sizes[0]))
    y = targets_for(fastbp_loss, 17, sizes[-1], rng)
    value = fastbp_loss(model.forward(x), y)
    model.backward(fastbp_loss.backward())
    expected = torch_loss(reference(torch.tensor(x)), torch.tensor(y))
    expected.backward()
    assert_close("MLP + loss value", dtype, value, expected.item(), TOLERANCE[dtype])
    for (dW, db), layer in zip(model.grads, [m for m in reference if isinstance(m, torch.nn.Linear)]):
        assert_close("MLP + loss gradients", dtype, dW, layer.weight.grad.numpy(), TOLERANCE[dtype])
        assert_close("MLP + loss gradients", dtype, db, layer.bias.grad.numpy(), TOLERANCE[dtype])


OPTIMIZERS = [
    (fastbp.SGD, torch.optim.SGD, dict(lr=0.05)),
    (fastbp.SGD, torch.optim.SGD, dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (fastbp.Adam, torch.optim.Adam, dict(lr=3e-3)),
    (fastbp.Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True)),
    (fastbp.AdamW, torch.optim.AdamW, dict(lr=3e-3)),
    (fastbp.RMSprop, torch.optim.RMSprop, dict(lr=1e-3)),
    (fastbp.RMSprop, torch.optim.RMSprop, dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
]


def torch_training(reference, torch_loss, optimizer, batches):
    losses = []
    for xb, yb in batches:
        optimizer.zero_grad()
        loss = torch_loss(reference(torch.tensor(xb)), torch.tensor(yb))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("optimizer_index", range(len(OPTIMIZERS)))
def test_fifty_steps_match_torch(optimizer_index):
    """50 steps of the per-step API (forward, loss, backward, step) in float64."""
    fastbp_class, torch_class, hyper = OPTIMIZERS[optimizer_index]
    fastbp_loss, torch_loss = LOSSES[optimizer_index % len(LOSSES)]
    sizes, hidden = random_architecture(200 + optimizer_index)
    sizes[-1] = max(sizes[-1], 2)
    model = fastbp.MLP(sizes, activation=hidden, dtype="float64", seed=optimizer_index)
    reference = model.to_torch()
    rng = np.random.default_rng(optimizer_index)
    batches = [(rng.standard_normal((8, sizes[0])), targets_for(fastbp_loss, 8, sizes[-1], rng))
               for _ in range(50)]
    expected = torch_training(reference, torch_loss, torch_class(reference.parameters(), **hyper), batches)
    optimizer = fastbp_class(model, **hyper)
    for step, (xb, yb) in enumerate(batches):
        optimizer.zero_grad()
        value = fastbp_loss(model.forward(xb), yb)
        model.backward(fastbp_loss.backward())
        optimizer.step()
        assert_close(f"50 steps {fastbp_class.__name__} loss", np.float64, value, expected[step],
                     TOLERANCE[np.float64])
    for (W, b), layer in zip(model.params, [m for m in reference if isinstance(m, torch.nn.Linear)]):
        assert_close(f"50 steps {fastbp_class.__name__}", np.float64, W, layer.weight.detach().numpy(),
                     TOLERANCE[np.float64])
        assert_close(f"50 steps {fastbp_class.__name__}", np.float64, b, layer.bias.detach().numpy(),
                     TOLERANCE[np.float64])


@pytest.mark.parametrize("optimizer_index", range(len(OPTIMIZERS)))
def test_fit_without_shuffle_equals_the_torch_loop(optimizer_index):
    """Trainer.fit (the fused path) against the same loop written in torch,
    partial last batch included."""
    fastbp_class, torch_class, hyper = OPTIMIZERS[optimizer_index]
    fastbp_loss, torch_loss = LOSSES[(optimizer_index + 3) % len(LOSSES)]
    sizes, hidden = random_architecture(300 + optimizer_index)
    sizes[-1] = max(sizes[-1], 2)
    model = fastbp.MLP(sizes, activation=hidden, dtype="float64", seed=optimizer_index)
    reference = model.to_torch()
    rng = np.random.default_rng(optimizer_index)
    X = rng.standard_normal((45, sizes[0]))
    y = targets_for(fastbp_loss, 45, sizes[-1], rng)
    batches = [(X[i:i + 10], y[i:i + 10]) for i in range(0, 45, 10)] * 3
    expected = torch_training(reference, torch_loss, torch_class(reference.parameters(), **hyper), batches)
    trainer = fastbp.Trainer(model, fastbp_loss, fastbp_class(model, **hyper))
    history = trainer.fit(X, y, epochs=3, batch_size=10, shuffle=False).loss
    # a batch's share: its mean loss times its size, or its summed loss as is
    sizes_per_batch = np.array([10, 10, 10, 10, 5]) if fastbp_loss.reduction == "mean" else np.ones(5)
    for epoch in range(3):
        losses = np.array(expected[epoch * 5:(epoch + 1) * 5])
        assert_close("fit 3 epochs loss", np.float64, history[epoch], (losses * sizes_per_batch).sum() / 45,
                     TOLERANCE[np.float64])
    for (W, b), layer in zip(model.params, [m for m in reference if isinstance(m, torch.nn.Linear)]):
        assert_close("fit 3 epochs", np.float64, W, layer.weight.detach().numpy(),
                     TOLERANCE[np.float64])
        assert_close("fit 3 epochs", np.float64, b, layer.bias.detach().numpy(),
                     TOLERANCE[np.float64])
    assert trainer.optimizer.step_count == 15


def test_fit_with_shuffle_is_seeded_and_uses_every_sample_once_per_epoch():
    X = np.random.default_rng(0).standard_normal((37, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    runs = []
    for _ in range(2):
        model = fastbp.MLP([3, 8, 1], dtype="float64", seed=1)
        trainer = fastbp.Trainer(model, fastbp.MSELoss(), fastbp.SGD(model, lr=0.05))
        runs.append((trainer.fit(X, y, epochs=4, batch_size=5, seed=7).loss, model._params.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    import kernels
    order, garbage = np.arange(37, dtype=np.int64), np.full(37, -5, dtype=np.int64)
    kernels.random_permutation(order, np.array([123], dtype=np.uint64))
    kernels.random_permutation(garbage, np.array([123], dtype=np.uint64))
    assert sorted(order) == list(range(37)) and list(order) != list(range(37))
    np.testing.assert_array_equal(order, garbage)  # the stream alone decides the order


def test_gradients_accumulate_until_zero_grad():
    model = fastbp.MLP([3, 4, 2], dtype="float64", seed=0)
    x, dout = np.ones((2, 3)), np.ones((2, 2))
    model.forward(x)
    model.backward(dout)
    once = model._grads.copy()
    model.backward(dout)
    np.testing.assert_allclose(model._grads, 2 * once, rtol=1e-15)
    model.zero_grad()
    assert not model._grads.any()


def test_a_nan_weight_in_front_of_a_relu_stops_training():
    model = fastbp.MLP([3, 4, 1], activation="relu", dtype="float64", seed=0)
    model.params[0][0][0, 0] = np.nan
    X = np.random.default_rng(0).standard_normal((16, 3))
    trainer = fastbp.Trainer(model, fastbp.MSELoss(), fastbp.SGD(model, lr=0.01))
    with pytest.raises(FloatingPointError,
                       match=r"diverged at step 1 \(batch 1 of 2 in epoch 1\): layer 0's weight gradient holds NaN"):
        trainer.fit(X, X[:, :1], epochs=3, batch_size=8)


def test_torch_round_trip_every_activation():
    for activation in ACTIVATION_CHOICES:
        model = fastbp.MLP([4, 6, 5, 3], activation=activation, output_activation="sigmoid",
                           dtype="float64", seed=3)
        sequential = model.to_torch()
        back = fastbp.MLP.from_torch(sequential)
        assert back.activations == model.activations and back.sizes == model.sizes
        x = np.random.default_rng(0).standard_normal((9, 4))
        expected = sequential(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(back.forward(x), expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12, atol=1e-14)


def test_default_initialisation_matches_torch_linear_distribution():
    model = fastbp.MLP([400, 300], dtype="float64", seed=0)
    W, b = model.params[0]
    bound = 1 / np.sqrt(400)
    assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has standard deviation a / sqrt(3)
    assert W.std() == pytest.approx(bound / np.sqrt(3), rel=0.01)
    torch.manual_seed(0)
    layer = torch.nn.Linear(400, 300)
    assert layer.weight.detach().numpy().std() == pytest.approx(W.std(), rel=0.01)
    assert not np.array_equal(W, fastbp.MLP([400, 300], dtype="float64", seed=1).params[0][0])


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=6),
       activation=st.sampled_from(ACTIVATION_CHOICES), batch=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_any_architecture_matches_torch(sizes, activation, batch, seed):
    """Property: for any widths, depth, activation and batch, forward and the
    input gradient equal torch's in float64."""
    model = fastbp.MLP(sizes, activation=activation, dtype="float64", seed=seed)
    reference = model.to_torch()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]))
    dout = rng.standard_normal((batch, sizes[-1]))
    xt = torch.tensor(x, requires_grad=True)
    out = reference(xt)
    (dx,) = torch.autograd.grad(out, [xt], torch.tensor(dout))
    assert_close("MLP (hypothesis) forward", np.float64, model.forward(x), out.detach().numpy(),
                 TOLERANCE[np.float64])
    assert_close("MLP (hypothesis) backward", np.float64, model.backward(dout), dx.numpy(), TOLERANCE[np.float64])
