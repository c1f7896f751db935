"""``fastbp bench --inference``: every framework predicts in its own process,
from the same weights and input, and all compute the same logits. Timings
are never asserted: the machines are noisy."""
import json

import numpy as np
import pytest

from kernels import isa as kernels_isa
from fastbp import cli
from fastbp.cli.bench import harness, inference
from tests.conftest import assert_close

# what must never be loaded next to each framework (top-level module names)
_FORBIDDEN = {
    "fastbp": {"torch", "onnxruntime", "onnx", "jax"},
    "onnxruntime": {"fastbp", "kernels", "numba", "torch", "jax"},
    "torch": {"fastbp", "kernels", "numba", "onnxruntime", "onnx", "jax"},
}
# two hidden layers of odd widths: a missing Relu, bias or transpose shows
_SIZES = (6, 33, 17, 3)
_CEILING = {"gflops": 100.0, "blas_gflops": 90.0, "fastbp_gflops": 100.0, "n": 2048, "threads": {"openblas": 1},
            "vector": {"SciPy's BLAS": "test", "fastbp's gemm": "test"}}
# float32 logits of three libraries agree to a few roundings of their sums
_TOLERANCE = {"float32": {"atol": 1e-5, "rtol": 1e-4}, "float64": {"atol": 1e-12, "rtol": 1e-10}}


@pytest.fixture
def quick(monkeypatch):
    """Short rounds, and a stated sgemm ceiling instead of a measured one."""
    monkeypatch.setattr(inference, "ROUND_SECONDS", 0.01)
    monkeypatch.setattr(harness, "sgemm_ceiling", lambda threads, isa=None: _CEILING)


