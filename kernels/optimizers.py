"""Optimizer updates over one flat parameter buffer, with torch.optim's rules.

Each kernel updates ``params`` in place from ``grads`` and its state buffers
(all 1-D, one entry per parameter). ``step`` is the 1-based number of the
update being taken, as torch counts it. Scalars such as the bias corrections
are computed in float64 and then, like torch's, the elementwise arithmetic
runs in the buffers' dtype: float32 updates round as torch's do, and run at
twice the vector width of float64.
"""
import math

import numpy as np
from numba.extending import overload

from kernels.checks import check_dtype, check_size

from kernels.config import inline_jit, jit

SGD, ADAM, RMSPROP = range(3)
# how many entries of ``hyper`` each optimizer reads (see optimizer_step)
HYPER_LENGTHS = (5, 7, 6)


# inlined, as its checks are: compiled on its own, it was compiled once per
# buffer name
@inline_jit
def check_buffer(kernel, name, buffer, params, used):
    """A buffer updated alongside ``params`` has its length and dtype; one
    left unused may be anything (an empty array, say)."""
    check_dtype(kernel, name, buffer, "params", params)
    if used:
        check_size(kernel, name, buffer, 0, params.shape[0], "params.shape[0] (n)")


@jit
def sgd_step(params, grads, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, step):
    """SGD with optional momentum, dampening, Nesterov and L2 weight decay.

    Parameters
    ----------
    params, grads : (n,) arrays; params updated
    momentum_buffer : (n,) array, updated (unused when ``momentum == 0``)
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
    step : int, 1 on the first update (the buffer then starts as the gradient)
    """
    check_buffer("sgd_step", "grads", grads, params, True)
    check_buffer("sgd_step", "momentum_buffer", momentum_buffer, params, momentum != 0.0)
    _sgd_step(params, grads, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, step)


@inline_jit
def _sgd_step(params, grads, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, step):
    real = params.dtype.type
    lr, momentum, weight_decay = real(lr), real(momentum), real(weight_decay)
    undamped = real(1.0 - dampening)
    use_momentum = momentum != 0.0
    first = step == 1
    for i in range(params.shape[0]):
        grad = grads[i] + weight_decay * params[i]
        if use_momentum:
            buffer = grad if first else momentum * momentum_buffer[i] + undamped * grad
            momentum_buffer[i] = buffer
            grad = grad + momentum * buffer if nesterov else buffer
        params[i] = params[i] - lr * grad


@jit
def adam_step(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, amsgrad, decoupled, step):
    """Adam, or AdamW when ``decoupled`` (weight decay applied to the
    parameters instead of added to the gradient).

    Parameters
    ----------
    params, grads : (n,) arrays; params updated
    exp_avg, exp_avg_sq : (n,) arrays, the first and second moments, updated
    max_exp_avg_sq : (n,) array, running maximum of ``exp_avg_sq`` (amsgrad)
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad, decoupled : bool
    step : int, 1-based, for the bias corrections
    """
    kernel = "adam_step"
    check_buffer(kernel, "grads", grads, params, True)
    check_buffer(kernel, "exp_avg", exp_avg, params, True)
    check_buffer(kernel, "exp_avg_sq", exp_avg_sq, params, True)
    check_buffer(kernel, "max_exp_avg_sq", max_exp_avg_sq, params, amsgrad)
    _adam_step(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, amsgrad,
               decoupled, step)


@inline_jit
def bias_correction(beta, step):
    """``1 - beta ** step``, Adam's bias correction for 0 <= beta < 1.

    Since ``beta ** step <= exp(-(1 - beta) * step)``, from ``(1 - beta) *
    step > 40`` on it is below 2**-57 and the difference rounds to exactly
    1.0: the power is not computed. That matters for small models, where
    it is much of a step, and more so once it underflows (beta = 0.9 from
    step 6,700): it is taken by repeated squaring, and arithmetic on
    subnormal numbers is slow.
    """
    if (1.0 - beta) * step > 40.0:
        return 1.0
    return 1.0 - beta ** step


