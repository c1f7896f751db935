"""One framework's timing of a training step, in a process of its own.

``fastbp bench`` runs this file as a script (``python runners.py``) once
per framework and round, writes the measurement's spec as JSON to its stdin,
and reads one JSON object from its stdout. Running the file, not the module
``fastbp.cli.bench.runners``, keeps ``fastbp/__init__`` (and with it numba and
SciPy's BLAS) out of the torch and JAX processes: no two frameworks' thread
pools are ever alive in one process.

Every framework gets the same initial weights, the same ``n_steps`` batches
and the same step: forward, cross-entropy on logits (mean over the batch; with a
single output, the binary cross-entropy, since a softmax over one class is
constant and a compiler may drop the whole backward pass),
backward, then SGD (lr 0.01) or Adam (torch's defaults). Each runs the
steps its fastest natural way: fastbp through ``Trainer.fit`` (the fused
``kernels.train_epoch``), torch eager (or compiled) in a Python loop, JAX as
one jitted ``lax.scan`` over the stacked batches.

With ``"device": "cuda"`` in the spec, fastbp trains a ``device="cuda"``
model (the data copied to the GPU once; each run one CUDA fused epoch, which
reads the loss back and copies the parameters to the host at its end) and torch
runs eager on the GPU, its float32 matmuls in full precision ("torch") or in
TF32 ("torch_tf32"), synchronizing before each timing; JAX is not run there.

Only the standard library and NumPy are imported at the top.
"""
import json
import os
import sys
import time

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # running as a script puts this folder on the path, where its modules
    # would shadow any of the same names
    del sys.path[0]

import numpy as np

FRAMEWORKS = ("fastbp", "torch", "torch_tf32", "torch_compile", "jax")
# exit status of a runner that cannot run its framework here; its stderr says why in one line
REFUSED = 2
# the activations all three frameworks share: name -> (torch.nn class, jax.nn function)
ACTIVATIONS = {
    "relu": ("ReLU", "relu"), "tanh": ("Tanh", "tanh"), "sigmoid": ("Sigmoid", "sigmoid"),
    "gelu": ("GELU", "gelu"), "silu": ("SiLU", "silu"), "elu": ("ELU", "elu"),
    "leaky_relu": ("LeakyReLU", "leaky_relu"), "softplus": ("Softplus", "softplus"),
}
SGD_LR, ADAM_LR = 0.01, 1e-3
# at least this many timed blocks per round, whatever their length
MIN_BLOCKS = 3


def dense_shapes(sizes, residual=False):
    """(n_in, n_out) of each dense layer, in order: of the chain of
    ``sizes``, or with ``residual`` of fastbp.MLP(sizes, residual=True) (a
    layer to the width d, two d x d layers per residual block, one per
    hidden width, and the output layer)."""
    if not residual:
        return list(zip(sizes[:-1], sizes[1:]))
    d = sizes[1]
    return [(sizes[0], d)] + [(d, d)] * (2 * (len(sizes) - 2)) + [(d, sizes[-1])]


def initial_parameters(sizes, dtype, seed=0, residual=False):
    """[(W (n_out, n_in), b (n_out,)), ...] of every dense layer
    (``dense_shapes``) drawn as torch.nn.Linear draws them,
    U(-1/sqrt(n_in), 1/sqrt(n_in)), from one seeded stream."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-k, k, (n_out, n_in)).astype(dtype), rng.uniform(-k, k, n_out).astype(dtype))
            for n_in, n_out in dense_shapes(sizes, residual) for k in [1 / np.sqrt(n_in)]]


def batches(sizes, batch, n_steps, dtype, seed=1):
    """X (n_steps * batch, n_in) and the targets: integer labels
    (n_steps * batch,), or for a single output 0/1 targets (n_steps * batch, 1)
    of X's dtype."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_steps * batch, sizes[0])).astype(dtype)
    y = rng.integers(0, max(2, sizes[-1]), size=n_steps * batch)
    return X, (y[:, None].astype(dtype) if sizes[-1] == 1 else y)


def limit_threads(threads):
    """Cap every BLAS/OpenMP pool this process loads at ``threads`` (the
    parent also sets OMP_NUM_THREADS and friends before the process starts);
    returns what the pools report."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return {}
    threadpool_limits(threads)
    return {f"{pool['internal_api']}": pool["num_threads"] for pool in threadpool_info()}


def blas_kernels():
    """The kernels each loaded BLAS reports using (OpenBLAS's core type,
    e.g. {"openblas": "Haswell"}; MKL reports none)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {pool["internal_api"]: pool.get("architecture") or pool.get("threading_layer") or "?"
            for pool in threadpool_info() if pool["user_api"] == "blas"}