def assert_same_logits(row):
    """Every framework's output, as its runner reported it, within the
    dtype's tolerance of fastbp's."""
    runs = {name: runs[0] for name, runs in row["rounds"].items()}
    reference = runs["fastbp"]
    assert reference["shape"] == [row["batch"], row["sizes"][-1]] and reference["abs_sum"] > 0
    for name, run in runs.items():
        assert run["shape"] == reference["shape"], name
        assert_close(f"{name} first row", row["dtype"], run["first_row"], reference["first_row"],
                     _TOLERANCE[row["dtype"]])
        assert_close(f"{name} sum of |logits|", row["dtype"], run["abs_sum"], reference["abs_sum"],
                     _TOLERANCE[row["dtype"]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_framework_predicts_alone_in_a_fresh_process_and_all_give_the_same_logits(dtype, monkeypatch):
    monkeypatch.setattr(inference, "ROUND_SECONDS", 0.01)
    frameworks = ["fastbp"] + inference.peers()
    row = inference.measure(_SIZES, 5, frameworks, rounds=1, threads=1, dtype=dtype)
    runs = [runs[0] for runs in row["rounds"].values()]
    assert len({run["pid"] for run in runs}) == len(runs) == len(frameworks)
    for run in runs:
        assert not _FORBIDDEN[run["framework"]] & set(run["modules"]), run["framework"]
        assert set(run["threads"].values()) == {1}, run["threads"]
        assert run["n_calls"] >= 1 and run["call_seconds"] == run["seconds"] / run["n_calls"]
    assert_same_logits(row)


def test_the_onnx_graph_is_gemm_and_relu_per_layer_with_logits_out():
    pytest.importorskip("onnx")
    import onnx

    from fastbp.cli.bench import inference_runners, runners

    model = inference_runners.onnx_model(runners.initial_parameters(_SIZES, np.float32))
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert all(onnx.helper.get_attribute_value(node.attribute[0]) == 1 for node in model.graph.node
               if node.op_type == "Gemm")
    assert ([value.name for value in model.graph.input], [value.name for value in model.graph.output]) == (
        ["input"], ["output"])


def test_flops_count_two_per_multiply_add():
    # 3-4-2, batch 5: 2*5*(12+8)
    assert inference.flops_per_call((3, 4, 2), 5) == 200


def test_measure_interleaves_rounds_and_reports_rows_gflops_and_ratios(monkeypatch):
    calls = []
    call_seconds = {"fastbp": [2.0, 4.0, 3.0], "onnxruntime": [6.0, 8.0, 30.0], "torch": [1.5, 1.5, 1.5]}

    def fake_run(spec, runner):
        assert runner == inference.RUNNER
        calls.append(spec["framework"])
        return {"framework": spec["framework"], "call_seconds": call_seconds[spec["framework"]][
            calls.count(spec["framework"]) - 1]}
    monkeypatch.setattr(harness, "run_process", fake_run)
    row = inference.measure((3, 4, 2), 5, ["fastbp", "onnxruntime", "torch"], rounds=3, ceiling_gflops=1e-9)
    assert calls == ["fastbp", "onnxruntime", "torch"] * 3
    fastbp = row["frameworks"]["fastbp"]
    assert (fastbp["median_s"], fastbp["min_s"], fastbp["max_s"]) == (3.0, 2.0, 4.0)
    assert fastbp["rows_per_s"] == pytest.approx(5 / 3.0) and fastbp["gflops"] == pytest.approx(200 / 3.0 / 1e9)
    assert fastbp["fraction_of_ceiling"] == pytest.approx(200 / 3.0)
    assert row["ratios"] == pytest.approx({"onnxruntime": 8.0 / 3.0, "torch": 0.5})
    assert [run["call_seconds"] for run in row["rounds"]["onnxruntime"]] == call_seconds["onnxruntime"]


def test_bench_inference_prints_a_line_per_framework_and_writes_every_round(tmp_path, capsys, quick):
    json_path = tmp_path / "inference.json"
    code = cli.main(["bench", "--inference", "--sizes", ",".join(map(str, _SIZES)), "--batch", "1,5",
                     "--rounds", "2", "--threads", "1", "--quiet", "--json", str(json_path)])
    assert code == 0
    out = capsys.readouterr().out
    frameworks = ["fastbp"] + inference.peers()
    assert out.startswith(f"CPU: {harness.cpu_description()}\nsgemm ceiling: 100.0 GFLOP/s")
    assert "threads: 1 for every framework" in out and "median [min-max] of the rounds" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config "))
    table = lines[start:lines.index("", start)]
    assert table[0].split() == ["config", "batch", "framework", "us/call", "[min-max]", "rows/s", "GFLOP/s",
                                "%", "ceiling", "peer/fastbp"]
    lines = [line.split() for line in table[2:]]
    assert [line[:3] for line in lines] == [["6-33-17-3", batch, name] for batch in ("1", "5") for name in frameworks]
    assert all(line[-1].endswith("%") for line in lines if line[2] == "fastbp")
    assert all(line[-1].endswith("x") for line in lines if line[2] != "fastbp")
    result = json.loads(json_path.read_text())
    assert (result["mode"], result["threads"], result["rounds"], result["dtype"]) == ("inference", 1, 2, "float32")
    assert result["ceiling"] == _CEILING
    assert [(row["sizes"], row["batch"]) for row in result["rows"]] == [(list(_SIZES), 1), (list(_SIZES), 5)]
    for row in result["rows"]:
        assert list(row["rounds"]) == list(row["frameworks"]) == frameworks
        assert set(row["ratios"]) == set(frameworks[1:])
        assert set(row["frameworks"]["fastbp"]) == {"median_s", "min_s", "max_s", "rows_per_s", "gflops",
                                                   "fraction_of_ceiling"}
        assert all(len(runs) == 2 for runs in row["rounds"].values())
        assert_same_logits(row)
    pids = [run["pid"] for row in result["rows"] for runs in row["rounds"].values() for run in runs]
    assert len(set(pids)) == len(pids)  # a fresh process for every framework, batch and round


def test_a_missing_peer_is_skipped_with_a_note(tmp_path, capsys, quick, monkeypatch):
    monkeypatch.setattr(inference, "peers", lambda: [])
    code = cli.main(["bench", "--inference", "--sizes", "4,3", "--batch", "2", "--rounds", "1", "--threads", "1",
                     "--quiet", "--json", str(tmp_path / "i.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "note: ONNX Runtime is not installed, so it is not timed (pip install 'fastbp[onnx]')" in out
    assert "note: torch is not installed, so it is not timed (pip install 'fastbp[torch]')" in out
    (row,) = json.loads((tmp_path / "i.json").read_text())["rows"]
    assert list(row["rounds"]) == ["fastbp"] and row["ratios"] == {}


def test_inference_runs_both_configs_at_three_batches_five_rounds_two_threads_by_default(monkeypatch, tmp_path):
    args = cli.build_parser().parse_args(["bench", "--inference", "--batch", "1,64", "--dtype", "float64"])
    assert (args.inference, args.batch, args.dtype) == (True, [1, 64], "float64")
    calls, ceilings = [], []

    def fake_measure(sizes, batch, frameworks, **options):
        calls.append((sizes, batch, options["rounds"], options["threads"], options["dtype"]))
        return {"config": "-", "batch": batch, "frameworks": {}, "rounds": {}, "ratios": {}}
    monkeypatch.setattr(inference, "measure", fake_measure)
    monkeypatch.setattr(harness, "sgemm_ceiling", lambda threads, isa=None: ceilings.append(threads) or _CEILING)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--inference", "--quiet"]) == 0
    assert calls == [(sizes, batch, 5, 2, "float32") for sizes in ((64, 256, 128, 10), (784, 512, 512, 10))
                     for batch in (1, 64, 10_000)]
    assert ceilings == [2] and json.loads((tmp_path / "fastbp-bench-inference.json").read_text())["rounds"] == 5


@pytest.mark.parametrize("argv, message", [
    (["--inference", "--optimizer", "sgd"], "--optimizer: not used with --inference"),
    (["--inference", "--configs", "tiny", "--startup"], "--configs, --startup: not used with --inference"),
    (["--inference", "--activation", "tanh"], "--activation tanh: not used with --inference, which times ReLU"),
    (["--sizes", "4,2", "--batch", "1,64"], "--batch takes one batch size, or several with --inference"),
    (["--inference", "--batch", "1,0"], "every batch must be a positive integer, got '1,0'"),
])
def test_bench_inference_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_inference_refuses_what_does_not_fit_or_cannot_run(monkeypatch, capsys, tmp_path):
    sizes, batch = (100000, 100000, 100000), 4096
    assert cli.main(["bench", "--inference", "--sizes", "100000,100000,100000", "--batch", "1,4096",
                     "--json", str(tmp_path / "i.json")]) == 2
    needed = inference.bytes_needed(sizes, batch)
    assert f"needs about {needed:,} bytes" in capsys.readouterr().err and not (tmp_path / "i.json").exists()
    monkeypatch.setattr(kernels_isa, "host_features", lambda: {"sse2", "avx2", "fma"})
    assert cli.main(["bench", "--inference", "--isa", "avx512", "--json", str(tmp_path / "i.json")]) == 2
    assert "--isa avx512: this CPU cannot run it (it runs: avx2, none)" in capsys.readouterr().err