@jit
def _adam_step(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
               weight_decay, amsgrad, decoupled, step):
    real = params.dtype.type
    step_size = real(lr / bias_correction(beta1, step))
    bias_correction2_sqrt = real(math.sqrt(bias_correction(beta2, step)))
    # Branch-free weight decay keeps the loop vectorizable: multiplying by
    # 1.0 and adding 0.0 * param leave the other variant's numbers unchanged.
    shrink = real(1.0 - lr * weight_decay if decoupled else 1.0)
    l2 = real(0.0 if decoupled else weight_decay)
    one_minus_beta1, one_minus_beta2 = real(1.0 - beta1), real(1.0 - beta2)
    beta2, eps = real(beta2), real(eps)
    for i in range(params.shape[0]):
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
        root = np.sqrt(second)
        # past the first steps the correction is 1: skipping the division
        # (a no-op then) takes it off the chain one step waits on the last
        if bias_correction2_sqrt != 1.0:
            root = root / bias_correction2_sqrt
        params[i] = param - step_size * first / (root + eps)


@jit
def rmsprop_step(params, grads, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                 weight_decay, momentum, centered):
    """RMSprop with optional momentum, centering and L2 weight decay.

    Parameters
    ----------
    params, grads : (n,) arrays; params updated
    square_avg : (n,) array, running mean of squared gradients, updated
    momentum_buffer : (n,) array, updated when ``momentum > 0``
    grad_avg : (n,) array, running mean of gradients, updated when ``centered``
    lr, alpha, eps, weight_decay, momentum : float
    centered : bool
    """
    kernel = "rmsprop_step"
    check_buffer(kernel, "grads", grads, params, True)
    check_buffer(kernel, "square_avg", square_avg, params, True)
    check_buffer(kernel, "momentum_buffer", momentum_buffer, params, momentum > 0.0)
    check_buffer(kernel, "grad_avg", grad_avg, params, centered)
    _rmsprop_step(params, grads, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                  centered)


@jit
def _rmsprop_step(params, grads, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                  weight_decay, momentum, centered):
    real = params.dtype.type
    lr, alpha, eps, weight_decay, momentum = real(lr), real(alpha), real(eps), real(weight_decay), real(momentum)
    one_minus_alpha = real(1.0) - alpha
    use_momentum = momentum > 0.0
    for i in range(params.shape[0]):
        grad = grads[i] + weight_decay * params[i]
        square = alpha * square_avg[i] + one_minus_alpha * grad * grad
        square_avg[i] = square
        if centered:
            average = grad_avg[i] + one_minus_alpha * (grad - grad_avg[i])
            grad_avg[i] = average
            square = square - average * average
        denominator = np.sqrt(square) + eps
        if use_momentum:
            buffer = momentum * momentum_buffer[i] + grad / denominator
            momentum_buffer[i] = buffer
            params[i] = params[i] - lr * buffer
        else:
            params[i] = params[i] - lr * grad / denominator


# An optimizer's state is one (k, n) array: row i is the i-th buffer
# argument of its kernel above. ``k`` is one past the last row its
# configuration uses, so an optimizer configured without momentum or
# amsgrad allocates no buffer for it.
def state_rows(code, hyper):
    """``k``, the rows of state an optimizer with these hyperparameters
    keeps: its moment buffers in use, in the order of its kernel's arguments,
    up to the last one it reads."""
    used = state_used(code, hyper)
    return max([i + 1 for i in range(len(used)) if used[i]] + [0])


@jit
def state_used(code, hyper):
    """Which of the three buffer arguments of the kernel of ``code`` these
    hyperparameters have it update."""
    if code == SGD:
        return (hyper[1] != 0.0, False, False)
    if code == ADAM:
        return (True, True, hyper[5] != 0.0)
    return (True, hyper[4] > 0.0, hyper[5] != 0.0)


