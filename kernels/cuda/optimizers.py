"""Optimizer updates on the device: one kernel over the flat parameter buffer
per optimizer, twins of ``kernels.optimizers`` (torch.optim's rules). The
scalars are computed on the host in float64 and passed in the buffers' dtype,
so the elementwise arithmetic runs in that dtype, as on the CPU.
"""
import math

from numba import cuda

from kernels import optimizers as _cpu
from kernels.cuda.config import THREADS, blocks_for, no_stop


@cuda.jit
def _sgd(params, grads, momentum_buffer, lr, momentum, undamped, weight_decay, nesterov, first, status):
    if status[0] != 0:
        return
    use_momentum = momentum != 0.0
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        grad = grads[i] + weight_decay * params[i]
        if use_momentum:
            buffer = grad if first else momentum * momentum_buffer[i] + undamped * grad
            momentum_buffer[i] = buffer
            grad = grad + momentum * buffer if nesterov else buffer
        params[i] = params[i] - lr * grad


@cuda.jit
def _adam(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, bias_correction2_sqrt,
          shrink, l2, one_minus_beta1, one_minus_beta2, beta2, eps, amsgrad, status):
    if status[0] != 0:
        return
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        grad = grads[i] + l2 * params[i]
        param = params[i] * shrink
        # torch's lerp form: m + (1 - beta1) * (g - m)
        first = exp_avg[i] + one_minus_beta1 * (grad - exp_avg[i])
        second = beta2 * exp_avg_sq[i] + one_minus_beta2 * grad * grad
        exp_avg[i] = first
        exp_avg_sq[i] = second
        if amsgrad:
            second = max(max_exp_avg_sq[i], second)
            max_exp_avg_sq[i] = second
        params[i] = param - step_size * first / (math.sqrt(second) / bias_correction2_sqrt + eps)


@cuda.jit
def _rmsprop(params, grads, square_avg, momentum_buffer, grad_avg, lr, alpha, one_minus_alpha, eps,
             weight_decay, momentum, centered, status):
    if status[0] != 0:
        return
    use_momentum = momentum > 0.0
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        grad = grads[i] + weight_decay * params[i]
        square = alpha * square_avg[i] + one_minus_alpha * grad * grad
        square_avg[i] = square
        if centered:
            average = grad_avg[i] + one_minus_alpha * (grad - grad_avg[i])
            grad_avg[i] = average
            square = square - average * average
        denominator = math.sqrt(square) + eps
        if use_momentum:
            buffer = momentum * momentum_buffer[i] + grad / denominator
            momentum_buffer[i] = buffer
            params[i] = params[i] - lr * buffer
        else:
            params[i] = params[i] - lr * grad / denominator


def _launch(kernel, params, *args, status):
    kernel[blocks_for(params.shape[0]), THREADS](params, *args, no_stop() if status is None else status)


def sgd_step(params, grads, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, step, status=None):
    """Twin of ``kernels.sgd_step``; arrays on the device, (n,) each. Every
    update here is skipped where ``status`` (``kernels.cuda.finite_step``'s
    flag; None: never) is set."""
    real = params.dtype.type
    _launch(_sgd, params, grads, momentum_buffer, real(lr), real(momentum), real(1.0 - dampening),
            real(weight_decay), bool(nesterov), step == 1, status=status)


def adam_step(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, amsgrad, decoupled, step, status=None):
    """Twin of ``kernels.adam_step`` (AdamW when ``decoupled``); arrays on the device."""
    real = params.dtype.type
    _launch(_adam, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
            real(lr / (1.0 - beta1 ** step)), real(math.sqrt(1.0 - beta2 ** step)),
            real(1.0 - lr * weight_decay if decoupled else 1.0), real(0.0 if decoupled else weight_decay),
            real(1.0 - beta1), real(1.0 - beta2), real(beta2), real(eps), bool(amsgrad), status=status)


def rmsprop_step(params, grads, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                 weight_decay, momentum, centered, status=None):
    """Twin of ``kernels.rmsprop_step``; arrays on the device."""
    real = params.dtype.type
    _launch(_rmsprop, params, grads, square_avg, momentum_buffer, grad_avg, real(lr), real(alpha),
            real(1.0) - real(alpha), real(eps), real(weight_decay), real(momentum), bool(centered), status=status)


def optimizer_step(code, params, grads, state, hyper, step, status=None):
    """Twin of ``kernels.optimizer_step``: ``hyper`` is the host float64 array
    of the optimizer's scalars, ``state`` the (k, n) device array of its
    buffers (``kernels.state_rows``), the other buffers live on the device."""
    s0, s1, s2 = (state[i] if i < state.shape[0] else params[:0] for i in range(3))
    if code == _cpu.SGD:
        sgd_step(params, grads, s0, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4] != 0.0, step, status)
    elif code == _cpu.ADAM:
        adam_step(params, grads, s0, s1, s2, hyper[0], hyper[1], hyper[2],
                  hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, step, status)
    else:
        rmsprop_step(params, grads, s0, s1, s2, hyper[0], hyper[1], hyper[2],
                     hyper[3], hyper[4], hyper[5] != 0.0, status)
