"""``fastbp bench``: every framework in its own process, the same step for
all, the figures aggregated as stated. Timings are never asserted: the
machines are noisy."""
import importlib.util
import json

import pytest

from kernels import isa as kernels_isa
from fastbp import cli
from fastbp.cli.bench import command, harness

# what must never be loaded next to each framework (top-level module names)
_FORBIDDEN = {
    "fastbp": {"torch", "jax", "jaxlib", "optax"},
    "torch": {"fastbp", "kernels", "numba", "jax", "jaxlib", "optax"},
    "jax": {"fastbp", "kernels", "numba", "torch"},
}
_SMALL = harness.Config("test", (4, 8, 3), 5)


@pytest.fixture
def short_rounds(monkeypatch):
    monkeypatch.setattr(harness, "ROUND_SECONDS", 0.01)


def test_each_framework_runs_alone_in_a_fresh_process_with_the_threads_asked(short_rounds):
    frameworks = ["fastbp"] + harness.peers()
    row = harness.measure(_SMALL, "adam", frameworks, rounds=1, threads=1, ceiling_gflops=1.0)
    runs = [run for name in frameworks for run in row["rounds"][name]]
    assert len({run["pid"] for run in runs}) == len(runs) == len(frameworks)
    for run in runs:
        assert not _FORBIDDEN[run["framework"]] & set(run["modules"]), run["framework"]
        assert run["threads"] and set(run["threads"].values()) - {1} <= {
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}, run["threads"]
    # the same initial weights, batches and updates: the same mean loss over the first block
    losses = [run["first_call_loss"] for run in runs]
    assert max(losses) - min(losses) < 1e-5 * max(losses)


@pytest.mark.parametrize("residual", [False, True])
def test_every_framework_trains_the_same_norms_and_residual_blocks(short_rounds, residual):
    frameworks = ["fastbp"] + harness.peers()
    config = harness.Config("test", (4, 8, 8, 3), 5)
    row = harness.measure(config, "adam", frameworks, rounds=1, threads=1, ceiling_gflops=1.0, norm="layer",
                          residual=residual)
    losses = [row["rounds"][name][0]["first_call_loss"] for name in frameworks]
    # float32 steps through the norms' statistics: equal to rounding, compounded over the block's steps
    assert max(losses) - min(losses) < 3e-4 * max(losses)
    plain = harness.measure(config, "adam", ["fastbp"], rounds=1, threads=1, ceiling_gflops=1.0)
    assert abs(plain["rounds"]["fastbp"][0]["first_call_loss"] - losses[0]) > 1e-3 * losses[0]
    assert (row["norm"], row["residual"]) == ("layer", residual)
    # a residual 4-8-8-3: 4x8, a block per hidden width with two 8x8 each, 8x3
    assert row["flops_per_step"] == (2 * 5 * (3 * (32 + 4 * 64 + 24) - 32) if residual else config.flops_per_step)
    # dropout draws other masks in each framework: the same layers, other numbers
    row = harness.measure(config, "sgd", frameworks, rounds=1, threads=1, ceiling_gflops=1.0, dropout=0.5,
                          residual=residual)
    assert all(row["rounds"][name][0]["first_call_loss"] > 0 for name in frameworks)


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="JAX is not installed")
def test_jax_is_a_peer_when_installed_and_a_single_output_uses_binary_cross_entropy(short_rounds):
    row = harness.measure(harness.CONFIGS["tiny"], "sgd", ["fastbp", "jax"], rounds=1, threads=1,
                            ceiling_gflops=1.0)
    fastbp_loss, jax_loss = (row["rounds"][name][0]["first_call_loss"] for name in ("fastbp", "jax"))
    assert fastbp_loss > 0.1  # a softmax over one class would give 0
    assert jax_loss == pytest.approx(fastbp_loss, rel=1e-5)


def test_flops_per_step_counts_no_input_gradient():
    # 3-4-2, batch 5: forward 2*5*(12+8) = 200, dW 2*5*(12+8) = 200, dx of the second layer only 2*5*8 = 80
    assert harness.Config("x", (3, 4, 2), 5).flops_per_step == 480
    # 784-128-10, batch 64: 2*64*(3*(100352+1280) - 100352)
    assert harness.CONFIGS["small"].flops_per_step == 26_181_632