@inline_jit
def state_row(state, i, first, end, params):
    """Row ``i`` of the (k, n) ``state``, elements ``first:end``; for a row
    past ``k`` (one the optimizer does not read), an empty array."""
    if i < state.shape[0]:
        return state[i][first:end]
    return empty_row(state, params)


def empty_row(state, params):
    """An empty row of ``state``: a slice of ``params``, which costs nothing to
    make, where the two share a dtype (always, but for arguments the checks
    refuse at run time, which must still compile)."""
    return params[:0]


@overload(empty_row, inline="always")
def _empty_row(state, params):
    if state.dtype == params.dtype:
        return lambda state, params: params[:0]
    return lambda state, params: state.reshape(state.size)[:0]


@jit
def optimizer_step(code, params, grads, state, hyper, step):
    """Dispatch on ``code`` with the state and hyperparameters packed in arrays.

    Parameters
    ----------
    code : SGD, ADAM or RMSPROP
    params, grads : (n,) arrays
    state : (k, n) array, the optimizer's buffers in the order of its
        kernel's arguments (``state_rows`` says how many it keeps)
    hyper : float64 array of the kernel's scalar arguments, in the order of
        the kernel's signature (booleans as 0.0 / 1.0)
    step : int, 1-based
    """
    check_optimizer("optimizer_step", code, params, grads, state, hyper)
    _optimizer_step(code, params, grads, state, hyper, step, np.int64(0), params.shape[0])


@jit
def check_optimizer(kernel, code, params, grads, state, hyper):
    """``optimizer_step``'s arguments agree: a known code, enough
    hyperparameters, and a state of ``params``'s dtype with a row as long as
    ``params`` for each buffer the optimizer updates."""
    if code < 0 or code >= len(HYPER_LENGTHS):
        raise ValueError(kernel + ": the optimizer code must be kernels.SGD, ADAM or RMSPROP (0 to 2), got "
                         + str(code))
    check_size(kernel, "hyper", hyper, 0, HYPER_LENGTHS[code], "the optimizer's hyperparameter count")
    check_buffer(kernel, "grads", grads, params, True)
    check_dtype(kernel, "state", state, "params", params)
    used = state_used(code, hyper)
    for i in range(len(used)):
        if used[i]:
            if state.shape[0] <= i:
                raise ValueError(kernel + ": state must have a row for each buffer the optimizer updates, "
                                 "expected at least " + str(i + 1) + " rows, got " + str(state.shape[0]))
            check_size(kernel, "state", state, 1, params.shape[0], "params.shape[0] (n)")


# Adam's loop written into its caller, for the steps of tiny networks only:
# there it takes a step from 67 to 63 ns; inlined everywhere, it ran 40
# times slower over 21M parameters (330 ms against 8 ms).
_adam_step_inlined = inline_jit(_adam_step.py_func)


# The update of elements ``first:end`` of the flat buffers: the one place
# that knows which row of ``state`` is which argument of which kernel.
# Inlined into the epoch with _sgd_step, so that a tiny network's step reads
# the hyperparameters without a call; ``small`` says the step is one of those
# (see above). RMSprop's loop stays a call.
@inline_jit
def _optimizer_step(code, params, grads, state, hyper, step, first, end, small=False):
    s0, s1, s2 = (state_row(state, 0, first, end, params), state_row(state, 1, first, end, params),
                  state_row(state, 2, first, end, params))
    params, grads = params[first:end], grads[first:end]
    if code == SGD:
        _sgd_step(params, grads, s0, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4] != 0.0, step)
    elif code == ADAM:
        if small:
            _adam_step_inlined(params, grads, s0, s1, s2, hyper[0], hyper[1], hyper[2],
                               hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, step)
        else:
            _adam_step(params, grads, s0, s1, s2, hyper[0], hyper[1], hyper[2],
                      hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, step)
    else:
        _rmsprop_step(params, grads, s0, s1, s2, hyper[0], hyper[1], hyper[2],
                     hyper[3], hyper[4], hyper[5] != 0.0)
