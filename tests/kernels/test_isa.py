"""The instruction set of the tiles: chosen from the target Numba compiles
for and from FASTBP_ISA, its tile shape derived from the register file, and
the correctness tests run again for every other ISA this CPU can execute
(on an AVX-512 machine: the AVX2 tiles, compiled without AVX-512, and the
no-tile path), each in a process of its own."""
import os
import pathlib
import sys

import numpy as np
import pytest

import fastbp
from kernels import isa, tiles
from kernels.config import TILED, split_passes
from tests import background

ROOT = pathlib.Path(__file__).resolve().parents[2]
X86 = {"avx2", "fma", "avx512f", "sse2"}


def test_tile_shapes_fill_the_register_file():
    assert isa.tile_shape(64, 32) == (6, 4)  # AVX-512: 24 sums, 4 for B, 1 broadcast
    assert isa.tile_shape(32, 16) == (6, 2)  # AVX2: 12 sums, 2 for B, 1 broadcast
    for vector_bytes, registers, _ in isa.ISAS.values():
        rows, vectors = isa.tile_shape(vector_bytes, registers)
        assert rows * vectors + vectors + 1 <= registers


def test_the_best_isa_the_target_has_is_chosen():
    assert isa.choose("auto", X86) == "avx512"
    assert isa.choose("auto", X86 - {"avx512f"}) == "avx2"
    assert isa.choose("auto", {"avx", "sse2"}) is None  # AVX without FMA: BLAS
    assert isa.choose("auto", {"neon"}) is None  # NEON tiles only on request
    assert isa.choose("neon", {"neon"}) == "neon"
    assert isa.choose("avx2", X86) == "avx2" and isa.choose("none", X86) is None


@pytest.mark.parametrize("setting, message", [("avx512", "lacks avx512f"), ("sse", "must be auto, none or one of")])
def test_an_isa_the_target_cannot_run_is_refused_by_name(setting, message):
    with pytest.raises(ValueError, match=message) as error:
        isa.choose(setting, X86 - {"avx512f"})
    assert "FASTBP_ISA" in str(error.value)


def test_this_process_compiles_the_tiles_of_the_chosen_isa():
    assert tiles.ISA == isa.choose() and tiles.AVAILABLE == TILED == (tiles.ISA is not None)
    if tiles.AVAILABLE:
        width, registers, _ = isa.ISAS[tiles.ISA]
        assert (tiles.VECTOR_BYTES, (tiles.ROWS, tiles.VECTORS)) == (width, isa.tile_shape(width, registers))


def test_the_avx2_environment_turns_off_every_avx512_feature():
    env = isa.environment("avx2", {})
    assert env["FASTBP_ISA"] == "avx2"
    on = {item[1:] for item in env["NUMBA_CPU_FEATURES"].split(",") if item.startswith("+")}
    assert not any(feature.startswith(("avx512", "avx10", "amx", "evex512")) for feature in on)
    assert isa.choose("auto", on) in ("avx2", None)


def test_without_tiles_a_threaded_step_leaves_blas_its_own_pool_alone():
    """Where the products go to BLAS, the serial epoch runs no parallel
    region of its own, and the data-parallel epoch runs BLAS on one
    thread: never two pools in one step."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastbp.backends.cpu import epoch_function

    model = fastbp.MLP([64, 64, 64, 3], seed=0)
    _, context = epoch_function(model, 1024)
    with context():
        inside = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    import numba
    if numba.get_num_threads() > 1:
        assert inside and max(inside) == 1, inside
    if not TILED:
        assert not split_passes(model.n_params, 1 << 20)


# the tests of every kernel the ISA shapes, against torch and across thread counts and paths (the
# model-level tests run their kernels through these)
CHECKED = ["tests/kernels/test_tiles.py", "tests/kernels/test_kernels.py", "tests/kernels/test_speed_paths.py",
           "tests/backends/test_fused.py", "tests/kernels/test_isa.py"]


def other_isas():
    if os.environ.get(isa.SETTING):
        return []  # a child run itself
    runnable = isa.supported(isa.host_features())
    return [name for name in ("avx2", "none") if name != isa.NAME and (name == "none" or name in runnable)]


def _isa_job(name):
    key = f"isa:{name}"
    background.declare(key, [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CHECKED],
                       isa.environment(name), ROOT, timeout=2400)
    return pytest.param(name, marks=background.mark(key))


@pytest.mark.parametrize("name", [_isa_job(name) for name in other_isas()])
def test_every_correctness_test_passes_on_every_isa_this_cpu_runs(name):
    result = background.result(f"isa:{name}")
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout and " failed" not in result.stdout, tail
