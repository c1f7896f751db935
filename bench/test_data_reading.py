"""Reading data at real sizes, against references measured in the same run.
Run with ``pytest bench/test_data_reading.py --benchmark-only -s``.

- read: a 200,000 x 51 CSV (50 float features, an integer label) into the
  float32 matrix fastbp trains on, against ``pyarrow.csv.read_csv`` of the
  same file (the ratio is the figure; 1.5 is the target).
- train memory: peak RSS of a whole ``fastbp train`` run on that CSV, in a
  subprocess, against the float32 feature matrix plus the model.
- memory map: training on a .npy memory-mapped from disk (10 classes, one
  epoch, hidden 32, batch 256), against its first million rows in memory:
  peak memory, step time and where the run's time goes
  (FASTBP_BENCH_NPY_GB sets its size, default 0.25; the 2 GB figure takes
  FASTBP_BENCH_NPY_GB=2). At 2 GB (10.7M x 50) on a quiet 2-core machine:
  VmHWM 403 MB (4.6 GB before the mapping's pages were dropped), peak
  RssAnon 316 MB; generating 6 s, the data pass 28 s, training and
  evaluation 12 s; step time 0.29 ms mapped against 0.12 ms in memory
  (2.5x, the target being 1.5x: each row read costs a page fault, against
  0.4 us of compute a row of this small model).
- predict: ``fastbp predict`` on a large CSV (FASTBP_BENCH_PREDICT_GB,
  default 0.25): peak RSS, which should not grow with the file.

Peak RSS is VmHWM of the child process; the resident pages of a memory map
count in it, so the anonymous memory (RssAnon, sampled every 50 ms) is
reported beside it. Files go to a temporary folder and are deleted.
"""
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.csv  # noqa: E402

from fastbp import data  # noqa: E402
from fastbp.preprocessing import Preprocessing  # noqa: E402

