"""Models from PyTorch, and files read the way the README says."""
import warnings

import numpy as np
import pytest

import fastbp

torch = pytest.importorskip("torch")


def test_from_torch_takes_the_layers_that_do_nothing_at_inference():
    torch.manual_seed(0)
    sequential = torch.nn.Sequential(
        torch.nn.Identity(), torch.nn.Flatten(), torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(16, 16), torch.nn.Identity(), torch.nn.Tanh(), torch.nn.AlphaDropout(0.1),
        torch.nn.Linear(16, 3)).double()
    with pytest.warns(UserWarning, match="dropout does nothing at inference") as caught:
        model = fastbp.MLP.from_torch(sequential)
    # Dropout after a hidden layer is fastbp's own; AlphaDropout is not, and is left out
    assert len(caught) == 1 and "sequential[8] is AlphaDropout" in str(caught[0].message)
    assert model.dropout == (0.5, 0.0)
    assert model.sizes == (8, 16, 16, 3) and [a.name for a in model.activations] == ["relu", "tanh", "identity"]
    x = np.random.default_rng(0).standard_normal((5, 8))
    with torch.no_grad():
        expected = sequential.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)


def test_from_torch_takes_flatten_only_as_a_no_op():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Flatten of 2-D input is silently a no-op
        fastbp.MLP.from_torch(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    with pytest.raises(TypeError, match=r"sequential\[0\] is Flatten\(start_dim=0"):
        fastbp.MLP.from_torch(torch.nn.Sequential(torch.nn.Flatten(0), torch.nn.Linear(4, 2)))


def test_a_missing_file_is_a_value_error_as_documented(tmp_path):
    for read in (fastbp.load, fastbp.Trainer.load):
        with pytest.raises(ValueError, match="no .*file at") as error:
            read(tmp_path / "missing.npz")
        assert isinstance(error.value, FileNotFoundError)  # what open() and np.load raise


def test_trainer_load_of_a_model_file_says_to_use_fastbp_load(tmp_path):
    fastbp.MLP([2, 2]).save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match=r"is not a fastbp checkpoint file: it is a model file .* use fastbp.load"):
        fastbp.Trainer.load(tmp_path / "model.npz")
