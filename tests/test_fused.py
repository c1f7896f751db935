"""The fused training path: no allocation per step, and the bench command's
error handling (its timings are never asserted: the machines are noisy)."""
import json
import os
import subprocess
import sys

import pytest

from fastbp import benchmark, cli

_ALLOCATIONS = """
import numpy as np, fastbp
from numba.core.runtime import rtsys
model = fastbp.MLP([20, 16, 16, 3], seed=0)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model), max_grad_norm=1.0)
X = np.random.default_rng(0).standard_normal((1000, 20)); y = np.arange(1000) % 3
trainer.fit(X, y, epochs=1, batch_size=10)  # compile, and start Numba's runtime (and its counters)
def allocations(samples):
    before = rtsys.get_allocation_stats()
    trainer.fit(X[:samples], y[:samples], epochs=1, batch_size=10)
    after = rtsys.get_allocation_stats()
    return after.alloc - before.alloc, after.free - before.free
one_step, hundred_steps = allocations(10), allocations(1000)
print(one_step[0], hundred_steps[0], hundred_steps[1])
"""


def test_training_steps_allocate_nothing():
    """Entering a kernel wraps each argument array once (a per-call cost); the
    steps inside allocate nothing, so 100 steps cost what 1 step costs."""
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    result = subprocess.run([sys.executable, "-c", _ALLOCATIONS], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    one_step, hundred_steps, freed = map(int, result.stdout.split())
    assert hundred_steps == one_step
    assert freed == hundred_steps  # and everything wrapped is released


def test_bench_rejects_unknown_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--config", "nosuch"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "unknown config 'nosuch'" in message
    for name in benchmark.CONFIGS:
        assert name in message


def test_bench_refuses_a_config_too_large_for_memory(capsys, tmp_path):
    json_path = tmp_path / "out.json"
    code = cli.main(["bench", "--sizes", "100000,100000,100000", "--batch", "4096", "--json", str(json_path)])
    assert code == 2
    message = capsys.readouterr().err
    needed = benchmark.Config("custom", (100000, 100000, 100000), 4096).bytes_needed()
    assert f"needs about {needed:,} bytes" in message
    assert not json_path.exists()


def test_bench_runs_a_config_and_writes_json(tmp_path):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    code = cli.main(["bench", "--config", "tiny", "--optimizer", "sgd", "--repeats", "1", "--quiet",
                     "--json", str(json_path), "--png", str(png_path)])
    assert code == 0
    result = json.loads(json_path.read_text())
    (row,) = result["rows"]
    assert row["config"] == "tiny" and row["optimizer"] == "sgd" and row["fastbp_step_s"] > 0
    assert result["ceiling_gflops"] > 0
    pytest.importorskip("matplotlib")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
