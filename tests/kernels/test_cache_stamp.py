"""The compile cache follows every kernel source file, not only the file of
the function that was compiled: a kernel that inlines code from another
module must not keep running the old code after that module changes."""
import os
import shutil
import subprocess
import sys

import kernels

_RUN = """
import numpy as np
from kernels.network import network_forward
from kernels.activations import RELU
layers = np.array([[1, 1, 0, -1, RELU, 0, 0, 0]], dtype=np.int64)  # a dense layer, see kernels.layers.table
z, a = np.zeros(1), np.zeros(1)
network_forward(z, a, np.array([[3.0]]), np.array([1.0]), layers, np.zeros((1, 2)))
print(a[0])
"""


def _run(root):
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", _RUN], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split()[-1])


def test_a_change_in_one_kernel_module_recompiles_the_kernels_that_use_it(tmp_path):
    package = tmp_path / "kernels"
    shutil.copytree(os.path.dirname(kernels.__file__), package, ignore=shutil.ignore_patterns("__pycache__"))
    assert _run(tmp_path) == 3.0  # compiles network_forward and caches it in tmp_path
    assert any((package / "__pycache__").glob("network*.nbi"))
    # relu changed in activations.py only; network.py, whose compiled code
    # inlines relu, is untouched on disk
    source = (package / "activations.py").read_text()
    changed = source.replace("return 0.0 if x <= 0.0 else x", "return 0.0 if x <= 0.0 else 2.0 * x")
    assert changed != source
    (package / "activations.py").write_text(changed)
    assert _run(tmp_path) == 6.0
