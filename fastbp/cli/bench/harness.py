"""Training-step benchmarks of fastbp against its peers (torch eager, torch
.compile on request, JAX when installed), each framework timed in a fresh
process of its own, with the machine's sgemm rate as the ceiling.

A measurement is ``rounds`` rounds; a round runs every framework once, in
turn (fastbp, torch, JAX, fastbp, torch, JAX, ...), so that a machine's
slow minute hits all of them alike. In each round a framework's process
warms up, then times blocks of ``n_steps`` steps; the round's figure is the
median time per step over its blocks. A framework's figure is the median of
its rounds, and its spread the min-max of its rounds. The ratio is the best
peer's time over fastbp's: above 1, fastbp is faster.

On the GPU (``device="cuda"``) the peers are torch eager with TF32 off and
on; JAX is not timed there, and there is no sgemm ceiling.

The processes run ``runners.py``; see there what each framework runs.
"""
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from fastbp.cli.bench import runners
from kernels import isa as kernels_isa

RUNNER = runners.__file__
# every peer takes its blocks for about this long per round
ROUND_SECONDS = 0.5
# a block of n_steps steps should take about this long at the ceiling's rate
BLOCK_SECONDS = 0.05
# A block pays once for the call that runs it (Trainer.fit's checks, a
# jitted scan's dispatch: tens of microseconds); over 10,000 steps that is a
# few nanoseconds a step, even on a model whose step takes a few dozen.
MAX_STEPS = 10_000
# the batches of one round stay this small, whatever the config
DATA_BYTES = 64 * 2 ** 20


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple
    batch: int

    @property
    def flops_per_step(self):
        """Multiply-adds of the dense layers, 2 flops each: per weight and
        sample one in the forward, one for dW and one for dx in the backward,
        except the first layer, whose dx (the input's gradient) is never
        computed. Biases, activations, the loss and the update are left out."""
        return step_flops(self.sizes, self.batch)

    def label(self):
        return f"{'-'.join(map(str, self.sizes))} / {self.batch}"


def step_flops(sizes, batch, residual=False):
    """``Config.flops_per_step`` of the dense layers of ``runners.dense_shapes``."""
    weights = [n_in * n_out for n_in, n_out in runners.dense_shapes(sizes, residual)]
    return 2 * batch * (3 * sum(weights) - weights[0])


CONFIGS = {c.name: c for c in [
    Config("tiny", (1, 1), 1),
    Config("small", (784, 128, 10), 64),
    Config("narrow", (64, 64, 64, 64, 64, 3), 1024),
    Config("medium", (784, 512, 512, 10), 128),
    Config("wide", (1024, 4096, 4096, 10), 256),
]}
OPTIMIZERS = ("sgd", "adam")
SWEEP_WIDTHS = (16, 64, 256, 1024)
SWEEP_BATCHES = (32, 128, 512)


def sweep_configs():
    """64-w-w-10 for every sweep width and batch."""
    return [Config(f"w{width}b{batch}", (64, width, width, 10), batch)
            for width in SWEEP_WIDTHS for batch in SWEEP_BATCHES]


def peers(torch_compile=False, device="cpu"):
    """The installed peers, found without importing them (this process
    must not start their thread pools); on "cuda", torch twice, with TF32
    off and on, and no JAX."""
    found = []
    if importlib.util.find_spec("torch"):
        found += ["torch", "torch_tf32"] if device == "cuda" else ["torch"]
        found += ["torch_compile"] if torch_compile else []
    if device == "cpu" and importlib.util.find_spec("jax") and importlib.util.find_spec("optax"):
        found.append("jax")
    return found


def n_steps_for(config, ceiling_gflops, itemsize=4):
    """Steps per timed block: about BLOCK_SECONDS of work at the ceiling's
    rate, at least 2, at most MAX_STEPS, and the data within DATA_BYTES."""
    by_time = BLOCK_SECONDS * ceiling_gflops * 1e9 / config.flops_per_step
    by_memory = DATA_BYTES / (config.batch * config.sizes[0] * itemsize)
    return int(max(2, min(by_time, by_memory, MAX_STEPS)))