def test_summary_is_the_median_and_min_max_of_the_rounds_and_the_ratio_is_over_the_best_peer():
    assert harness.summarize([3.0, 1.0, 2.0, 10.0]) == {"median_s": 2.5, "min_s": 1.0, "max_s": 10.0}
    summaries = {"fastbp": {"median_s": 2.0}, "torch": {"median_s": 5.0}, "jax": {"median_s": 3.0}}
    assert harness.compare(summaries) == {"ratios": {"torch": 2.5, "jax": 1.5}, "best_peer": "jax", "ratio": 1.5}
    assert harness.compare({"fastbp": {"median_s": 2.0}}) == {"ratios": {}, "best_peer": None, "ratio": None}


def test_measure_interleaves_rounds_and_keeps_every_block(monkeypatch):
    calls = []
    blocks = {"fastbp": [[1.0, 9.0, 2.0], [4.0, 4.0, 5.0], [3.0, 3.0, 3.0]],
              "torch": [[8.0, 8.0, 8.0], [6.0, 7.0, 6.0], [30.0, 1.0, 30.0]]}

    def fake_run(spec):
        calls.append(spec["framework"])
        round_index = calls.count(spec["framework"]) - 1
        return {"framework": spec["framework"], "step_seconds": blocks[spec["framework"]][round_index]}
    monkeypatch.setattr(harness, "run_process", fake_run)
    row = harness.measure(_SMALL, "sgd", ["fastbp", "torch"], rounds=3, ceiling_gflops=1.0)
    assert calls == ["fastbp", "torch"] * 3
    # round medians: fastbp 2, 4, 3; torch 8, 6, 30
    assert row["frameworks"]["fastbp"] == {"median_s": 3.0, "min_s": 2.0, "max_s": 4.0}
    assert row["frameworks"]["torch"] == {"median_s": 8.0, "min_s": 6.0, "max_s": 30.0}
    assert row["ratio"] == pytest.approx(8.0 / 3.0) and row["best_peer"] == "torch"
    assert [run["step_seconds"] for run in row["rounds"]["fastbp"]] == blocks["fastbp"]


def test_bench_options_parse():
    args = cli.build_parser().parse_args(
        ["bench", "--configs", "tiny,wide", "--optimizer", "adam", "--activation", "tanh", "--dtype", "float64",
         "--threads", "1", "--rounds", "5", "--torch-compile"])
    assert (args.configs, args.optimizer, args.activation, args.dtype, args.threads, args.rounds,
            args.torch_compile) == (["tiny", "wide"], ["adam"], "tanh", "float64", 1, 5, True)
    args = cli.build_parser().parse_args(["bench", "--sizes", "64,32,10", "--batch", "16"])
    assert command.bench_configs(args) == [harness.Config("custom", (64, 32, 10), 16)]
    sweep = command.bench_configs(cli.build_parser().parse_args(["bench", "--sweep"]))
    assert {(c.sizes, c.batch) for c in sweep} == {((64, w, w, 10), b) for w in (16, 64, 256, 1024)
                                                   for b in (32, 128, 512)}


