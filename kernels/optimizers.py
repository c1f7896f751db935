"""Optimizer updates over one flat parameter buffer, with torch.optim's rules.

Each kernel updates ``params`` in place from ``grads`` and its state buffers
(all 1-D, one entry per parameter). ``step`` is the 1-based number of the
update being taken, as torch counts it. Scalar arithmetic runs in float64 and
is rounded once when stored.
"""
import math

from kernels.config import jit

SGD, ADAM, RMSPROP = range(3)


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
    for i in range(params.shape[0]):
        grad = grads[i] + weight_decay * params[i]
        if momentum != 0.0:
            if step == 1:
                buffer = grad
            else:
                buffer = momentum * momentum_buffer[i] + (1.0 - dampening) * grad
            momentum_buffer[i] = buffer
            grad = grad + momentum * momentum_buffer[i] if nesterov else momentum_buffer[i]
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
    step_size = lr / (1.0 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
    for i in range(params.shape[0]):
        param = float(params[i])
        grad = float(grads[i])
        if decoupled:
            param = param * (1.0 - lr * weight_decay)
        else:
            grad = grad + weight_decay * param
        # torch's lerp form: m + (1 - beta1) * (g - m)
        first = exp_avg[i] + (1.0 - beta1) * (grad - exp_avg[i])
        second = beta2 * exp_avg_sq[i] + (1.0 - beta2) * grad * grad
        exp_avg[i] = first
        exp_avg_sq[i] = second
        # Read the moments back so float32 buffers round exactly as torch's do.
        second = float(exp_avg_sq[i])
        if amsgrad:
            second = max(float(max_exp_avg_sq[i]), second)
            max_exp_avg_sq[i] = second
        denominator = math.sqrt(second) / bias_correction2_sqrt + eps
        params[i] = param - step_size * exp_avg[i] / denominator


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
    for i in range(params.shape[0]):
        grad = grads[i] + weight_decay * params[i]
        square_avg[i] = alpha * square_avg[i] + (1.0 - alpha) * grad * grad
        square = float(square_avg[i])
        if centered:
            grad_avg[i] = grad_avg[i] + (1.0 - alpha) * (grad - grad_avg[i])
            square = square_avg[i] - grad_avg[i] * grad_avg[i]
        denominator = math.sqrt(square) + eps
        if momentum > 0.0:
            momentum_buffer[i] = momentum * momentum_buffer[i] + grad / denominator
            params[i] = params[i] - lr * momentum_buffer[i]
        else:
            params[i] = params[i] - lr * grad / denominator


@jit
def optimizer_step(code, params, grads, state0, state1, state2, hyper, step):
    """Dispatch on ``code`` with the state and hyperparameters packed in arrays.

    Parameters
    ----------
    code : SGD, ADAM or RMSPROP
    params, grads : (n,) arrays
    state0, state1, state2 : the optimizer's (n,) buffers in the order of
        its kernel's arguments; a buffer it does not use may be empty
    hyper : float64 array of the kernel's scalar arguments, in the order of
        the kernel's signature (booleans as 0.0 / 1.0)
    step : int, 1-based
    """
    if code == SGD:
        sgd_step(params, grads, state0, hyper[0], hyper[1], hyper[2], hyper[3],
                 hyper[4] != 0.0, step)
    elif code == ADAM:
        adam_step(params, grads, state0, state1, state2, hyper[0], hyper[1], hyper[2],
                  hyper[3], hyper[4], hyper[5] != 0.0, hyper[6] != 0.0, step)
    else:
        rmsprop_step(params, grads, state0, state1, state2, hyper[0], hyper[1], hyper[2],
                     hyper[3], hyper[4], hyper[5] != 0.0)