def bytes_needed(config, itemsize=4):
    """Memory of one framework's process: parameters, gradients and two
    optimizer moments, activations kept for backward, and two copies of the
    round's batches (JAX copies them onto its device)."""
    n_params = sum(a * b + b for a, b in zip(config.sizes[:-1], config.sizes[1:]))
    units = sum(config.sizes[1:])
    model = itemsize * (4 * n_params + 3 * config.batch * units + 2 * config.batch * max(config.sizes))
    step = config.batch * config.sizes[0] * itemsize
    return model + 2 * max(2 * step, min(DATA_BYTES, MAX_STEPS * step))


def available_bytes():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(config, itemsize=4):
    needed, available = bytes_needed(config, itemsize), available_bytes()
    if available is not None and needed > available:
        raise MemoryError(f"config {config.name!r} ({config.label()}) needs about {needed:,} bytes, "
                          f"{available:,} are available; choose smaller --sizes or --batch")
    return needed


def thread_environment(threads, isa=None):
    """The environment of every child: each library's thread count set
    before it loads (the runners also set it again from inside). With
    ``isa`` (a FASTBP_ISA value), fastbp's tiles are that ISA's; for
    "avx2", every framework is held to AVX2 as far as its settings allow
    (Numba's target features, OpenBLAS's kernels, torch's and MKL's
    dispatch, XLA's codegen), so that a machine with AVX-512 runs the
    comparison an AVX2 machine would."""
    env = dict(os.environ) if isa is None else kernels_isa.environment(isa)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                        f"intra_op_parallelism_threads={threads}")
    if isa == "avx2":
        env.update(AVX2_PEERS)
        env["XLA_FLAGS"] += " --xla_cpu_max_isa=AVX2"
    return env


# what holds torch, MKL, oneDNN and OpenBLAS to AVX2 (XLA takes a flag)
AVX2_PEERS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
              "OPENBLAS_CORETYPE": "Haswell"}


