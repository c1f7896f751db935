"""``fastbp check --device cuda``.

As in test_cuda.py: on a machine with a GPU the device tests run here;
without one ``test_under_simulator`` runs this file again under Numba's CUDA
simulator in a subprocess, and the device tests of this process are skipped.
"""
import os
import pathlib
import subprocess
import sys

import pytest

from fastbp import check, cli
from tests.test_cuda import SIMULATED, WHERE, _run_python, on_device

pytestmark = pytest.mark.gpu

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_under_simulator():
    if WHERE != "subprocess":
        pytest.skip("the device tests run in this process" if WHERE == "here" else WHERE)
    environment = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             str(pathlib.Path(__file__))], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


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
    from fastbp.activations import Activation

    dense_forward = kernels.cuda.network.dense_forward

    def off_by_1e_3(out, *arguments):
        dense_forward(out, *arguments)
        out.copy_to_device(out.copy_to_host() * (1 + 1e-3))

    monkeypatch.setattr(kernels.cuda.network, "dense_forward", off_by_1e_3)
    # one case of each kind keeps the simulator quick
    monkeypatch.setattr(check, "ACTIVATIONS", [Activation("tanh")])
    monkeypatch.setattr(check, "LOSSES", {"mse": check.LOSSES["mse"]})
    monkeypatch.setattr(check, "OPTIMIZERS", {"adamw": check.OPTIMIZERS["adamw"]})
    assert cli.main(["check", "--device", "cuda"]) == 1
    lines = capsys.readouterr().out.splitlines()
    result = {line.split("  ")[0]: line.split()[-1] for line in lines[1:5]}
    # the loss kernel is untouched; everything downstream of the dense forward misses
    assert result == {"dense + tanh": "MISS", "loss mse": "ok", "mlp 3-6-5-2 gelu/silu": "MISS",
                      "2 epochs adamw": "MISS"}, lines
    assert lines[-1].startswith("MISS")


@pytest.mark.parametrize("missing", ["numba-cuda", "gpu"])
@pytest.mark.parametrize("command", ["check"])
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
