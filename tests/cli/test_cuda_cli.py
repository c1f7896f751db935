"""``fastbp check --device cuda`` and ``fastbp bench --device cuda``.

As in tests/backends/test_cuda.py: on a machine with a GPU the device tests run here;
without one ``test_under_simulator`` runs this file again under Numba's CUDA
simulator in a subprocess, and the device tests of this process are skipped.
torch's CUDA runner cannot run under the simulator: its refusal and its
TF32 setting are tested without running it.
"""
import os
import types

import numpy as np
import pytest

from fastbp import cli
from fastbp.cli import check
from fastbp.cli.bench import harness, runners
from tests.conftest import TOLERANCE, assert_close
from tests import background
from tests.backends.test_cuda import SIMULATED, WHERE, _run_python, on_device, run_under_simulator, simulator_job

pytestmark = pytest.mark.gpu


SIMULATOR_JOB = simulator_job(__file__)


@background.mark(SIMULATOR_JOB)
def test_under_simulator():
    run_under_simulator(SIMULATOR_JOB)


@on_device
def test_check_on_the_gpu_agrees_with_torch(capsys):
    assert cli.main(["check", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    for row in ["dense + gelu_tanh", "loss cross_entropy", "mlp ", "epochs rmsprop centered"]:
        assert row in out
    assert "all kernels agree with torch" in out and "MISS" not in out


@on_device
def test_check_on_the_gpu_fails_on_a_broken_device_kernel(monkeypatch, capsys):
    import kernels.cuda.network
    import kernels.cuda.training
    from fastbp.activations import Activation

    dense_forward = kernels.cuda.network.dense_forward

    def off_by_1e_3(out, *arguments):
        dense_forward(out, *arguments)
        out.copy_to_device(out.copy_to_host() * (1 + 1e-3))

    monkeypatch.setattr(kernels.cuda.network, "dense_forward", off_by_1e_3)
    # the training rows' narrow model would take the fused path, which has no dense_forward
    monkeypatch.setattr(kernels.cuda.training, "fits_fused", lambda layers: False)
    # one case of each kind keeps the simulator quick
    monkeypatch.setattr(check, "ACTIVATIONS", [Activation("tanh")])
    monkeypatch.setattr(check, "LOSSES", {"mse": check.LOSSES["mse"]})
    monkeypatch.setattr(check, "OPTIMIZERS", {"adamw": check.OPTIMIZERS["adamw"]})
    assert cli.main(["check", "--device", "cuda"]) == 1
    lines = capsys.readouterr().out.splitlines()
    result = {line.split("  ")[0]: line.split()[-1] for line in lines[1:7]}
    # the loss kernel is untouched; everything downstream of the dense forward misses
    assert result == {"dense + tanh": "MISS", "loss mse": "ok", "mlp 3-6-5-2 gelu/silu": "MISS",
                      "mlp + layer norm, dropout": "MISS", "resnet + norm, dropout": "MISS",
                      "2 epochs adamw": "MISS"}, lines
    assert lines[-1].startswith("MISS")


@on_device
def test_bench_runs_fastbp_on_the_gpu(monkeypatch):
    # two steps a block and no minimum time: tiny under the simulator
    monkeypatch.setattr(harness, "MAX_STEPS", 2)
    monkeypatch.setattr(harness, "ROUND_SECONDS", 0.0)
    config = harness.Config("odd", (3, 5, 2), 3)
    row, on_cpu = (harness.measure(config, "adam", ["fastbp"], rounds=1, threads=1, device=device)
                   for device in ("cuda", "cpu"))
    (run,), (cpu_run,) = row["rounds"]["fastbp"], on_cpu["rounds"]["fastbp"]
    assert row["device"] == run["device"] == "cuda" and row["n_steps"] == 2
    assert len(run["step_seconds"]) >= runners.MIN_BLOCKS
    assert "numba_cuda" in run["modules"] and "torch" not in run["modules"]
    # the first epoch's loss: the same training as the CPU's
    assert_close("bench fastbp loss on the gpu", np.float32, run["first_call_loss"], cpu_run["first_call_loss"],
                 TOLERANCE[np.float32])


@pytest.mark.parametrize("missing", ["numba-cuda", "gpu"])
@pytest.mark.parametrize("command", ["check", "bench"])
def test_without_a_gpu_one_line_and_status_2(command, missing, tmp_path):
    if SIMULATED:
        pytest.skip("runs in the process that started the simulator")
    if missing == "gpu" and WHERE == "here":
        pytest.skip("this machine has a GPU")
    if missing == "gpu" and WHERE != "subprocess":
        pytest.skip(WHERE)
    hide = "sys.modules['numba_cuda'] = None" if missing == "numba-cuda" else ""
    files = [str(tmp_path / "bench.json"), str(tmp_path / "bench.png")]
    options = ["--json", files[0], "--png", files[1]] if command == "bench" else []
    code = f"""
import sys
{hide}
from fastbp import cli
sys.stderr = sys.stdout
print(cli.main({[command, "--device", "cuda"] + options!r}))
"""
    message, status = _run_python(code).strip().splitlines()
    assert status == "2"
    expected = "numba-cuda, which is not installed" if missing == "numba-cuda" else "finds none here"
    assert message.startswith("fastbp: error: --device cuda: device='cuda' needs ") and expected in message
    assert not any(os.path.exists(path) for path in files)


def test_torch_on_the_gpu_is_refused_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("torch can use a GPU here")
    spec = {"framework": "torch", "device": "cuda", "sizes": [3, 2], "batch": 2, "n_steps": 2, "seconds": 0.0,
            "optimizer": "sgd", "activation": "relu", "dtype": "float32", "threads": 1}
    with pytest.raises(harness.Refused) as refusal:
        harness.run_process(spec)
    message = str(refusal.value)
    assert message.startswith("the torch runner: torch ") and "\n" not in message
    assert "torch.cuda.is_available() is False" in message and "install a CUDA build of torch" in message


def _fake_torch(cuda_available):
    """The attributes configure_torch touches, with allow_tf32 unset."""
    matmul = types.SimpleNamespace(allow_tf32=None)
    return types.SimpleNamespace(__version__="fake", backends=types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=matmul)), cuda=types.SimpleNamespace(is_available=lambda: cuda_available))


@pytest.mark.parametrize("framework, tf32", [("torch", False), ("torch_tf32", True), ("torch_compile", False)])
def test_torch_tf32_switch(framework, tf32):
    configuration = runners.torch_configuration(framework, "cuda")
    assert configuration == {"device": "cuda", "compiled": framework == "torch_compile", "allow_tf32": tf32}
    torch = _fake_torch(cuda_available=True)
    assert runners.configure_torch(torch, framework, "cuda") == configuration
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    refused = _fake_torch(cuda_available=False)
    with pytest.raises(runners.Refused, match="torch.cuda.is_available"):
        runners.configure_torch(refused, framework, "cuda")
    assert refused.backends.cuda.matmul.allow_tf32 is None


def test_bench_peers_on_the_gpu_are_torch_without_and_with_tf32(monkeypatch):
    monkeypatch.setattr(harness.importlib.util, "find_spec", lambda name: object())
    assert harness.peers(device="cuda") == ["torch", "torch_tf32"]
    assert harness.peers(torch_compile=True, device="cuda") == ["torch", "torch_tf32", "torch_compile"]
    assert harness.peers() == ["torch", "jax"]
