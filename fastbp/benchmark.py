"""Training-step benchmarks of fastbp against torch eager, measured side by
side in one process, with the machine's sgemm rate as the ceiling.

Times are wall-clock per training step (forward, loss, backward, optimizer
update) with compilation excluded: every timed run follows a warm-up run.
Each framework is measured ``repeats`` times, interleaved, and the fastest
run counts, which is the figure least disturbed by a noisy machine.
"""
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kernels
from fastbp.losses import CrossEntropyLoss, MSELoss
from fastbp.mlp import MLP
from fastbp.optim import SGD, Adam
from fastbp.trainer import Trainer

# long enough per timed run for the clock to be meaningful, short enough for 2 cores
_TARGET_SECONDS = 0.25


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple
    batch: int
    loss: str = "cross_entropy"

    @property
    def flops_per_step(self):
        """Forward 2, backward 4 flops per weight per sample."""
        return 6 * self.batch * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def bytes_needed(self):
        """Memory for one measurement: both frameworks' parameters, gradients
        and two optimizer moments, activations, and the data of one run."""
        n_params = sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        units = sum(self.sizes[1:])
        per_framework = 4 * (4 * n_params + 3 * self.batch * units + 2 * self.batch * max(self.sizes))
        data = 4 * self.batch * self.sizes[0] * 64
        return 2 * per_framework + data


CONFIGS = {c.name: c for c in [
    Config("tiny", (1, 1), 1, loss="mse"),  # seed 004's model and loss
    Config("small", (784, 128, 10), 64),
    Config("medium", (784, 512, 512, 10), 128),
    Config("narrow", (64, 64, 64, 64, 64, 3), 1024),
    Config("wide", (1024, 4096, 4096, 10), 256),
]}
OPTIMIZERS = ("sgd", "adam")


def available_bytes():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(config):
    needed, available = config.bytes_needed(), available_bytes()
    if available is not None and needed > available:
        raise MemoryError(f"config {config.name!r} needs about {needed:,} bytes, "
                          f"{available:,} are available")
    return needed