ROWS, FEATURES = 200_000, 50
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, rows, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as stream:
        stream.write(",".join([f"x{j}" for j in range(FEATURES)] + ["label"]) + "\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            X = rng.standard_normal((n, FEATURES))
            label = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
            np.savetxt(stream, np.column_stack([X, label]), fmt=["%.6f"] * FEATURES + ["%d"], delimiter=",")
    return path


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    return str(write_csv(tmp_path_factory.mktemp("read") / "big.csv", ROWS))


def fastbp_read(path):
    """The CSV into the float32 matrix training takes, as fastbp train reads it."""
    table, y = data.read_table(path, ".csv", "label", float_type="float32")
    y = data.target_values(y, path, "label")
    steps = Preprocessing.fit(table, y, np.arange(len(y)), "classify", table.column_names, "label")
    return steps.transform(table)


def best_of(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def test_read_csv_against_pyarrow(benchmark, csv_file):
    fastbp_read(csv_file)  # warm up: imports and the page cache
    reference = best_of(lambda: pa.csv.read_csv(csv_file))
    ours = best_of(lambda: fastbp_read(csv_file))
    benchmark.extra_info.update(fastbp_s=ours, pyarrow_s=reference, ratio=ours / reference)
    benchmark.pedantic(fastbp_read, args=(csv_file,), rounds=3, iterations=1)
    print(f"\nread {os.path.getsize(csv_file) / 1e6:.0f} MB CSV: fastbp {ours:.3f} s, pyarrow.csv.read_csv "
          f"{reference:.3f} s, ratio {ours / reference:.2f}")


def measure(args, cwd=None):
    """(seconds, VmHWM MB, peak RssAnon MB, stdout) of ``python -m fastbp args``."""
    process = subprocess.Popen([sys.executable, "-m", "fastbp", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env={**os.environ, "PYTHONPATH": ROOT})
    peak = {"RssAnon": 0, "VmHWM": 0}

    def sample():
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    for line in status:
                        key, _, value = line.partition(":")
                        if key in peak:
                            peak[key] = max(peak[key], int(value.split()[0]))
            except OSError:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    start = time.perf_counter()
    sampler.start()
    out = process.communicate()[0]
    sampler.join()
    assert process.returncode == 0, out
    return time.perf_counter() - start, peak["VmHWM"] / 1024, peak["RssAnon"] / 1024, out


def test_train_peak_memory(benchmark, csv_file, tmp_path):
    baseline = measure(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--hidden", "8"])
    seconds, hwm, anon, out = measure(["train", "--data", csv_file, "--target", "label", "--epochs", "1",
                                       "--quiet", "--hidden", "256,128"])
    matrix = ROWS * FEATURES * 4 / 2**20
    model = (FEATURES * 256 + 256 * 128 + 128 * 3 + 256 + 128 + 3) * 4 * 4 / 2**20  # params, grads, 2 moments
    benchmark.extra_info.update(peak_mb=hwm, baseline_mb=baseline[1], matrix_mb=matrix)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nfastbp train on the CSV: {seconds:.1f} s, peak RSS {hwm:.0f} MB; an iris run peaks at "
          f"{baseline[1]:.0f} MB; the data add {hwm - baseline[1]:.0f} MB = "
          f"{(hwm - baseline[1]) / (matrix + model):.2f} x (float32 matrix {matrix:.0f} MB + model {model:.1f} MB)\n"
          + "\n".join(line for line in out.splitlines() if line.startswith(("time", "best", "big"))))


def test_memory_mapped_npy_against_in_memory(benchmark, tmp_path):
    gigabytes = float(os.environ.get("FASTBP_BENCH_NPY_GB", "0.25"))
    n = int(gigabytes * 2**30 / (FEATURES * 4))
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, FEATURES))
    y = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.int64, shape=(n,))
    for start in range(0, n, 1_000_000):
        block = rng.standard_normal((min(1_000_000, n - start), FEATURES), dtype=np.float32)
        X[start:start + len(block)] = block
        y[start:start + len(block)] = np.clip(2.5 * (block[:, 0] + block[:, 1]) + 5, 0, 9)
    X.flush()
    y.flush()
    generating = time.perf_counter() - started
    # the in-memory reference: the first million rows at most, as a .npz
    small = min(n, 1_000_000)
    np.savez(tmp_path / "Xy.npz", X=X[:small], y=y[:small])
    del X, y
    common = ["--epochs", "1", "--hidden", "32", "--batch-size", "256", "--val-split", "0.01", "--test-split", "0.01"]
    subprocess.run(["cat", str(tmp_path / "X.npy")], stdout=subprocess.DEVNULL)  # into the page cache
    rows = [("memory-mapped .npy", measure(["train", "--data", tmp_path / "X.npy", "--target", tmp_path / "y.npy",
                                            *common])),
            (f"in memory (.npz, {small} rows)", measure(["train", "--data", tmp_path / "Xy.npz", *common]))]
    lines, step = [], {}
    for name, (seconds, hwm, anon, out) in rows:
        step[name] = 256 / float(re.findall(r"([\d,]+) samples/s", out)[-1].replace(",", ""))
        lines.append(f"{name}: run {seconds:.1f} s, VmHWM {hwm:.0f} MB, peak RssAnon {anon:.0f} MB, step "
                     f"{step[name] * 1e3:.2f} ms; " + next(line for line in out.splitlines() if line.startswith("time")))
    ratio = step[rows[0][0]] / step[rows[1][0]]
    benchmark.extra_info.update(rows={name: row[:3] for name, row in rows}, step_ratio=ratio)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\n{gigabytes:g} GB float32 .npy ({n} x {FEATURES}), generated in {generating:.1f} s:\n" + "\n".join(lines)
          + f"\nstep time mapped / in memory: {ratio:.2f}")


def test_predict_memory_is_flat(benchmark, tmp_path):
    gigabytes = float(os.environ.get("FASTBP_BENCH_PREDICT_GB", "0.25"))
    small = write_csv(tmp_path / "small.csv", 20_000)
    subprocess.run([sys.executable, "-m", "fastbp", "train", "--data", small, "--target", "label", "--epochs", "1",
                    "--quiet", "--hidden", "64", "--save", tmp_path / "m.npz"], check=True,
                   env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL)
    rows = []
    for size in (gigabytes / 8, gigabytes):
        path = write_csv(tmp_path / "big.csv", int(size * 2**30 / (FEATURES * 10)))
        seconds, hwm, anon, _ = measure(["predict", "--model", tmp_path / "m.npz", "--data", path,
                                         "--out", tmp_path / "p.csv"])
        rows.append((os.path.getsize(path) / 2**20, seconds, hwm))
        os.remove(path)
    benchmark.extra_info.update(rows=rows)
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(f"fastbp predict on a {mb:.0f} MB CSV: {s:.1f} s, peak RSS {hwm:.0f} MB"
                           for mb, s, hwm in rows))