def cpu_description():
    """The CPU as ``lscpu`` names it, with its vector ISA:
    "AMD EPYC (family 26, model 2), x86_64, AVX-512"."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        pass
    vector = {"avx512": "AVX-512", "avx2": "AVX2 + FMA", "neon": "NEON"}.get(
        next(iter(kernels_isa.supported(kernels_isa.host_features())), None), "no AVX2 or NEON")
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    family = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    return ", ".join(part for part in (name + family, platform.machine(), vector) if part)


class Refused(RuntimeError):
    """A runner that cannot run its framework here (runners.Refused)."""


def run_process(spec, runner=RUNNER):
    """Run one measurement in a fresh process of ``runner`` (a script that
    reads the spec on stdin); its result as a dict."""
    result = subprocess.run([sys.executable, runner], input=json.dumps(spec), capture_output=True, text=True,
                            env=thread_environment(spec["threads"], spec.get("isa")))
    if result.returncode == runners.REFUSED:
        raise Refused(f"the {spec['framework']} runner: {result.stderr.strip()}")
    if result.returncode != 0:
        raise RuntimeError(f"the {spec['framework']} runner failed (exit status {result.returncode}):\n"
                           f"{result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def sgemm_ceiling(threads, isa=None):
    """The float32 GEMM rate a step's products could reach: the faster of
    SciPy's BLAS and fastbp's own ``kernels.gemm``, each measured in its own
    process (held to ``isa`` as ``thread_environment`` says)."""
    blas = run_process({"framework": "sgemm", "threads": threads, "isa": isa})
    own = run_process({"framework": "gemm", "threads": threads, "isa": isa})
    best = max(blas, own, key=lambda result: result["gflops"])
    vector = {"SciPy's BLAS": ", ".join(blas["vector"].values()) or "?", "fastbp's gemm": own["vector"]["tiles"]}
    return {**best, "blas_gflops": blas["gflops"], "fastbp_gflops": own["gflops"], "vector": vector}


def summarize(round_seconds):
    """A framework's figure from its per-round figures: the median, and the
    spread as the min and max of the rounds."""
    return {"median_s": statistics.median(round_seconds), "min_s": min(round_seconds),
            "max_s": max(round_seconds)}


def compare(summaries):
    """Each peer's median over fastbp's (above 1: fastbp is faster), and the
    best peer (the fastest) with its ratio; None without peers."""
    fastbp = summaries["fastbp"]["median_s"]
    ratios = {name: summary["median_s"] / fastbp for name, summary in summaries.items() if name != "fastbp"}
    best = min(ratios, key=ratios.get) if ratios else None
    return {"ratios": ratios, "best_peer": best, "ratio": ratios[best] if best else None}


def measure(config, optimizer, frameworks, rounds=3, threads=None, activation="relu", dtype="float32",
            ceiling_gflops=None, progress=None, device="cpu", isa=None, dropout=0.0, norm=None, residual=False):
    """One row: ``rounds`` interleaved rounds of every framework, each round
    in a fresh process, every round's blocks kept; fastbp and torch train on
    ``device``; ``dropout``, ``norm`` and ``residual`` as ``fastbp.MLP``
    takes them, the peers given the same layers."""
    threads = threads or os.cpu_count() or 1
    itemsize = 8 if dtype == "float64" else 4
    check_fits_in_memory(config, itemsize)
    n_steps = n_steps_for(config, ceiling_gflops or 100.0, itemsize)
    spec = {"sizes": list(config.sizes), "batch": config.batch, "optimizer": optimizer, "activation": activation,
            "dtype": dtype, "threads": threads, "n_steps": n_steps, "seconds": ROUND_SECONDS, "device": device,
            "isa": isa, "dropout": dropout, "norm": norm, "residual": residual}
    flops = step_flops(config.sizes, config.batch, residual)
    results = {name: [] for name in frameworks}
    for round_index in range(rounds):
        for name in frameworks:
            if progress:
                progress(f"{config.name} {optimizer} round {round_index + 1}/{rounds}: {name}")
            results[name].append(run_process({**spec, "framework": name}))
    summaries = {name: summarize([statistics.median(r["step_seconds"]) for r in runs])
                 for name, runs in results.items()}
    row = {"config": config.name, "sizes": list(config.sizes), "batch": config.batch, "optimizer": optimizer,
           "activation": activation, "dropout": dropout, "norm": norm, "residual": residual, "dtype": dtype,
           "device": device,
           "threads": threads, "n_steps": n_steps,
           "flops_per_step": flops, "frameworks": summaries, "rounds": results, **compare(summaries)}
    row["fastbp_gflops"] = flops / summaries["fastbp"]["median_s"] / 1e9
    if ceiling_gflops:
        row["fraction_of_ceiling"] = row["fastbp_gflops"] / ceiling_gflops
    return row


def thread_settings(rows, ceiling=None):
    """One line per framework: the thread pools its process reported."""
    seen = {}
    for row in rows:
        for name, runs in row["rounds"].items():
            seen.setdefault(name, runs[0]["threads"])
    if ceiling:
        seen["sgemm"] = ceiling["threads"]
    return "\n".join(f"  {name}: " + (", ".join(f"{pool} {count}" for pool, count in pools.items()) or "-")
                     for name, pools in seen.items())


def vector_settings(rows, ceiling=None):
    """One line per framework: the vector code its process reported using
    (fastbp's tiles, the BLAS kernels, torch's dispatch, XLA's flags)."""
    seen = {}
    for row in rows:
        for name, runs in row["rounds"].items():
            seen.setdefault(name, runs[0].get("vector", {}))
    if ceiling:
        seen["sgemm"] = ceiling.get("vector", {})
    return "\n".join(f"  {name}: " + (", ".join(f"{key} {value}" for key, value in found.items()) or "-")
                     for name, found in seen.items())


_NAMES = {"fastbp": "fastbp", "torch": "torch", "torch_tf32": "torch tf32", "torch_compile": "compiled",
          "jax": "jax"}


def _time(seconds):
    """Microseconds, to 3 decimals below 1 us (a tiny model's step is tens
    of nanoseconds), 1 below 10 ms, none above."""
    if seconds < 1e-6:
        return f"{seconds * 1e6:.3f}"
    return f"{seconds * 1e6:.1f}" if seconds < 1e-2 else f"{seconds * 1e6:.0f}"


def format_table(rows):
    """Median step time (us) and [min-max] of the rounds per framework, the
    best peer, its time over fastbp's, fastbp's GFLOP/s and % of the ceiling."""
    names = list(rows[0]["frameworks"])
    cells = []
    for row in rows:
        line = [row["config"], row["optimizer"]]
        for name in names:
            summary = row["frameworks"][name]
            line.append(f"{_time(summary['median_s'])} [{_time(summary['min_s'])}-{_time(summary['max_s'])}]")
        line.append(_NAMES.get(row["best_peer"], "n/a"))
        line.append(f"{row['ratio']:.2f}x" if row["ratio"] else "n/a")
        line.append(f"{row['fastbp_gflops']:.2f}")
        line.append(f"{100 * row['fraction_of_ceiling']:.1f}%" if row.get("fraction_of_ceiling") else "")
        cells.append(line)
    header = (["config", "optimizer"] + [f"{_NAMES[name]} us [min-max]" for name in names]
              + ["best peer", "peer/fastbp", "GFLOP/s", "% ceiling"])
    widths = [max(len(str(line[i])) for line in cells + [header]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in [header] + cells]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def format_sweep(rows):
    """The best peer's time over fastbp's for each width (rows) and batch
    (columns) of the sweep."""
    by_point = {(row["sizes"][1], row["batch"]): row for row in rows}
    header = f"{'64-w-w-10':<11}" + "".join(f"{f'batch {b}':>18}" for b in SWEEP_BATCHES)
    lines = [header, "-" * len(header)]
    for width in SWEEP_WIDTHS:
        cells = []
        for batch in SWEEP_BATCHES:
            row = by_point.get((width, batch))
            cells.append(f"{row['ratio']:.2f}x {_NAMES[row['best_peer']]:<8}" if row and row["ratio"] else "n/a")
        lines.append(f"{f'w={width}':<11}" + "".join(f"{cell:>18}" for cell in cells))
    return "\n".join(lines)


def plot(rows, path):
    """Grouped bars per config and optimizer, one bar per peer: the peer's
    step time over fastbp's, on a linear axis. Returns False when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    peer_names = [name for name in rows[0]["ratios"]]
    labels = [f"{row['config']}\n{row['optimizer']}" for row in rows]
    width = 0.8 / max(1, len(peer_names))
    figure, axis = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    for index, name in enumerate(peer_names):
        positions = [i + (index - (len(peer_names) - 1) / 2) * width for i in range(len(rows))]
        ratios = [row["ratios"][name] for row in rows]
        bars = axis.bar(positions, ratios, width, label=f"{_NAMES[name]} / fastbp")
        axis.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], fontsize=7)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(rows)), labels)
    axis.set_ylabel("peer step time / fastbp step time")
    axis.set_title("Training step: above 1, fastbp is faster (median of rounds)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


_STARTUP_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np, fastbp
model = fastbp.MLP([784, 128, 10], seed=0)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model))
X = np.zeros((64, 784), np.float32); y = np.zeros(64, np.int64)
trainer.fit(X, y, epochs=1, batch_size=64)
print(time.perf_counter() - start)
"""


def measure_startup(isa=None):
    """Seconds from interpreter start to the end of a first training step,
    with an empty compile cache (cold) and then with it filled (warm);
    ``isa`` as in ``thread_environment``."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**(os.environ if isa is None else kernels_isa.environment(isa)), "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            result = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT], env=env, capture_output=True,
                                    text=True, check=True)
            times.append(float(result.stdout.strip().splitlines()[-1]))
    return {"cold_s": times[0], "warm_s": times[1]}
