"""Layer norms, dropout and residual blocks in fastbp.MLP: forward,
gradients and 50-step runs against torch (given dropout's own masks),
evaluation mode, masks that do not depend on the thread count or on a
resume, files, pickles, to_torch / from_torch, and bad input refused."""
import pickle

import numpy as np
import pytest

import fastbp
import kernels
from kernels.layers import DROPOUT
from kernels.layers.table import KIND
from tests.conftest import TOLERANCE, assert_close

torch = pytest.importorskip("torch")


class _Masked(torch.nn.Module):
    """Dropout given its mask: what torch's Dropout computes, mask and all."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask


def _mask(model, layer, step, rows):
    """Dropout layer ``layer``'s mask (rows, n) at update ``step``, from the kernel itself."""
    n = int(model._layers[layer, 1])
    ones, out, mask = np.ones((rows, n)), np.empty((rows, n)), np.empty((rows, n))
    kernels.dropout_forward(out, mask, ones, model._activation_params[layer, 0], model.dropout_seed, step, layer)
    return mask.astype(model.dtype)


def _torch_twin(model):
    """(model.to_torch() with each Dropout given fastbp's masks, [(table layer, its module)])."""
    net = model.to_torch()
    layers = list(np.flatnonzero(model._layers[:, KIND] == DROPOUT))
    masked = []

    def replace(sequential):
        # in the order of the layer table: depth first, a residual block's body where the block is
        for index, module in enumerate(sequential):
            if isinstance(module, torch.nn.Dropout):
                sequential[index] = _Masked()
                masked.append((int(layers.pop(0)), sequential[index]))
            elif hasattr(module, "body"):
                replace(module.body)
    replace(net)
    assert not layers
    return net, masked


def _set_masks(model, masked, step, rows):
    for layer, module in masked:
        module.mask = torch.from_numpy(_mask(model, layer, step, rows))


def _model(dtype, dropout=(0.3, 0.1), norm="layer", seed=0, residual=False):
    if residual:
        return fastbp.MLP([5, 12, 12, 3], activation="gelu", dtype=dtype, seed=seed, dropout=list(dropout),
                          norm=norm, residual=True)
    return fastbp.MLP([5, 12, 9, 3], activation=["tanh", "gelu"], dtype=dtype, seed=seed, dropout=list(dropout),
                      norm=norm)


@pytest.mark.parametrize("residual", [False, True])
def test_a_norm_and_dropout_model_is_torchs_forward_and_backward(dtype, residual):
    model = _model(dtype, residual=residual)
    net, masked = _torch_twin(model)
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(dtype)
    out = model.forward(x)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    dx = model.backward(dout)
    _set_masks(model, masked, 0, 7)  # the first forward in training mode is step 0
    xt = torch.tensor(x, requires_grad=True)
    expected = net(xt)
    expected.backward(torch.tensor(dout))
    tolerance = {"atol": TOLERANCE[dtype]["atol"], "rtol": TOLERANCE[dtype]["rtol"]}
    assert_close("norm+dropout forward", dtype, out, expected.detach().numpy(), tolerance)
    assert_close("norm+dropout dx", dtype, dx, xt.grad.numpy(), tolerance)
    # modules() walks a residual block's body where the block is: the order of the layer table
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(linears) == len(model.grads) and len(norms) == len(model.norm_grads)
    for (dW, db), linear in zip(model.grads, linears):
        assert_close("dense dW", dtype, dW, linear.weight.grad.numpy(), tolerance)
        assert_close("dense db", dtype, db, linear.bias.grad.numpy(), tolerance)
    for (dweight, dbias), norm in zip(model.norm_grads, norms):
        assert_close("layer norm dweight", dtype, dweight, norm.weight.grad.numpy(), tolerance)
        assert_close("layer norm dbias", dtype, dbias, norm.bias.grad.numpy(), tolerance)
    # masks drop: some outputs of the dropout layers are zero
    assert any((_mask(model, layer, 0, 7) == 0).any() for layer, _ in masked)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_a_run_of_50_steps_is_torchs_given_the_same_masks(dtype, tolerance, residual):
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((100, 5)).astype(dtype), rng.integers(0, 3, 100)
    model = _model(dtype, seed=2, residual=residual)
    net, masked = _torch_twin(model)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    step = 0
    for _ in range(5):
        for start in range(0, 100, 10):
            _set_masks(model, masked, step, 10)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[start:start + 10]), yt[start:start + 10]).backward()
            optimizer.step()
            step += 1
    net.eval()
    for layer, module in masked:
        module.mask = torch.ones((), dtype=getattr(torch, model.dtype.name))
    trainer = fastbp.Trainer(model, "cross_entropy", fastbp.SGD(model, lr=0.05, momentum=0.9))
    trainer.fit(X, y, epochs=5, batch_size=10, shuffle=False)
    assert trainer.optimizer.step_count == 50
    assert_close("norm+dropout 50-step run", dtype, model.predict(X), net(Xt).detach().numpy(),
                 {"atol": tolerance, "rtol": tolerance})


