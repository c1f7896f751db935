"""One framework's timing of predictions (forward only), in a process of its own.

``fastbp bench --inference`` runs this file as a script once per framework,
config, batch and round, as ``fastbp bench`` runs ``runners.py``: the spec
comes as JSON on stdin, one JSON object goes out on stdout, and only the
standard library, NumPy and the one framework are imported.

Every framework gets the same weights (``runners.initial_parameters``) and
the same input, drawn from seeded generators, and computes the logits of a
ReLU network (identity output, no softmax), each through the call a user
makes: ``model.predict(x)`` (fastbp), ``session.run(None, {"input": x})``
(ONNX Runtime, the graph a Gemm with transB=1 and a Relu per layer, built
here with ``onnx.helper``), ``model(x)`` (torch eager, under one
``torch.inference_mode()`` per timed round, as a serving loop enters it).
"""
import importlib.util
import json
import os
import sys
import time

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # as in runners.py: this folder's modules must not shadow others

import numpy as np


def _load_training_runners():
    """runners.py, loaded from its file: importing it as
    fastbp.cli.bench.runners would load fastbp into the peers' processes."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runners.py")
    spec = importlib.util.spec_from_file_location("fastbp_bench_runners", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runners = _load_training_runners()
FRAMEWORKS = ("fastbp", "onnxruntime", "torch")


def _fastbp(spec, x, initial):
    import fastbp

    model = fastbp.MLP(spec["sizes"], activation="relu", dtype=spec["dtype"])
    for (W, b), (W0, b0) in zip(model.params, initial):
        W[...], b[...] = W0, b0

    def run(n_calls):
        for _ in range(n_calls):
            out = model.predict(x)
        return out
    return run, runners.limit_threads(spec["threads"]), runners.fastbp_vector()


def onnx_model(initial):
    """The network as an ONNX model: per layer Gemm(x, W, b, transB=1), that
    is x @ W.T + b with W (n_out, n_in) as fastbp keeps it, then Relu on every
    layer but the last; input "input" (batch, n_in), output "output"
    (batch, n_out), the logits."""
    from onnx import TensorProto, helper, numpy_helper

    element = TensorProto.DOUBLE if initial[0][0].dtype == np.float64 else TensorProto.FLOAT
    nodes, weights, current = [], [], "input"
    for index, (W, b) in enumerate(initial):
        last = index == len(initial) - 1
        weights += [numpy_helper.from_array(W, f"W{index}"), numpy_helper.from_array(b, f"b{index}")]
        z = "output" if last else f"z{index}"
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"b{index}"], [z], transB=1))
        current = z
        if not last:
            current = f"a{index}"
            nodes.append(helper.make_node("Relu", [z], [current]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", element, ["batch", initial[0][0].shape[1]])],
        [helper.make_tensor_value_info("output", element, ["batch", initial[-1][0].shape[0]])], weights)
    # opset 17 with its IR version 8: what ONNX Runtime has read since 1.13
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _onnxruntime(spec, x, initial):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = spec["threads"], 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(onnx_model(initial).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])

    def run(n_calls):
        for _ in range(n_calls):
            out = session.run(None, {"input": x})
        return out[0]
    threads = {"ort intra-op": options.intra_op_num_threads, "ort inter-op": options.inter_op_num_threads,
               **runners.limit_threads(spec["threads"])}
    # MLAS picks its kernels from the CPU; no setting holds them to an ISA
    return run, threads, {"MLAS": "host ISA", **runners.blas_kernels()}


def _torch(spec, x, initial):
    import torch

    torch.set_num_threads(spec["threads"])
    layers = []
    for index, (W0, b0) in enumerate(initial):
        linear = torch.nn.Linear(W0.shape[1], W0.shape[0], dtype=getattr(torch, spec["dtype"]))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W0))
            linear.bias.copy_(torch.from_numpy(b0))
        layers += [linear] if index == len(initial) - 1 else [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers).eval()
    x = torch.from_numpy(x)

    def run(n_calls):
        with torch.inference_mode():
            for _ in range(n_calls):
                out = model(x)
        return out.numpy()
    threads = {"torch intra-op": torch.get_num_threads(), **runners.limit_threads(spec["threads"])}
    vector = {"capability": torch.backends.cpu.get_cpu_capability(), **runners.blas_kernels(),
              **{name: os.environ[name] for name in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
                 if name in os.environ}}
    return run, threads, vector


def _seconds(run, n_calls):
    start = time.perf_counter()
    run(n_calls)
    return time.perf_counter() - start


def time_predictions(spec):
    """The first call (compilation, cache loading: ``first_call_s``), then
    blocks of calls doubling until one lasts a fifth of ``seconds`` (the
    warm-up, and the estimate of a call), then one timed block of the
    number of calls that lasts about ``seconds``: ``call_seconds`` is its
    time over its calls."""
    dtype = np.dtype(spec["dtype"])
    initial = runners.initial_parameters(spec["sizes"], dtype)
    x = np.random.default_rng(1).standard_normal((spec["batch"], spec["sizes"][0])).astype(dtype)
    setup = {"fastbp": _fastbp, "onnxruntime": _onnxruntime, "torch": _torch}[spec["framework"]]
    run, threads, vector = setup(spec, x, initial)
    start = time.perf_counter()
    out = run(1)
    first_call = time.perf_counter() - start
    n_calls = 1
    while (elapsed := _seconds(run, n_calls)) < spec["seconds"] / 5:
        n_calls *= 2
    n_calls = max(1, round(spec["seconds"] * n_calls / elapsed))
    cpu_begun = _cpu_seconds()
    seconds = _seconds(run, n_calls)
    return {"first_call_s": first_call, "n_calls": n_calls, "seconds": seconds, "call_seconds": seconds / n_calls,
            # CPU time over wall time: the cores the framework kept busy, whatever it was told
            "cores_busy": (_cpu_seconds() - cpu_begun) / seconds, "threads": threads, "vector": vector,
            # what it computed, for the frameworks' outputs to be compared
            "shape": list(out.shape), "first_row": out[0].tolist(),
            "abs_sum": float(np.abs(out).sum(dtype=np.float64))}


def _cpu_seconds():
    times = os.times()
    return times.user + times.system


def main():
    spec = json.load(sys.stdin)
    result = time_predictions(spec)
    result.update(framework=spec["framework"], pid=os.getpid(),
                  modules=sorted({name.split(".")[0] for name in sys.modules}))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
