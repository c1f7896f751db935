"""L-BFGS fit time: fastbp's MLPClassifier / MLPRegressor with solver="lbfgs"
against scikit-learn's, on the same data, parameters and initial weights;
and on a sparse one-hot table of 10,000 columns, fastbp on the sparse rows
against fastbp on their dense copy ("fastbp-dense").

Every measurement is a fresh process of its own (one framework, one
dataset), the rounds interleaved so that a busy spell on the machine hits
both alike; a process fits once untimed (compilation, caches) and then
times ``--fits`` fits. The table gives the median over the rounds of the
seconds per fit, the spread (min-max), and scikit-learn's median over
fastbp's (above 1: fastbp is faster; for the one-hot table, also the dense
copy's over the sparse rows'). Run from the repository root:

    python bench/lbfgs.py [--rounds 5] [--threads 1]

Not a pass/fail test: the figures depend on the machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name: (estimator, how the data is made, hidden layers, max_iter)
CASES = {
    "digits 1797x64, 10 classes": ("MLPClassifier", "digits", (100,), 200),
    "covtype-like 20000x54, 7 classes": ("MLPClassifier", "classification", (100,), 100),
    "regression 5000x20": ("MLPRegressor", "regression", (64, 64), 200),
    "one-hot 20000x10000, 10 ones a row": ("MLPClassifier", "one-hot", (32,), 30),
}


def data(kind):
    import numpy as np
    from sklearn.datasets import load_digits, make_classification, make_regression
    from sklearn.preprocessing import StandardScaler
    if kind == "one-hot":
        import scipy.sparse
        rng = np.random.default_rng(0)
        # ten categorical columns of 1,000 categories each, one-hot encoded
        codes = rng.integers(0, 1000, (20000, 10))
        columns = (codes + 1000 * np.arange(10)).ravel()
        X = scipy.sparse.csr_array((np.ones(columns.size), columns, np.arange(0, columns.size + 1, 10)),
                                   shape=(20000, 10000))
        return X, (codes[:, 0] % 7 + codes[:, 1] % 3) % 4
    if kind == "digits":
        X, y = load_digits(return_X_y=True)
    elif kind == "classification":
        X, y = make_classification(n_samples=20000, n_features=54, n_informative=30, n_classes=7, random_state=0)
    else:
        X, y = make_regression(n_samples=5000, n_features=20, noise=5.0, random_state=0)
        y = (y - y.mean()) / y.std()
    return StandardScaler().fit_transform(X).astype(np.float64), y


def worker(framework, case, fits):
    import warnings
    estimator_name, kind, hidden, max_iter = CASES[case]
    if framework.startswith("fastbp"):
        from fastbp.interop import sklearn as module
    else:
        from sklearn import neural_network as module
    X, y = data(kind)
    if framework == "fastbp-dense":
        X = X.toarray()
    estimator = getattr(module, estimator_name)(solver="lbfgs", hidden_layer_sizes=hidden, max_iter=max_iter,
                                                random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
        start = time.perf_counter()
        for _ in range(fits):
            estimator.fit(X, y)
        seconds = (time.perf_counter() - start) / fits
    print(json.dumps({"seconds": seconds, "n_iter": estimator.n_iter_, "loss": float(estimator.loss_),
                      "score": float(estimator.score(X, y))}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = str(args.threads)
    env = {**os.environ, "NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    from fastbp.cli.bench.harness import cpu_description
    print(f"CPU: {cpu_description()}; {threads} thread(s); float64; seconds per fit")
    print(f"{'case':36} {'fastbp s (spread)':>22} {'scikit-learn s (spread)':>26} {'ratio':>6}  iterations, loss")
    for case in CASES:
        seconds = {"fastbp": [], "sklearn": []}
        if CASES[case][1] == "one-hot":
            seconds["fastbp-dense"] = []
        last = {}
        for _ in range(args.rounds):
            for framework in seconds:
                out = subprocess.run([sys.executable, __file__, "--worker", framework, case, str(args.fits)],
                                     env=env, capture_output=True, text=True, check=True).stdout
                last[framework] = json.loads(out.splitlines()[-1])
                seconds[framework].append(last[framework]["seconds"])
        cells = [f"{statistics.median(s):.3f} ({min(s):.3f}-{max(s):.3f})" for s in seconds.values()]
        ratio = statistics.median(seconds["sklearn"]) / statistics.median(seconds["fastbp"])
        notes = ", ".join(f"{name} {r['n_iter']} it {r['loss']:.4g}" for name, r in last.items())
        print(f"{case:36} {cells[0]:>22} {cells[1]:>26} {ratio:6.2f}  {notes}", flush=True)
        if "fastbp-dense" in seconds:
            dense = statistics.median(seconds["fastbp-dense"]) / statistics.median(seconds["fastbp"])
            print(f"{'':36} fastbp-dense {cells[2]}: {dense:.1f}x the sparse rows' time", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