def test_evaluation_mode_and_predict_pass_dropout_through():
    model = _model(np.float64)
    x = np.random.default_rng(4).standard_normal((6, 5))
    expected = model.to_torch().eval()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)
    assert model.eval() is model and not model.training
    np.testing.assert_array_equal(model.forward(x), model.predict(x))
    training = model.train().forward(x)
    assert model.training and not np.allclose(training, model.predict(x))
    # each forward in training mode draws new masks
    assert not np.array_equal(model.forward(x), training)


def test_the_masks_do_not_depend_on_the_thread_count():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: no data-parallel epoch")
    rng = np.random.default_rng(11)
    X, y = rng.standard_normal((512, 6)), rng.integers(0, 3, 512)
    outputs = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            model = fastbp.MLP([6, 32, 3], dtype="float64", seed=0, dropout=0.5, norm="layer")
            assert kernels.data_parallel_chunks(model.n_params, 256, threads) == threads
            fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model, lr=0.01)).fit(X, y, epochs=2, batch_size=256,
                                                                                   seed=0)
            outputs.append(model.predict(X))
    finally:
        numba.set_num_threads(previous)
    # the parts' gradients are added in another order, so equal to rounding; other masks would differ by far more
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
def test_a_checkpointed_dropout_run_resumes_bit_for_bit(tmp_path, residual):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)

    def trainer():
        model = fastbp.MLP([4, 8, 8, 3], seed=3, dropout=0.2, norm="layer", residual=residual)
        return fastbp.Trainer(model, "cross_entropy", fastbp.Adam(model, lr=0.01))
    whole = trainer()
    whole.fit(X, y, epochs=2, batch_size=6, seed=1)
    path = tmp_path / "run.ckpt"
    trainer().fit(X, y, epochs=1, batch_size=6, seed=1, checkpoint_every=4, checkpoint_path=path)
    resumed = fastbp.Trainer.load(path)
    assert resumed.model.dropout_seed == whole.model.dropout_seed
    resumed.fit(X, y, epochs=2 - resumed.epoch, batch_size=6)
    np.testing.assert_array_equal(resumed.model.predict(X), whole.model.predict(X))
    assert resumed.history.loss == whole.history.loss


@pytest.mark.parametrize("residual", [False, True])
def test_files_pickles_and_state_dicts_keep_the_layers(tmp_path, residual):
    model = _model(np.float32, seed=5, residual=residual)
    x = np.random.default_rng(5).standard_normal((4, 5)).astype(np.float32)
    model.norms[0][0][...] = 1.5  # not the initial weight
    model.save(tmp_path / "m.npz")
    first_forward = model.forward(x)
    for copy in (fastbp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(model)),
                 fastbp.MLP.from_state_dict(model.state_dict())):
        assert (copy.dropout, copy.norm, copy.norm_eps, copy.residual, copy.dropout_seed) == (
            model.dropout, "layer", 1e-5, residual, model.dropout_seed)
        np.testing.assert_array_equal(copy.predict(x), model.predict(x))
        np.testing.assert_array_equal(copy.forward(x), first_forward)  # the same masks as well
    plain = fastbp.MLP(model.sizes, activation=model.activations[:-1], seed=0)
    with pytest.raises(KeyError, match="layers"):
        plain.load_state_dict(model.state_dict())
    other = _model(np.float32, dropout=(0.3, 0.2), residual=residual)
    before = other._params.copy()
    with pytest.raises(ValueError, match=r"state\['layers'\]"):
        other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other._params, before)
    assert "layers" not in plain.state_dict()  # plain models' states and files are as before


def test_to_torch_and_from_torch_map_norms_and_dropout():
    model = _model(np.float64, dropout=(0.25, 0.0), seed=6)
    model.norms[1][1][...] = 0.5
    net = model.to_torch()
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "Tanh", "LayerNorm", "Dropout", "Linear", "GELU", "LayerNorm", "Linear"]
    assert net[3].p == 0.25
    back = fastbp.MLP.from_torch(net)
    assert (back.dropout, back.norm) == ((0.25, 0.0), "layer")
    x = np.random.default_rng(6).standard_normal((3, 5))
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    eps = torch.nn.Sequential(torch.nn.Linear(3, 4, dtype=torch.float64), torch.nn.LayerNorm(4, eps=1e-3,
                              dtype=torch.float64), torch.nn.Linear(4, 2, dtype=torch.float64))
    assert fastbp.MLP.from_torch(eps).norm_eps == 1e-3


