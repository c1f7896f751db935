"""Every public kernel refuses arguments that disagree, with a clean
exception, before it reads or writes past a buffer.

Each family runs in a subprocess of its own: a kernel that writes out of
bounds may kill the interpreter, which must fail the test, not pytest.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs ``cases`` (name -> call) and prints one line per case.
RUNNER = """
import numpy as np
import kernels
f32, f64 = np.float32, np.float64
def z(*shape, dtype=f64):
    return np.zeros(shape, dtype=dtype)
{cases}
for name, call in cases.items():
    try:
        result = call()
    except (ValueError, TypeError) as error:
        print("raised", name, type(error).__name__, str(error).splitlines()[0], flush=True)
    else:
        print("returned", name, result, flush=True)
"""

FAMILIES = {
    "dense": """
        W = z(3, 4)
        cases = {
            "dense_forward x short a column": lambda: kernels.dense_forward(z(2, 3), z(2, 3), W, z(3)),
            "dense_forward out short a row": lambda: kernels.dense_forward(z(1, 3), z(2, 4), W, z(3)),
            "dense_forward out short a column": lambda: kernels.dense_forward(z(2, 2), z(2, 4), W, z(3)),
            "dense_forward bias short": lambda: kernels.dense_forward(z(2, 3), z(2, 4), W, z(2)),
            "dense_forward x float32": lambda: kernels.dense_forward(z(2, 3), z(2, 4, dtype=f32), W, z(3)),
            "dense_forward out float32": lambda: kernels.dense_forward(z(2, 3, dtype=f32), z(2, 4), W, z(3)),
            "dense_backward dW short": lambda: kernels.dense_backward(z(2, 4), z(3, 3), z(3), z(2, 3), z(2, 4), W),
            "dense_backward dout wide": lambda: kernels.dense_backward(z(2, 4), z(3, 4), z(3), z(2, 4), z(2, 4), W),
            "dense_backward dx short": lambda: kernels.dense_backward(z(1, 4), z(3, 4), z(3), z(2, 3), z(2, 4), W),
            "dense_backward db short": lambda: kernels.dense_backward(z(2, 4), z(3, 4), z(1), z(2, 3), z(2, 4), W),
            "dense_backward x short": lambda: kernels.dense_backward(z(2, 4), z(3, 4), z(3), z(2, 3), z(2, 2), W),
            "dense_backward dW float32": lambda: kernels.dense_backward(z(2, 4), z(3, 4, dtype=f32), z(3), z(2, 3),
                                                                        z(2, 4), W),
            "gemm k differs": lambda: kernels.gemm(z(2, 3), z(2, 4), z(5, 3), False, False, 1.0, 0.0),
            "gemm C rows": lambda: kernels.gemm(z(3, 3), z(2, 4), z(4, 3), False, False, 1.0, 0.0),
            "gemm transposed B": lambda: kernels.gemm(z(2, 3), z(2, 4), z(4, 3), False, True, 1.0, 0.0),
            "gemm big C": lambda: kernels.gemm(z(200, 300), z(200, 40), z(40, 30), False, False, 1.0, 0.0),
            "gemm dtypes": lambda: kernels.gemm(z(2, 3), z(2, 4, dtype=f32), z(4, 3), False, False, 1.0, 0.0),
        }
    """,
    "activations": """
        cases = {
            "activation_forward out smaller": lambda: kernels.activation_forward(z(2, 3), z(40, 50), kernels.RELU, 0.0, 0.0),
            "activation_forward out float32": lambda: kernels.activation_forward(z(2, 3, dtype=f32), z(2, 3), 1, 0.0, 0.0),
            "activation_forward unknown code": lambda: kernels.activation_forward(z(2, 3), z(2, 3), 99, 0.0, 0.0),
            "activation_backward dx smaller": lambda: kernels.activation_backward(z(1, 3), z(2, 3), z(2, 3), z(2, 3),
                                                                                  kernels.TANH, 0.0, 0.0),
            "activation_backward out wider": lambda: kernels.activation_backward(z(2, 3), z(2, 3), z(2, 3), z(2, 4),
                                                                                 kernels.TANH, 0.0, 0.0),
            "activation_backward dout float32": lambda: kernels.activation_backward(
                z(2, 3), z(2, 3, dtype=f32), z(2, 3), z(2, 3), kernels.TANH, 0.0, 0.0),
            "pointwise_loss target short": lambda: kernels.pointwise_loss(z(2, 3), z(2, 3), z(1, 3), kernels.MSE, 1.0, True),
            "pointwise_loss dpred short": lambda: kernels.pointwise_loss(z(2, 2), z(2, 3), z(2, 3), kernels.MSE, 1.0, True),
            "pointwise_loss target float32": lambda: kernels.pointwise_loss(z(2, 3), z(2, 3), z(2, 3, dtype=f32),
                                                                           kernels.MSE, 1.0, True),
            "pointwise_loss cross-entropy code": lambda: kernels.pointwise_loss(z(2, 3), z(2, 3), z(2, 3),
                                                                               kernels.CROSS_ENTROPY, 1.0, True),
            "cross_entropy_loss labels short": lambda: kernels.cross_entropy_loss(z(4, 3), z(4, 3), np.zeros(2, np.int64),
                                                                                 0.0, True),
            "cross_entropy_loss label too large": lambda: kernels.cross_entropy_loss(
                z(2, 3), z(2, 3), np.array([0, 3000000]), 0.0, True),
            "cross_entropy_loss label negative": lambda: kernels.cross_entropy_loss(
                z(2, 3), z(2, 3), np.array([0, -1]), 0.0, True),
            "cross_entropy_loss dlogits float32": lambda: kernels.cross_entropy_loss(
                z(2, 3, dtype=f32), z(2, 3), np.array([0, 1]), 0.0, True),
            "loss_value_and_grad labels short": lambda: kernels.loss_value_and_grad(
                z(4, 3), z(4, 3), z(0, 0), np.zeros(1, np.int64), kernels.CROSS_ENTROPY, 0.0, True),
        }
    """,
    "optimizers": """
        n = 10
        adam = np.array([1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0, 0.0])
        cases = {
            "sgd_step grads short": lambda: kernels.sgd_step(z(100000), z(3), z(100000), 0.1, 0.9, 0.0, 0.0, False, 1),
            "sgd_step momentum buffer short": lambda: kernels.sgd_step(z(n), z(n), z(0), 0.1, 0.9, 0.0, 0.0, False, 1),
            "sgd_step grads float32": lambda: kernels.sgd_step(z(n), z(n, dtype=f32), z(0), 0.1, 0.0, 0.0, 0.0, False, 1),
            "adam_step exp_avg short": lambda: kernels.adam_step(z(n), z(n), z(2), z(n), z(0), 1e-3, 0.9, 0.999, 1e-8,
                                                                 0.0, False, False, 1),
            "adam_step amsgrad buffer empty": lambda: kernels.adam_step(z(n), z(n), z(n), z(n), z(0), 1e-3, 0.9, 0.999,
                                                                        1e-8, 0.0, True, False, 1),
            "adam_step exp_avg_sq float32": lambda: kernels.adam_step(z(n), z(n), z(n), z(n, dtype=f32), z(0), 1e-3,
                                                                      0.9, 0.999, 1e-8, 0.0, False, False, 1),
            "rmsprop_step square_avg short": lambda: kernels.rmsprop_step(z(n), z(n), z(1), z(0), z(0), 1e-2, 0.99,
                                                                          1e-8, 0.0, 0.0, False),
            "rmsprop_step centered without grad_avg": lambda: kernels.rmsprop_step(z(n), z(n), z(n), z(0), z(0), 1e-2,
                                                                                   0.99, 1e-8, 0.0, 0.0, True),
            "optimizer_step grads short": lambda: kernels.optimizer_step(kernels.ADAM, z(n), z(1), z(2, n), adam, 1),
            "optimizer_step hyper short": lambda: kernels.optimizer_step(kernels.ADAM, z(n), z(n), z(2, n), adam[:3], 1),
            "optimizer_step unknown code": lambda: kernels.optimizer_step(7, z(n), z(n), z(2, n), adam, 1),
            "optimizer_step state float32": lambda: kernels.optimizer_step(kernels.ADAM, z(n), z(n),
                                                                           z(2, n, dtype=f32), adam, 1),
            "optimizer_step state short": lambda: kernels.optimizer_step(kernels.ADAM, z(n), z(n), z(2, n - 1), adam, 1),
            "optimizer_step state rows missing": lambda: kernels.optimizer_step(kernels.ADAM, z(n), z(n), z(1, n),
                                                                                adam, 1),
        }
    """,
    "network": """
        import fastbp
        model = fastbp.MLP([4, 8, 3], dtype="float64", seed=0)
        model._ensure_capacity(5)
        p, g, L, A = model._params, model._grads, model._layers, model._activation_params
        za, aa, sc = model._z, model._a, model._scratch
        bad_chain = L.copy(); bad_chain[1, 0] = 9
        bad_offset = L.copy(); bad_offset[1, 2] = p.size
        x = z(5, 4)
        X, y, order = z(20, 4), np.zeros(20, np.int64), np.arange(20)
        t = z(20, 3)
        adam = np.array([1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0, 0.0])
        state = z(2, p.size)
        def epoch(X=X, t=z(0, 0), y=y, order=order, batch_size=5, state=state, params=p, bx=z(5 * 4),
                  bt=z(0), bl=np.zeros(5, np.int64), loss=kernels.CROSS_ENTROPY, fn=kernels.train_epoch, extra=()):
            return fn(kernels.Network(params, g, L, A), kernels.Optimizer(kernels.ADAM, adam, state),
                      kernels.Loss(loss, 0.0, True), kernels.Data(X, t, y, order), kernels.Work(bx, bt, bl, za, aa, sc),
                      0, 0.0, batch_size, 0.0, *extra)
        cases = {
            "network_forward x short a column": lambda: kernels.network_forward(za, aa, z(5, 3), p, L, A),
            "network_forward x float32": lambda: kernels.network_forward(za, aa, z(5, 4, dtype=f32), p, L, A),
            "network_forward store short": lambda: kernels.network_forward(za[:3], aa, x, p, L, A),
            "network_forward layers do not chain": lambda: kernels.network_forward(za, aa, x, p, bad_chain, A),
            "network_forward weights outside params": lambda: kernels.network_forward(za, aa, x, p, bad_offset, A),
            "network_forward params short": lambda: kernels.network_forward(za, aa, x, p[:10], L, A),
            "network_forward activation_params short": lambda: kernels.network_forward(za, aa, x, p, L, A[:1]),
            "network_backward grads short": lambda: kernels.network_backward(g[:5], sc, x, p, L, A, za, aa, True),
            "network_backward scratch short": lambda: kernels.network_backward(g, z(2, 3), x, p, L, A, za, aa, True),
            "network_backward x float32": lambda: kernels.network_backward(g, sc, z(5, 4, dtype=f32), p, L, A, za, aa,
                                                                           True),
            "network_backward grads float32": lambda: kernels.network_backward(g.astype(f32), sc, x, p, L, A, za, aa,
                                                                               True),
            "network_backward_layers grads short": lambda: kernels.network_backward_layers(g[:5], sc, x, p, L, A, za,
                                                                                           aa, 0, 2),
            "network_backward_layers end past the last layer": lambda: kernels.network_backward_layers(
                g, sc, x, p, L, A, za, aa, 1, 3),
            "network_backward_layers empty range": lambda: kernels.network_backward_layers(g, sc, x, p, L, A, za, aa,
                                                                                           1, 1),
            "train_epoch X short a column": lambda: epoch(X=z(20, 3)),
            "train_epoch X float32": lambda: epoch(X=z(20, 4, dtype=f32)),
            "train_epoch labels short": lambda: epoch(y=y[:5]),
            "train_epoch label out of range": lambda: epoch(y=np.full(20, 7)),
            "train_epoch order out of range": lambda: epoch(order=np.full(20, 1000000)),
            "train_epoch order negative": lambda: epoch(order=order[:5] - 3),
            "train_epoch batch larger than buffers": lambda: epoch(batch_size=20),
            "train_epoch state short": lambda: epoch(state=z(2, 3)),
            "train_epoch state rows missing": lambda: epoch(state=z(1, p.size)),
            "train_epoch targets short": lambda: epoch(t=z(20, 2), bt=z(15), loss=kernels.MSE),
            "train_epoch targets float32": lambda: epoch(t=z(20, 3, dtype=f32), bt=z(15), loss=kernels.MSE),
            "train_epoch_data_parallel X short a column": lambda: epoch(X=z(20, 3), fn=kernels.train_epoch_data_parallel,
                                                                        extra=(2,)),
            "train_epoch_data_parallel order out of range": lambda: epoch(
                order=np.full(20, -5), fn=kernels.train_epoch_data_parallel, extra=(2,)),
            "random_permutation empty state": lambda: kernels.random_permutation(np.arange(5), np.zeros(0, np.uint64)),
        }
    """,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kernels_refuse_arguments_that_disagree(family):
    cases = textwrap.dedent(FAMILIES[family])
    script = RUNNER.format(cases=cases)
    expected = cases.count('": lambda')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, f"the interpreter died (status {done.returncode}) after:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert len(lines) == expected, done.stdout + done.stderr[-3000:]
    returned = [line for line in lines if not line.startswith("raised")]
    assert not returned, "\n".join(returned)
    for line in lines:
        # the message starts with the kernel that refused the call
        message = line.split(" Error ", 1)[-1] if " Error " in line else line.split("Error ", 1)[1]
        assert message.split(":")[0] in kernels_names(), line


def kernels_names():
    import kernels

    return dir(kernels)
