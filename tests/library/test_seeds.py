"""The worked examples of the notes the project grew from (../shared/seeds),
reproduced with fastbp's API. Where a note's printed numbers disagree with its
own code, torch is the arbiter; each such case says so."""
import numpy as np
import pytest

import fastbp


def scalar_model(w, b=None, dtype="float64", sizes=(1, 1), **kwargs):
    model = fastbp.MLP(list(sizes), bias=b is not None, dtype=dtype, **kwargs)
    model.params[0][0][...] = w
    if b is not None:
        model.params[0][1][...] = b
    return model


def test_seed_000_five_sgd_steps_on_half_squared_error():
    # w=1, b=0, x=2, y=4, loss 0.5*(y_pred - y)**2, SGD lr 0.1, zero_grad each step
    model = scalar_model(1.0, 0.0)
    optimizer = fastbp.SGD(model, lr=0.1)
    loss = fastbp.MSELoss(reduction="sum")
    x, y = np.array([[2.0]]), np.array([[4.0]])
    printed_grads = [(-4.0, -2.0), (-2.0, -1.0), (-1.0, -0.5), (-0.5, -0.25), (-0.25, -0.125)]
    printed_params = [(1.40, 0.20), (1.60, 0.30), (1.70, 0.35), (1.75, 0.38), (1.77, 0.39)]
    printed_losses = [2.00, 0.50, 0.12, 0.03, 0.01]
    for grads, params, printed_loss in zip(printed_grads, printed_params, printed_losses):
        optimizer.zero_grad()
        value = 0.5 * loss(model.forward(x), y)
        model.backward(0.5 * loss.backward())  # the 0.5 of the loss scales its gradient
        (dW, db), = model.grads
        assert (dW[0, 0], db[0]) == pytest.approx(grads, abs=1e-12)
        optimizer.step()
        (W, b), = model.params
        # the note prints two decimals (1.775 shows as 1.77 by float rounding)
        assert (W[0, 0], b[0]) == pytest.approx(params, abs=0.0051)
        assert value == pytest.approx(printed_loss, abs=0.0051)
    assert (W[0, 0], b[0]) == pytest.approx((1.775, 0.3875), abs=1e-12)


def _seed_001_model():
    model = fastbp.MLP([1, 1, 1], activation="sigmoid", dtype="float64")
    (W1, b1), (W2, b2) = model.params
    W1[...], b1[...], W2[...], b2[...] = 2.0, -1.0, 1.5, 0.5
    return model


def test_seed_001_sigmoid_network_forward_backward_and_one_step():
    model = _seed_001_model()
    loss = fastbp.MSELoss()
    x, y = np.array([[3.0]]), np.array([[2.5]])
    y_pred = model.forward(x)[0, 0]
    initial = loss(y_pred, 2.5)
    model.backward(loss.backward().reshape(1, 1))
    (dW1, db1), (dW2, db2) = model.grads
    # exact values (torch gives the same; see test_seed_001_against_torch)
    a1 = 1 / (1 + np.exp(-5.0))
    assert y_pred == pytest.approx(1.5 * a1 + 0.5, rel=1e-14)
    assert y_pred == pytest.approx(1.98996, abs=5e-6)
    assert dW2[0, 0] == pytest.approx(-1.013251, abs=5e-7)
    assert dW2[0, 0] == pytest.approx(-2 * (2.5 - y_pred) * a1, rel=1e-14)
    assert dW1[0, 0] == pytest.approx(-2 * (2.5 - y_pred) * 1.5 * a1 * (1 - a1) * 3.0, rel=1e-14)
    fastbp.SGD(model, lr=0.1).step()
    new_loss = loss(model.forward(x), y)
    assert new_loss == pytest.approx(0.094419, abs=5e-7)
    # The note's printout rounds intermediates by hand (a1 to 0.9933,
    # sigma' to 0.0066), so its four-decimal numbers drift by up to 1e-3.
    printed = {"y_pred": (y_pred, 1.9899), "loss": (initial, 0.2602), "dL/dw2": (dW2[0, 0], -1.0134),
               "dL/db2": (db2[0], -1.0202), "dL/dw1": (dW1[0, 0], -0.0304), "dL/db1": (db1[0], -0.0101),
               "new loss": (new_loss, 0.0940)}
    for name, (ours, theirs) in printed.items():
        assert ours == pytest.approx(theirs, abs=1e-3), name
    (W1, b1), (W2, b2) = model.params
    assert (W1[0, 0], b1[0], W2[0, 0], b2[0]) == pytest.approx((2.0030, -0.9990, 1.6013, 0.6020), abs=1e-4)