@pytest.mark.parametrize("options", [{}, {"dropout": 0.2, "norm": "layer"}, {"dropout": [0.0, 0.1, 0.0]}])
def test_to_torch_and_from_torch_map_residual_blocks(options):
    model = fastbp.MLP([5, 16, 16, 16, 2], activation="silu", dtype="float64", seed=7, residual=True, **options)
    for weight, bias in model.norms:
        weight[...], bias[...] = 1.25, -0.5
    net = pickle.loads(pickle.dumps(model.to_torch()))
    from fastbp.interop.torch import ResidualBlock
    assert [type(m).__name__ for m in net][:4] == ["Linear", "ResidualBlock", "ResidualBlock", "ResidualBlock"]
    assert isinstance(net[1], ResidualBlock)
    x = np.random.default_rng(7).standard_normal((4, 5))
    np.testing.assert_allclose(net.eval()(torch.tensor(x)).detach().numpy(), model.predict(x), rtol=1e-12,
                               atol=1e-12)
    back = fastbp.MLP.from_torch(net)
    assert (back.residual, back.dropout, back.norm) == (True, model.dropout, model.norm)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_residual_models_refuse_what_they_cannot_be():
    with pytest.raises(ValueError, match="hidden layers of one width"):
        fastbp.MLP([5, 16, 8, 2], residual=True)
    with pytest.raises(ValueError, match="hidden layers of one width"):
        fastbp.MLP([5, 2], residual=True)
    net = fastbp.MLP([5, 8, 8, 2], residual=True, norm="layer").to_torch()
    del net[-3]  # the head's LayerNorm: now the blocks have one and the head none
    with pytest.raises(ValueError, match="some blocks .or the head. have a LayerNorm"):
        fastbp.MLP.from_torch(net)
    net = fastbp.MLP([5, 8, 8, 2], residual=True, dropout=0.1).to_torch()
    net[1].body[-1].p = 0.3
    with pytest.raises(ValueError, match="two dropouts, if any, of one rate"):
        fastbp.MLP.from_torch(net)


@pytest.mark.parametrize("modules, error, match", [
    (lambda nn: [nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)], ValueError, "in that order"),
    (lambda nn: [nn.Linear(3, 4), nn.Dropout(0.1), nn.LayerNorm(4), nn.Linear(4, 2)], ValueError, "in that order"),
    (lambda nn: [nn.Linear(3, 4), nn.Linear(4, 2), nn.LayerNorm(2)], ValueError, "hidden layers only"),
    (lambda nn: [nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 2)], ValueError, "or none"),
    (lambda nn: [nn.Linear(3, 4), nn.LayerNorm(4, elementwise_affine=False), nn.Linear(4, 2)], TypeError,
     "weight and bias"),
])
def test_from_torch_refuses_layouts_fastbp_does_not_have(modules, error, match):
    with pytest.raises(error, match=match):
        fastbp.MLP.from_torch(torch.nn.Sequential(*modules(torch.nn)))


def test_from_torch_leaves_out_the_dropout_after_the_output_with_a_warning():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.2), torch.nn.Linear(4, 2),
                              torch.nn.Dropout(0.5))
    with pytest.warns(UserWarning, match="last Linear"):
        model = fastbp.MLP.from_torch(net)
    assert model.dropout == (0.2,)


@pytest.mark.parametrize("options, error, match", [
    ({"dropout": 1.0}, ValueError, r"dropout must be a finite number in \[0.0, 1.0\)"),
    ({"dropout": -0.1}, ValueError, "dropout must be"),
    ({"dropout": float("nan")}, ValueError, "dropout must be"),
    ({"dropout": "0.1"}, TypeError, "dropout must be a real number"),
    ({"dropout": [0.1]}, ValueError, r"one dropout per hidden layer \(2\)"),
    ({"dropout": [0.1, 1.5]}, ValueError, r"dropout\[1\]"),
    ({"norm": "batch"}, ValueError, "norm must be one of 'layer'"),
    ({"norm_eps": 0.0}, ValueError, "norm_eps"),
])
def test_bad_layer_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        fastbp.MLP([5, 12, 9, 3], **options)


def test_lbfgs_refuses_dropout():
    model = _model(np.float64)
    X, y = np.zeros((8, 5)), np.zeros(8, dtype=np.int64)
    before = model._params.copy()
    with pytest.raises(ValueError, match="L-BFGS needs a deterministic objective"):
        fastbp.Trainer(model, "cross_entropy", fastbp.LBFGS(model)).fit(X, y)
    np.testing.assert_array_equal(model._params, before)


def test_the_kernels_refuse_a_layer_table_that_is_not_whole():
    model = _model(np.float64)
    x = np.zeros((2, 5))
    z, a = np.empty(2 * model._total_units), np.empty(2 * model._total_units)
    layers = model._layers.copy()
    layers[2, 4] = 1  # an activation on a dropout layer
    with pytest.raises(ValueError, match="is not dense, so it must keep its width"):
        kernels.network_forward(z, a, x, model._params, layers, model._activation_params)
    layers = model._layers.copy()
    layers[1, 6] = 9
    with pytest.raises(ValueError, match="unknown kind 9"):
        kernels.network_forward(z, a, x, model._params, layers, model._activation_params)
    model = _model(np.float64, residual=True)
    z, a = np.empty(2 * model._total_units), np.empty(2 * model._total_units)
    for end, other in ((1, 2.0), (1, 99.0), (1, 1.5)):
        layer_params = model._activation_params.copy()
        layer_params[end, 0] = other
        with pytest.raises(ValueError, match="an end of a residual connection"):
            kernels.network_forward(z, a, x, model._params, model._layers, layer_params)