def fastbp_vector():
    """fastbp's tiles in this process: {"tiles": "avx2 6x16 float32", ...}."""
    from kernels import tiles

    if not tiles.AVAILABLE:
        return {"tiles": "none (products through BLAS)", **blas_kernels()}
    shape = f"{tiles.ROWS}x{tiles.VECTORS * tiles.lanes(4)} float32"
    forced = "" if os.environ.get("NUMBA_CPU_FEATURES") is None else ", Numba's target features set"
    return {"tiles": f"{tiles.ISA} {shape}{forced}", **blas_kernels()}


class Refused(Exception):
    """The framework cannot run on the spec's device here."""


def torch_configuration(framework, device):
    """How the torch runner sets torch up for ``framework`` on ``device``: where
    its tensors live, whether the model is compiled, and whether float32
    matmuls on the GPU may round their inputs to TF32
    (``torch.backends.cuda.matmul.allow_tf32``, off unless "torch_tf32")."""
    return {"device": device, "compiled": framework == "torch_compile", "allow_tf32": framework == "torch_tf32"}


def configure_torch(torch, framework, device):
    """Apply ``torch_configuration`` to ``torch``; Refused when it asks for a
    GPU that torch cannot use."""
    configuration = torch_configuration(framework, device)
    if device == "cuda" and not torch.cuda.is_available():
        raise Refused(f"torch {torch.__version__} cannot time --device cuda here: torch.cuda.is_available() is "
                      "False; install a CUDA build of torch (https://pytorch.org) on a machine with an NVIDIA GPU")
    torch.backends.cuda.matmul.allow_tf32 = configuration["allow_tf32"]
    return configuration


def _fastbp(spec, X, y, initial):
    import fastbp

    model = fastbp.MLP(spec["sizes"], activation=spec["activation"], dtype=spec["dtype"],
                       device=spec.get("device", "cpu"), dropout=spec.get("dropout", 0.0), norm=spec.get("norm"),
                       residual=spec.get("residual", False))
    for (W, b), (W0, b0) in zip(model.params, initial):
        W[...], b[...] = W0, b0
    optimizer = (fastbp.SGD(model, lr=SGD_LR) if spec["optimizer"] == "sgd" else fastbp.Adam(model, lr=ADAM_LR))
    loss = fastbp.BCEWithLogitsLoss() if spec["sizes"][-1] == 1 else fastbp.CrossEntropyLoss()
    trainer = fastbp.Trainer(model, loss, optimizer)
    threads = limit_threads(spec["threads"])
    vector = fastbp_vector()
    if model.device == "cuda":
        from fastbp.backends.cuda import DeviceFit

        # The data goes to the GPU once, as torch's does (each Trainer.fit
        # would copy it again); a run is then one fused device epoch.
        device_fit = DeviceFit(model, optimizer, loss, *trainer._data(X, y)[:3], spec["batch"], 0.0)
        order = np.arange(X.shape[0], dtype=np.int64)

        def run(record=False):
            loss_sum = device_fit.steps(order, 0.0)[0]
            return loss_sum / X.shape[0] if record else None
        return run, threads, vector

    def run(record=False):
        trainer.fit(X, y, epochs=1, batch_size=spec["batch"], shuffle=False)
        return trainer.history.loss[-1] if record else None
    return run, threads, vector