def test_thread_environment_sets_every_library():
    env = harness.thread_environment(3)
    assert all(env[name] == "3" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    assert "intra_op_parallelism_threads=3" in env["XLA_FLAGS"]


def test_an_avx2_run_holds_every_framework_to_avx2():
    env = harness.thread_environment(2, "avx2")
    assert env["FASTBP_ISA"] == "avx2" and "--xla_cpu_max_isa=AVX2" in env["XLA_FLAGS"]
    assert all(env[name] == value for name, value in harness.AVX2_PEERS.items())
    assert "+avx512f" not in env["NUMBA_CPU_FEATURES"].split(",")
    assert "intra_op_parallelism_threads=2" in env["XLA_FLAGS"] and env["NUMBA_NUM_THREADS"] == "2"
    none = harness.thread_environment(2, "none")
    assert none["FASTBP_ISA"] == "none" and "--xla_cpu_max_isa" not in none["XLA_FLAGS"]


def test_bench_without_tiles_says_so_and_names_the_cpu(tmp_path, capsys, short_rounds):
    code = cli.main(["bench", "--configs", "tiny", "--optimizer", "sgd", "--rounds", "1", "--threads", "1",
                     "--isa", "none", "--quiet", "--json", str(tmp_path / "b.json"), "--png", str(tmp_path / "b.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"CPU: {harness.cpu_description()}; fastbp forced to its no-tile path")
    (fastbp_vector,) = [line for line in out.splitlines() if line.startswith("  fastbp: tiles")]
    assert "tiles none (products through BLAS)" in fastbp_vector
    assert json.loads((tmp_path / "b.json").read_text())["isa"] == "none"


def test_bench_refuses_an_isa_this_cpu_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(kernels_isa, "host_features", lambda: {"sse2", "avx2", "fma"})
    assert cli.main(["bench", "--isa", "avx512", "--configs", "tiny"]) == 2
    assert "--isa avx512: this CPU cannot run it (it runs: avx2, none)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--configs", "tiny,nosuch"], "unknown config 'nosuch'; valid names: tiny, small, narrow, medium, wide"),
    (["--batch", "32"], "--batch sets the batch of a custom config: give --sizes too"),
    (["--sweep", "--sizes", "4,2"], "not allowed with argument"),
    (["--threads", "0"], "expected a positive integer, got 0"),
    (["--activation", "identity"], "invalid choice: 'identity'"),
])
def test_bench_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_refuses_a_config_too_large_for_memory(capsys, tmp_path):
    json_path = tmp_path / "out.json"
    code = cli.main(["bench", "--sizes", "100000,100000,100000", "--batch", "4096", "--json", str(json_path)])
    assert code == 2
    message = capsys.readouterr().err
    needed = harness.bytes_needed(harness.Config("custom", (100000, 100000, 100000), 4096))
    assert f"needs about {needed:,} bytes" in message and "choose smaller --sizes or --batch" in message
    assert not json_path.exists()


def test_bench_prints_the_table_and_threads_and_writes_every_round(tmp_path, capsys, short_rounds):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    code = cli.main(["bench", "--configs", "tiny", "--optimizer", "sgd", "--rounds", "2", "--threads", "1",
                     "--quiet", "--json", str(json_path), "--png", str(png_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "threads: 1 for every framework" in out
    assert out.startswith("CPU: ") and "vector code each process reported:" in out
    # fastbp's own threads (Numba's OpenMP pool) and the BLAS's, both capped
    fastbp_pools, fastbp_vector = [line for line in out.splitlines() if line.startswith("  fastbp: ")]
    assert fastbp_vector.startswith("  fastbp: tiles ")
    assert set(fastbp_pools[len("  fastbp: "):].split(", ")) == {"openmp 1", "openblas 1"}
    assert "median [min-max] of the rounds' medians" in out
    result = json.loads(json_path.read_text())
    (row,) = result["rows"]
    assert row["config"] == "tiny" and row["optimizer"] == "sgd" and result["ceiling"]["gflops"] > 0
    frameworks = ["fastbp"] + harness.peers()
    assert list(row["rounds"]) == frameworks
    assert all(len(row["rounds"][name]) == 2 and len(row["rounds"][name][0]["step_seconds"]) >= 3
               for name in frameworks)
    pids = [run["pid"] for runs in row["rounds"].values() for run in runs]
    assert len(set(pids)) == len(pids)  # a fresh process for every framework and round
    pytest.importorskip("matplotlib")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ceiling_is_the_faster_gemm_each_timed_in_a_process_of_its_own(monkeypatch):
    seen = []
    run_process = harness.run_process

    def recording(spec):
        result = run_process(spec)
        seen.append(result)
        return result

    monkeypatch.setattr(harness, "run_process", recording)
    ceiling = harness.sgemm_ceiling(1)
    blas, own = seen
    assert (blas["framework"], own["framework"]) == ("sgemm", "gemm")
    assert blas["pid"] != own["pid"] and "kernels" in own["modules"] and "kernels" not in blas["modules"]
    assert ceiling["gflops"] == max(blas["gflops"], own["gflops"])
    assert (ceiling["blas_gflops"], ceiling["fastbp_gflops"]) == (blas["gflops"], own["gflops"])


def test_step_times_keep_their_digits_below_a_microsecond():
    assert harness._time(6.8e-8) == "0.068"
    assert harness._time(1.234e-4) == "123.4"
    assert harness._time(0.0812) == "81200"