def test_seed_001_against_torch():
    torch = pytest.importorskip("torch")
    model = _seed_001_model()
    reference = model.to_torch().double()
    x, y = torch.tensor([[3.0]], dtype=torch.float64), torch.tensor([[2.5]], dtype=torch.float64)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    torch.nn.functional.mse_loss(reference(x), y).backward()
    optimizer.step()
    expected_new_loss = torch.nn.functional.mse_loss(reference(x), y).item()
    loss = fastbp.MSELoss()
    loss(model.forward(x.numpy()), y.numpy())
    model.backward(loss.backward())
    fastbp.SGD(model, lr=0.1).step()
    assert loss(model.forward(x.numpy()), y.numpy()) == pytest.approx(expected_new_loss, rel=1e-12)


def test_seed_002_single_sigmoid_neuron_gradient_formula():
    # o = sigmoid(x @ w.T), no bias, loss = F.mse_loss(o, 1): the note's
    # E = 0.5*(O - t)**2 gives (O - t)*O*(1 - O)*x; mse_loss's factor makes it 2x that
    rng = np.random.default_rng(2)
    x, w, t = rng.standard_normal((1, 10)), rng.standard_normal((1, 10)), 1.0
    model = fastbp.MLP([10, 1], output_activation="sigmoid", bias=False, dtype="float64")
    model.params[0][0][...] = w
    loss = fastbp.MSELoss()
    O = model.forward(x)[0, 0]
    loss(np.array([[O]]), np.array([[t]]))
    model.backward(loss.backward())
    expected = 2 * (O - t) * O * (1 - O) * x
    np.testing.assert_allclose(model.grads[0][0], expected, rtol=1e-13)
    assert O == pytest.approx(1 / (1 + np.exp(-(x @ w.T)[0, 0])), rel=1e-15)


def test_seed_003_linear_model_per_sample_sgd():
    # y = w*x on [1,2,3] -> [2,4,6], w=1, loss (y_pred - y)**2, lr 0.01, float32 as torch.Tensor
    model = scalar_model(1.0, dtype="float32")
    optimizer = fastbp.SGD(model, lr=0.01)
    loss = fastbp.MSELoss()
    x_data, y_data = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]
    assert model.forward([[4.0]])[0, 0] == 4.0
    printed_grads = [[-2.0, -7.840000152587891, -16.228801727294922],
                     [-1.478623867034912, -5.796205520629883, -11.998146057128906]]
    printed_progress = [7.315943717956543, 3.9987640380859375]
    for epoch in range(100):
        for i, (x, y) in enumerate(zip(x_data, y_data)):
            value = loss(model.forward([[x]]), [[y]])
            model.backward(loss.backward())
            if epoch < 2:
                assert model.grads[0][0][0, 0] == pytest.approx(printed_grads[epoch][i], rel=1e-6)
            optimizer.step()
            optimizer.zero_grad()
        if epoch < 2:
            assert value == pytest.approx(printed_progress[epoch], rel=1e-6)
    assert model.forward([[4.0]])[0, 0] == pytest.approx(8.0, abs=1e-5)
    # the fused Trainer takes the same 300 steps
    fused = scalar_model(1.0, dtype="float32")
    trainer = fastbp.Trainer(fused, loss, fastbp.SGD(fused, lr=0.01))
    trainer.fit(np.array(x_data)[:, None], np.array(y_data)[:, None], epochs=100, batch_size=1, shuffle=False)
    assert fused.params[0][0][0, 0] == pytest.approx(model.params[0][0][0, 0], rel=1e-6)