def _torch(spec, X, y, initial):
    import torch

    configuration = configure_torch(torch, spec["framework"], spec.get("device", "cpu"))
    device, on_gpu = configuration["device"], configuration["device"] == "cuda"
    torch.set_num_threads(spec["threads"])
    threads = {"torch intra-op": torch.get_num_threads(), **limit_threads(spec["threads"])}
    vector = {"capability": torch.backends.cpu.get_cpu_capability(), **blas_kernels(),
                 **{name: os.environ[name] for name in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
                    if name in os.environ}}
    dtype = getattr(torch, spec["dtype"])
    linears = []
    for W0, b0 in initial:
        linear = torch.nn.Linear(W0.shape[1], W0.shape[0], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W0))
            linear.bias.copy_(torch.from_numpy(b0))
        linears.append(linear)
    layers = _torch_layers(torch, spec, linears)
    model = torch.nn.Sequential(*layers).to(device)
    forward = torch.compile(model) if configuration["compiled"] else model
    optimizer = (torch.optim.SGD(model.parameters(), lr=SGD_LR) if spec["optimizer"] == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=ADAM_LR))
    loss_fn = torch.nn.BCEWithLogitsLoss() if spec["sizes"][-1] == 1 else torch.nn.CrossEntropyLoss()
    xs = torch.from_numpy(X).view(spec["n_steps"], spec["batch"], -1).to(device)
    ys = torch.from_numpy(y).view(spec["n_steps"], spec["batch"], *y.shape[1:]).to(device)

    def run(record=False):
        total = 0.0
        for xb, yb in zip(xs, ys):
            optimizer.zero_grad()
            loss = loss_fn(forward(xb), yb)
            loss.backward()
            optimizer.step()
            if record:
                total += loss.item()
        if on_gpu:
            torch.cuda.synchronize()  # the kernels launched so far have run when the timer stops
        return total / spec["n_steps"]
    return run, threads, vector


