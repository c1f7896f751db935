"""Prediction benchmarks (``fastbp bench --inference``): fastbp's
``MLP.predict`` against ONNX Runtime and torch eager under
``torch.inference_mode()``, measured as ``harness`` measures training steps.

Every framework runs in a fresh process of its own per config, batch and
round (``inference_runners.py``), with the thread settings of
``harness.thread_environment``; rounds are interleaved (fastbp, ONNX
Runtime, torch, fastbp, ...). In each round a process warms up, then times
one block of calls lasting about ROUND_SECONDS; the round's figure is the
block's time over its calls. A framework's figure is the median of its
rounds, its spread their min-max, and each peer's ratio its median over
fastbp's: above 1, fastbp is faster.
"""
import importlib.util
import os

from fastbp.cli.bench import harness

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inference_runners.py")
CONFIGS = ((64, 256, 128, 10), (784, 512, 512, 10))
BATCHES = (1, 64, 10_000)
ROUND_SECONDS = 0.3
_NAMES = {"fastbp": "fastbp", "onnxruntime": "onnxruntime", "torch": "torch"}


def peers():
    """The installed peers, found without importing them (this process must
    not start their thread pools); ONNX Runtime needs onnx too, to build
    the graph."""
    found = ["onnxruntime"] if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx") else []
    return found + (["torch"] if importlib.util.find_spec("torch") else [])


def flops_per_call(sizes, batch):
    """2 flops per multiply-add of the dense layers; biases and activations
    are left out."""
    return 2 * batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def bytes_needed(sizes, batch, itemsize=4):
    """Memory of one framework's process: the weights four times over (the
    drawn arrays, the framework's own, and for ONNX Runtime the graph and its
    serialised bytes), the input, the two widest activations and the output."""
    n_params = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return itemsize * (4 * n_params + batch * (sizes[0] + 2 * max(sizes[1:]) + sizes[-1]))


def check_fits_in_memory(sizes, batch, itemsize=4):
    needed, available = bytes_needed(sizes, batch, itemsize), harness.available_bytes()
    if available is not None and needed > available:
        raise MemoryError(f"{'-'.join(map(str, sizes))} at batch {batch:,} needs about {needed:,} bytes, "
                          f"{available:,} are available; choose smaller --sizes or --batch")
    return needed


def measure(sizes, batch, frameworks, rounds=5, threads=2, dtype="float32", ceiling_gflops=None, progress=None,
            isa=None):
    """One row: ``rounds`` interleaved rounds of every framework at one
    config and batch, each round in a fresh process, every round kept."""
    config = "-".join(map(str, sizes))
    spec = {"sizes": list(sizes), "batch": batch, "dtype": dtype, "threads": threads, "seconds": ROUND_SECONDS,
            "isa": isa}
    results = {name: [] for name in frameworks}
    for round_index in range(rounds):
        for name in frameworks:
            if progress:
                progress(f"{config} batch {batch} round {round_index + 1}/{rounds}: {name}")
            results[name].append(harness.run_process({**spec, "framework": name}, RUNNER))
    flops = flops_per_call(sizes, batch)
    summaries = {}
    for name, runs in results.items():
        summary = harness.summarize([run["call_seconds"] for run in runs])
        summary.update(rows_per_s=batch / summary["median_s"], gflops=flops / summary["median_s"] / 1e9)
        if ceiling_gflops:
            summary["fraction_of_ceiling"] = summary["gflops"] / ceiling_gflops
        summaries[name] = summary
    return {"config": config, "sizes": list(sizes), "batch": batch, "dtype": dtype, "threads": threads,
            "flops_per_call": flops, "frameworks": summaries, "rounds": results, **harness.compare(summaries)}


def format_table(rows):
    """One line per config, batch and framework: the median time per call
    (us) with the [min-max] of the rounds, rows/s, GFLOP/s, % of the sgemm
    ceiling, and for a peer its time over fastbp's."""
    header = ["config", "batch", "framework", "us/call [min-max]", "rows/s", "GFLOP/s", "% ceiling", "peer/fastbp"]
    cells = []
    for row in rows:
        for name, summary in row["frameworks"].items():
            ceiling = summary.get("fraction_of_ceiling")
            cells.append([row["config"], f"{row['batch']:,}", _NAMES[name],
                          f"{harness._time(summary['median_s'])} "
                          f"[{harness._time(summary['min_s'])}-{harness._time(summary['max_s'])}]",
                          f"{summary['rows_per_s']:,.0f}", f"{summary['gflops']:.2f}",
                          f"{100 * ceiling:.1f}%" if ceiling else "",
                          f"{row['ratios'][name]:.2f}x" if name in row["ratios"] else ""])
    widths = [max(len(line[i]) for line in cells + [header]) for i in range(len(header))]
    left = (0, 2)  # the names; the figures are right-aligned
    text = ["  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            .rstrip() for line in [header] + cells]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)