def test_seed_003_quadratic_model_as_dense_on_squared_features():
    # y_pred = w1*x**2 + w2*x + b as Dense(2 -> 1) on features (x**2, x); w1=w2=1, b=0
    model = scalar_model([[1.0, 1.0]], 0.0, dtype="float32", sizes=(2, 1))
    optimizer = fastbp.SGD(model, lr=0.01)
    loss = fastbp.MSELoss()
    x_data, y_data = [1.0, 2.0, 3.0], [4.0, 9.0, 16.0]
    features = lambda x: [[x * x, x]]  # noqa: E731
    assert model.forward(features(4.0))[0, 0] == 20.0
    printed_first_epoch = [(-4.0, -4.0, -4.0), (-21.76000213623047, -10.880001068115234, -5.440000534057617),
                           (-20.534408569335938, -6.8448028564453125, -2.2816009521484375)]
    printed_progress = [1.3014256954193115, 2.612550973892212, 0.08509688824415207, 0.7533114552497864]
    history = []
    for epoch in range(600):
        for i, (x, y) in enumerate(zip(x_data, y_data)):
            value = loss(model.forward(features(x)), [[y]])
            model.backward(loss.backward())
            if epoch == 0:
                (dW, db), = model.grads
                assert (dW[0, 0], dW[0, 1], db[0]) == pytest.approx(printed_first_epoch[i], rel=1e-5)
            optimizer.step()
            optimizer.zero_grad()
        history.append(value)
    assert history[:4] == pytest.approx(printed_progress, rel=1e-5)
    # 600 epochs learn y = x**2 + 2x + 1 well enough to predict x = 4 near 25
    assert model.forward(features(4.0))[0, 0] == pytest.approx(25.0, abs=0.5)


def test_seed_003_quadratic_against_torch():
    torch = pytest.importorskip("torch")
    w = torch.tensor([[1.0, 1.0]], requires_grad=True)
    b = torch.tensor([0.0], requires_grad=True)
    model = scalar_model([[1.0, 1.0]], 0.0, dtype="float32", sizes=(2, 1))
    trainer = fastbp.Trainer(model, fastbp.MSELoss(), fastbp.SGD(model, lr=0.01))
    X = np.array([[1.0, 1.0], [4.0, 2.0], [9.0, 3.0]])
    Y = np.array([[4.0], [9.0], [16.0]])
    for _ in range(600):
        for x, y in zip(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)):
            loss = ((x @ w.T + b - y) ** 2).sum()
            loss.backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                b -= 0.01 * b.grad
            w.grad.zero_()
            b.grad.zero_()
    trainer.fit(X, Y, epochs=600, batch_size=1, shuffle=False)
    np.testing.assert_allclose(model.params[0][0], w.detach().numpy(), rtol=1e-4)
    np.testing.assert_allclose(model.params[0][1], b.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lr, predictions, grads", [
    # the note's code uses lr=0.1: the error flips sign every step
    (0.1, [7.0, 9.0, 7.0], [(-6.0, -2.0), (6.0, 2.0), (-6.0, -2.0)]),
    # the note's printed trace (7, 7.8, 7.96) is what lr=0.04 gives
    (0.04, [7.0, 7.8, 7.96], [(-6.0, -2.0), (-1.2, -0.4), (-0.24, -0.08)]),
])
def test_seed_004_three_steps(lr, predictions, grads):
    model = scalar_model(2.0, 1.0)
    optimizer = fastbp.SGD(model, lr=lr)
    loss = fastbp.MSELoss()
    for expected_prediction, expected_grads in zip(predictions, grads):
        prediction = model.forward([[3.0]])
        loss(prediction, [[8.0]])
        model.backward(loss.backward())
        assert prediction[0, 0] == pytest.approx(expected_prediction, abs=1e-12)
        (dW, db), = model.grads
        assert (dW[0, 0], db[0]) == pytest.approx(expected_grads, abs=1e-12)
        optimizer.step()
        optimizer.zero_grad()


def test_seed_004_faq_gradient_of_w_times_3_minus_8_squared():
    # torch gives dL/dw = 2*(6 - 8)*3 = -12; the note prints -6
    model = scalar_model(2.0)
    loss = fastbp.MSELoss()
    loss(model.forward([[3.0]]), [[8.0]])
    model.backward(loss.backward())
    assert model.grads[0][0][0, 0] == -12.0


def test_seed_004_faq_gradients_accumulate_without_zero_grad():
    # (w*3 - 5)**2 at w=2: torch gives +6 then +12; the note prints -6, -12
    model = scalar_model(2.0)
    loss = fastbp.MSELoss()
    seen = []
    for _ in range(2):
        loss(model.forward([[3.0]]), [[5.0]])
        model.backward(loss.backward())
        seen.append(model.grads[0][0][0, 0])
    assert seen == [6.0, 12.0]
    model.zero_grad()
    loss(model.forward([[3.0]]), [[5.0]])
    model.backward(loss.backward())
    assert model.grads[0][0][0, 0] == 6.0


def test_seed_004_faq_backward_before_forward_is_an_error():
    model = scalar_model(2.0)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward([[1.0]])
    with pytest.raises(RuntimeError, match="loss computed first"):
        fastbp.MSELoss().backward()