def _data(config, steps, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((steps * config.batch, config.sizes[0])).astype(np.float32)
    if config.loss == "mse":
        y = rng.standard_normal((len(X), config.sizes[-1])).astype(np.float32)
    else:
        y = rng.integers(0, config.sizes[-1], size=len(X))
    return X, y


def _fastbp_run(config, optimizer_name, seed=0):
    model = MLP(list(config.sizes), seed=seed)
    optimizer = SGD(model, lr=0.01) if optimizer_name == "sgd" else Adam(model, lr=1e-3)
    loss = MSELoss() if config.loss == "mse" else CrossEntropyLoss()
    trainer = Trainer(model, loss, optimizer)

    def run(X, y):
        trainer.fit(X, y, epochs=1, batch_size=config.batch, shuffle=False)
    return model, run


def _torch_run(config, optimizer_name, model, compiled=False):
    import torch

    reference = model.to_torch()
    forward = torch.compile(reference) if compiled else reference
    optimizer = (torch.optim.SGD(reference.parameters(), lr=0.01) if optimizer_name == "sgd"
                 else torch.optim.Adam(reference.parameters(), lr=1e-3))
    loss = torch.nn.MSELoss() if config.loss == "mse" else torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        optimizer.zero_grad()
        loss(forward(xb), yb).backward()
        optimizer.step()

    def run(X, y):
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        for start in range(0, len(X), config.batch):
            step(X[start:start + config.batch], y[start:start + config.batch])
    return run


def _steps_for(run, config, data_for):
    """Time one step (after a warm-up) and size a timed run to ~_TARGET_SECONDS."""
    X, y = data_for(2)
    run(X[:config.batch], y[:config.batch])
    start = time.perf_counter()
    run(X[config.batch:], y[config.batch:])
    one = max(time.perf_counter() - start, 1e-7)
    return int(np.clip(_TARGET_SECONDS / one, 2, 20000))


def _seconds_per_step(run, X, y, steps):
    start = time.perf_counter()
    run(X, y)
    return (time.perf_counter() - start) / steps


def sgemm_ceiling(n=2048, repeats=3):
    """The best float32 GEMM rate (GFLOP/s) of the BLAS the kernels call."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    C = np.empty((n, n), dtype=np.float32)
    kernels.gemm(C, A, B, False, False, 1.0, 0.0)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        kernels.gemm(C, A, B, False, False, 1.0, 0.0)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure(config, optimizer_name, repeats=3, ceiling=None, torch_compile=False):
    """One row of the table: fastbp and torch eager step times for a config,
    and torch.compile's when asked (its compilation takes tens of seconds per
    config, so it is opt-in). JAX is not measured."""
    check_fits_in_memory(config)
    compile_start = time.perf_counter()
    model, fastbp_run = _fastbp_run(config, optimizer_name)
    data_for = lambda steps: _data(config, steps)  # noqa: E731
    fastbp_steps = _steps_for(fastbp_run, config, data_for)
    compile_seconds = time.perf_counter() - compile_start
    runs = {"fastbp": (fastbp_run, fastbp_steps)}
    if torch_available():
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        torch_run = _torch_run(config, optimizer_name, model)
        runs["torch"] = (torch_run, _steps_for(torch_run, config, data_for))
        if torch_compile:
            compiled_run = _torch_run(config, optimizer_name, model, compiled=True)
            runs["torch_compile"] = (compiled_run, _steps_for(compiled_run, config, data_for))
    data = {name: data_for(steps) for name, (_, steps) in runs.items()}
    best = {name: np.inf for name in runs}
    for _ in range(repeats):
        for name, (run, steps) in runs.items():
            best[name] = min(best[name], _seconds_per_step(run, *data[name], steps))
    row = {"config": config.name, "sizes": "-".join(map(str, config.sizes)), "batch": config.batch,
           "optimizer": optimizer_name, "loss": config.loss, "fastbp_step_s": best["fastbp"],
           "torch_step_s": best.get("torch"), "fastbp_gflops": config.flops_per_step / best["fastbp"] / 1e9,
           "fastbp_first_call_s": compile_seconds}
    row["ratio"] = row["torch_step_s"] / row["fastbp_step_s"] if row["torch_step_s"] else None
    if "torch_compile" in best:
        row["torch_compile_step_s"] = best["torch_compile"]
        row["compile_ratio"] = best["torch_compile"] / best["fastbp"]
    if ceiling:
        row["ceiling_gflops"] = ceiling
        row["fraction_of_ceiling"] = row["fastbp_gflops"] / ceiling
    return row


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


def measure_startup():
    """Seconds from interpreter start to the end of a first training step,
    with an empty compile cache (cold) and then with it filled (warm)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            result = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT], env=env, capture_output=True,
                                    text=True, check=True)
            times.append(float(result.stdout.strip().splitlines()[-1]))
    return {"cold_s": times[0], "warm_s": times[1]}


def format_table(rows):
    compiled = any("compile_ratio" in row for row in rows)
    header = (f"{'config':<8}{'optimizer':<10}{'fastbp step':>13}{'torch step':>13}{'torch/fastbp':>14}"
              f"{'GFLOP/s':>10}{'% ceiling':>11}" + (f"{'compiled/fastbp':>17}" if compiled else ""))
    lines = [header, "-" * len(header)]
    for row in rows:
        torch_time = f"{row['torch_step_s'] * 1e6:>11.1f}us" if row["torch_step_s"] else f"{'n/a':>13}"
        ratio = f"{row['ratio']:>13.2f}x" if row["ratio"] else f"{'n/a':>14}"
        fraction = f"{100 * row['fraction_of_ceiling']:>10.1f}%" if row.get("fraction_of_ceiling") else f"{'':>11}"
        lines.append(f"{row['config']:<8}{row['optimizer']:<10}{row['fastbp_step_s'] * 1e6:>11.1f}us"
                     f"{torch_time}{ratio}{row['fastbp_gflops']:>10.2f}{fraction}"
                     + (f"{row['compile_ratio']:>16.2f}x" if "compile_ratio" in row else ""))
    return "\n".join(lines)


def plot(rows, path):
    """A bar chart of torch/fastbp per config and optimizer; returns False
    when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['config']}\n{r['optimizer']}" for r in rows if r["ratio"]]
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    figure, axis = plt.subplots(figsize=(max(6, len(labels) * 0.9), 4))
    axis.bar(labels, ratios, color="tab:blue")
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_ylabel("torch eager time / fastbp time")
    axis.set_yscale("log")
    axis.set_title("Training step speed-up over torch eager (higher is better)")
    for index, ratio in enumerate(ratios):
        axis.annotate(f"{ratio:.2f}x", (index, ratio), ha="center", va="bottom", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
