"""Data-parallel scaling: samples/s with 1 and 2 processes, the share of each
step spent in the gradient all-reduce, and bucketed against whole-buffer
all-reduce.

Every measurement is its own torchrun launch (one thread per rank), the
rounds interleaved so a busy spell on the machine hits every configuration
alike; each prints the median over the rounds and the spread. Run from the
repository root:

    python bench/distributed.py [--rounds 3] [--only small,medium]

Not a pass/fail test: the figures depend on the machine (cores, other load).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

# name: (layer sizes, global batch, steps timed)
MODELS = {
    "small": ((784, 128, 10), 64, 300),
    "medium": ((784, 512, 512, 10), 128, 60),
    "wide": ((784, 2048, 2048, 2048, 10), 128, 12),
}
# (model, processes, bucket_bytes); None all-reduces the whole buffer after the backward
RUNS = [
    ("small", 1, None), ("small", 2, None),
    ("medium", 1, None), ("medium", 2, None), ("medium", 2, 1 << 20),
    ("wide", 1, None), ("wide", 2, None), ("wide", 2, 4 << 20), ("wide", 2, 25 << 20),
]
LINK_BITS_PER_S = 10e9


def worker(model_name, bucket_bytes):
    """One rank: a warm-up epoch (compiles), then one timed epoch; rank 0
    prints its figures as one JSON line."""
    import torch.distributed

    import fastbp
    from fastbp.backends import distributed

    rank, world_size = distributed.init(timeout=120)
    sizes, batch, steps = MODELS[model_name]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch * steps, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch * steps)
    model = fastbp.MLP(list(sizes), seed=0)
    trainer = distributed.DistributedTrainer(model, "cross_entropy", fastbp.SGD(model, lr=0.01),
                                             bucket_bytes=bucket_bytes)
    trainer.fit(X[:batch * 2], y[:batch * 2], epochs=1, batch_size=batch, seed=0)
    torch.distributed.barrier()  # both ranks start the clock together
    started = time.perf_counter()
    trainer.fit(X, y, epochs=1, batch_size=batch, seed=0)
    seconds = time.perf_counter() - started
    if rank == 0:
        print(json.dumps({"samples_per_s": len(X) / seconds, "step_ms": seconds / steps * 1e3,
                          "comm_share": trainer.allreduce_seconds / seconds}), flush=True)
    distributed.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model_name, processes, bucket_bytes):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(_free_port()), __file__, "--worker", model_name,
                           str(bucket_bytes)], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{model_name} on {processes} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spread(values, scale=1.0, digits=0):
    values = [v * scale for v in values]
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model_name, bucket_bytes = args.worker
        return worker(model_name, None if bucket_bytes == "None" else int(bucket_bytes))
    runs = [run for run in RUNS if run[0] in args.only.split(",")]
    results = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for run in runs:
            results[run].append(launch(*run))
            print(f"round {round_ + 1}: {run} {results[run][-1]}", file=sys.stderr, flush=True)
    print(f"{args.rounds} rounds, median (min-max); {os.cpu_count()} cores")
    print(f"{'model':<8} {'procs':>5} {'buckets':>8} {'samples/s':>26} {'vs 1 proc':>9} {'step ms':>20} "
          f"{'all-reduce share':>18}")
    for (model_name, processes, bucket_bytes), figures in results.items():
        one = results.get((model_name, 1, None))
        speedup = (statistics.median(f["samples_per_s"] for f in figures)
                   / statistics.median(f["samples_per_s"] for f in one)) if one else float("nan")
        buckets = "whole" if bucket_bytes is None else f"{bucket_bytes >> 20} MB"
        print(f"{model_name:<8} {processes:>5} {buckets:>8} {_spread([f['samples_per_s'] for f in figures]):>26} "
              f"{speedup:>8.2f}x {_spread([f['step_ms'] for f in figures], digits=1):>20} "
              f"{_spread([f['comm_share'] for f in figures], 100, 1) + ' %':>18}")
    print(f"\nbytes a ring all-reduce sends and receives per step (float32) and the step time that floors at "
          f"{LINK_BITS_PER_S / 1e9:g} Gbit/s:")
    for model_name, (sizes, _, _) in MODELS.items():
        n_params = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))
        sent = n_params * 4 * 2
        print(f"{model_name:<8} {n_params:>11,} parameters  {sent / 1e6:8.2f} MB/step  "
              f"{sent * 8 / LINK_BITS_PER_S * 1e3:7.2f} ms/step")


if __name__ == "__main__":
    main()