def _torch_layers(torch, spec, linears):
    """The modules of fastbp's layers around ``linears`` (the layout of
    fastbp.interop.torch, written here: this process never imports fastbp)."""
    dtype, rate = getattr(torch, spec["dtype"]), spec.get("dropout", 0.0)

    def activation():
        return getattr(torch.nn, ACTIVATIONS[spec["activation"]][0])()

    def norm(n):
        return [torch.nn.LayerNorm(n, dtype=dtype)] if spec.get("norm") == "layer" else []

    def dropout():
        return [torch.nn.Dropout(rate)] if rate > 0 else []
    if not spec.get("residual"):
        layers = []
        for linear in linears[:-1]:
            layers += [linear, activation(), *norm(linear.out_features), *dropout()]
        return layers + [linears[-1]]

    class Block(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return x + self.body(x)
    d = linears[0].out_features
    blocks = [Block(torch.nn.Sequential(*norm(d), first, activation(), *dropout(), second, *dropout()))
              for first, second in zip(linears[1:-1:2], linears[2:-1:2])]
    return [linears[0], *blocks, *norm(d), activation(), linears[-1]]


def _jax(spec, X, y, initial):
    import jax
    import jax.numpy as jnp
    import optax

    if spec["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    activation = getattr(jax.nn, ACTIVATIONS[spec["activation"]][1])
    if spec["activation"] == "gelu":
        activation = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731  (torch's default)
    # (n_in, n_out) weights: x @ W is the layout XLA's dot takes without a transpose
    params = [(jnp.asarray(W0.T.copy()), jnp.asarray(b0)) for W0, b0 in initial]
    norm, rate, residual = spec.get("norm") == "layer", spec.get("dropout", 0.0), spec.get("residual", False)
    # the layer norms' (weight, bias): after every hidden layer; residual, one per block and the head's
    widths = [W0.shape[0] for W0, _ in initial[:-1]] if not residual else [initial[0][0].shape[0]] * (len(initial) // 2)
    params.append([(jnp.ones(n, initial[0][0].dtype), jnp.zeros(n, initial[0][0].dtype)) for n in widths]
                  if norm else [])
    optimizer = optax.sgd(SGD_LR) if spec["optimizer"] == "sgd" else optax.adam(ADAM_LR, b1=0.9, b2=0.999, eps=1e-8)
    state = optimizer.init(params)
    cross_entropy = (optax.sigmoid_binary_cross_entropy if spec["sizes"][-1] == 1
                     else optax.softmax_cross_entropy_with_integer_labels)

    def layer_norm(x, k, norms):
        if not norm:
            return x
        mean, variance = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(variance + 1e-5) * norms[k][0] + norms[k][1]

    def dropout(x, key, k):
        if rate == 0:
            return x
        keep = jax.random.bernoulli(jax.random.fold_in(key, k), 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0)

    def loss_fn(params, x, targets, key):
        *dense, norms = params
        if not residual:
            for k, (W, b) in enumerate(dense[:-1]):
                x = dropout(layer_norm(activation(x @ W + b), k, norms), key, k)
        else:
            W, b = dense[0]
            x = x @ W + b
            for k in range(len(dense) // 2 - 1):
                (W1, b1), (W2, b2) = dense[1 + 2 * k], dense[2 + 2 * k]
                branch = dropout(activation(layer_norm(x, k, norms) @ W1 + b1), key, 2 * k)
                x = x + dropout(branch @ W2 + b2, key, 2 * k + 1)
            x = activation(layer_norm(x, len(dense) // 2 - 1, norms))
        W, b = dense[-1]
        return cross_entropy(x @ W + b, targets).mean()

    def step(carry, batch):
        params, state, key = carry
        key, subkey = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch, subkey)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state, key), loss

    def epoch(params, state, xs, ys, key):
        (params, state, key), losses = jax.lax.scan(step, (params, state, key), (xs, ys))
        return params, state, key, losses.mean()

    epoch = jax.jit(epoch, donate_argnums=(0, 1, 4))
    xs = jnp.asarray(X.reshape(spec["n_steps"], spec["batch"], -1))
    ys = jnp.asarray(y.reshape(spec["n_steps"], spec["batch"], *y.shape[1:]))
    carry = [params, state, jax.random.PRNGKey(0)]

    def run(record=False):
        carry[0], carry[1], carry[2], loss = epoch(carry[0], carry[1], xs, ys, carry[2])
        loss.block_until_ready()
        return float(loss) if record else None
    threads = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), **limit_threads(spec["threads"])}
    isa_flag = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag.startswith("--xla_cpu_max_isa")]
    return run, threads, {"XLA": isa_flag[0] if isa_flag else "host ISA", **blas_kernels()}


def time_training(spec):
    """Warm up (compilation, cache loading: reported as ``first_call_s``),
    then time blocks of ``n_steps`` steps for about ``seconds`` and at least
    MIN_BLOCKS blocks; each block gives one time per step."""
    dtype = np.dtype(spec["dtype"])
    X, y = batches(spec["sizes"], spec["batch"], spec["n_steps"], dtype)
    initial = initial_parameters(spec["sizes"], dtype, residual=spec.get("residual", False))
    framework = spec["framework"]
    if framework == "fastbp":
        run, threads, vector = _fastbp(spec, X, y, initial)
    elif framework.startswith("torch"):
        run, threads, vector = _torch(spec, X, y, initial)
    else:
        run, threads, vector = _jax(spec, X, y, initial)
    start = time.perf_counter()
    loss = run(record=True)
    first_call = time.perf_counter() - start
    step_seconds, begun, cpu_begun = [], time.perf_counter(), _cpu_seconds()
    while len(step_seconds) < MIN_BLOCKS or time.perf_counter() - begun < spec["seconds"]:
        start = time.perf_counter()
        run()
        step_seconds.append((time.perf_counter() - start) / spec["n_steps"])
    # CPU time over wall time: the cores the framework kept busy, whatever it was told
    cores_busy = (_cpu_seconds() - cpu_begun) / (time.perf_counter() - begun)
    return {"first_call_s": first_call, "first_call_loss": loss, "step_seconds": step_seconds,
            "threads": threads, "cores_busy": cores_busy, "device": spec.get("device", "cpu"), "vector": vector}


def _cpu_seconds():
    times = os.times()
    return times.user + times.system


def time_sgemm(spec, n=2048, repeats=5):
    """The best float32 GEMM rate (GFLOP/s) at the run's thread count, of
    SciPy's BLAS (framework "sgemm") or of fastbp's own ``kernels.gemm``
    (framework "gemm", which uses its own tiles where the CPU has them)."""
    rng = np.random.default_rng(0)
    if spec["framework"] == "gemm":
        import kernels  # before the pools are capped and listed: it starts its own

        A, B = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        C = np.zeros((n, n), dtype=np.float32)

        def multiply():
            kernels.gemm(C, A, B, False, False, 1.0, 0.0)
    else:
        from scipy.linalg.blas import sgemm

        A, B = (np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
        C = np.zeros((n, n), dtype=np.float32, order="F")

        def multiply():
            sgemm(1.0, A, B, 0.0, C, overwrite_c=True)
    threads = limit_threads(spec["threads"])
    found = fastbp_vector() if spec["framework"] == "gemm" else blas_kernels()
    multiply()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n ** 3 / best / 1e9, "n": n, "threads": threads, "vector": found}


def main():
    spec = json.load(sys.stdin)
    try:
        result = time_sgemm(spec) if spec["framework"] in ("sgemm", "gemm") else time_training(spec)
    except Refused as refusal:
        print(refusal, file=sys.stderr)
        sys.exit(REFUSED)
    result.update(framework=spec["framework"], pid=os.getpid(),
                  modules=sorted({name.split(".")[0] for name in sys.modules}))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
