"""Elementwise activations, forward and backward side by side.

Every activation is selected by an integer code, so one compiled loop serves
all of them and a network's activations can be passed to a kernel as an array.
Two float parameters travel with the code; their meaning per activation:

=============  ====================  ===============
code           p1                    p2
=============  ====================  ===============
IDENTITY       unused                unused
RELU           unused                unused
LEAKY_RELU     negative_slope        unused
SIGMOID        unused                unused
TANH           unused                unused
GELU           unused (erf form)     unused
GELU_TANH      unused (tanh form)    unused
SILU           unused                unused
ELU            alpha                 unused
SOFTPLUS       beta                  threshold
=============  ====================  ===============

The scalar arithmetic runs in float64 whatever the array dtype, and the result
is rounded once when stored; each formula is the one torch.nn.functional uses,
rearranged only where torch's form would overflow for large |x|. NaN and
±inf give what torch gives: each comparison is written so that a NaN input
takes torch's branch, which keeps it NaN in the forward pass.
"""
import math

from kernels.checks import check_same_shape
from kernels.config import jit

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, GELU, GELU_TANH, SILU, ELU, SOFTPLUS = range(10)
N_ACTIVATIONS = 10

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_KAPPA = 0.044715


@jit
def _sigmoid(x):
    # Two branches so that exp never sees a large positive argument.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@jit
def activate(x, code, p1, p2):
    """f(x) for one float64 value."""
    if code == IDENTITY:
        return x
    if code == RELU:
        # not max(x, 0.0): that is 0 for NaN, and training would go on with finite losses
        return 0.0 if x <= 0.0 else x
    if code == LEAKY_RELU:
        return x if x > 0.0 else p1 * x
    if code == SIGMOID:
        return _sigmoid(x)
    if code == TANH:
        return math.tanh(x)
    if code == GELU:
        return 0.5 * x * (1.0 + math.erf(x * _SQRT_HALF))
    if code == GELU_TANH:
        inner = _SQRT_2_OVER_PI * (x + _GELU_KAPPA * x * x * x)
        return 0.5 * x * (1.0 + math.tanh(inner))
    if code == SILU:
        return x * _sigmoid(x)
    if code == ELU:
        return x if x > 0.0 else p1 * math.expm1(x)
    if code == SOFTPLUS:
        scaled = p1 * x
        if scaled > p2:
            return x
        # log1p(exp(s)) written so that exp never overflows
        return (max(scaled, 0.0) + math.log1p(math.exp(-abs(scaled)))) / p1
    return math.nan


@jit
def derivative(x, y, code, p1, p2):
    """f'(x) for one float64 value, given the forward output ``y = f(x)``."""
    if code == IDENTITY:
        return 1.0
    if code == RELU:
        return 0.0 if y <= 0.0 else 1.0
    if code == LEAKY_RELU:
        return 1.0 if x > 0.0 else p1
    if code == SIGMOID:
        return y * (1.0 - y)
    if code == TANH:
        return 1.0 - y * y
    if code == GELU:
        cdf = 0.5 * (1.0 + math.erf(x * _SQRT_HALF))
        return cdf + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x)
    if code == GELU_TANH:
        x_squared = x * x
        tanh_inner = math.tanh(_SQRT_2_OVER_PI * (x + _GELU_KAPPA * x_squared * x))
        left = 0.5 * (1.0 + tanh_inner)
        right = 0.5 * x * (1.0 - tanh_inner * tanh_inner) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_KAPPA * x_squared)
        return left + right
    if code == SILU:
        s = _sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    if code == ELU:
        return p1 * math.exp(x) if x <= 0.0 else 1.0
    if code == SOFTPLUS:
        scaled = p1 * x
        return 1.0 if scaled > p2 else _sigmoid(scaled)
    return math.nan


@jit
def _forward_loop(out, x, code, p1, p2):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = activate(float(x[i, j]), code, p1, p2)


@jit
def _backward_loop(dx, dout, x, out, code, p1, p2, in_place):
    # In place, the loop must read dx, not dout: the compiler checks at run
    # time that the arrays it writes do not overlap those it reads, and two
    # names for one array fail that check, which leaves the loop scalar (7x
    # slower for ReLU). On the flag, which does not change inside, it
    # compiles both loops and picks one.
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            gradient = dx[i, j] if in_place else dout[i, j]
            dx[i, j] = gradient * derivative(float(x[i, j]), float(out[i, j]), code, p1, p2)


@jit
def activation_forward(out, x, code, p1, p2):
    """``out = f(x)`` elementwise.

    Parameters
    ----------
    out : (batch, n) array, written; may be ``x`` itself
    x : (batch, n) array
    code : int, one of the module's activation codes
    p1, p2 : float, the activation's parameters (see the module docstring)

    ``out`` has the shape and dtype of ``x`` (ValueError, TypeError).
    """
    check_same_shape("activation_forward", "out", out, "x", x)
    check_code("activation_forward", code)
    _activation_forward(out, x, code, p1, p2)


@jit
def check_code(kernel, code):
    if code < 0 or code >= N_ACTIVATIONS:
        raise ValueError(kernel + ": code must be one of kernels.IDENTITY ... kernels.SOFTPLUS (0 to "
                         + str(N_ACTIVATIONS - 1) + "), got " + str(code))


@jit
def _activation_forward(out, x, code, p1, p2):
    # Called with a constant code, the loop is inlined with its switch folded
    # away and vectorizes: that matters for the cheap, memory-bound
    # activations; the others are dominated by their exp/erf/tanh.
    if code == RELU:
        _forward_loop(out, x, RELU, p1, p2)
    elif code == LEAKY_RELU:
        _forward_loop(out, x, LEAKY_RELU, p1, p2)
    elif code == IDENTITY:
        _forward_loop(out, x, IDENTITY, p1, p2)
    else:
        _forward_loop(out, x, code, p1, p2)


@jit
def activation_backward(dx, dout, x, out, code, p1, p2):
    """``dx = dout * f'(x)`` elementwise.

    Parameters
    ----------
    dx : (batch, n) array, written; may be ``dout`` itself
    dout : (batch, n) array, gradient of the loss w.r.t. the activation output
    x : (batch, n) array, the forward input
    out : (batch, n) array, the forward output
    code, p1, p2 : as in ``activation_forward``

    All four arrays share one shape and dtype (ValueError, TypeError).
    """
    kernel = "activation_backward"
    check_same_shape(kernel, "dout", dout, "x", x)
    check_same_shape(kernel, "out", out, "x", x)
    check_same_shape(kernel, "dx", dx, "x", x)
    check_code(kernel, code)
    _activation_backward(dx, dout, x, out, code, p1, p2)


@jit
def _activation_backward(dx, dout, x, out, code, p1, p2):
    # in the forward pass this was: out = f(x)
    in_place = dx.ctypes.data == dout.ctypes.data and dx.strides == dout.strides
    # IDENTITY takes the general loop: the fused step skips this for it (the
    # derivative is 1), and a loop of its own was the largest of these,
    # compiled again into every kernel above
    if code == RELU:
        _backward_loop(dx, dout, x, out, RELU, p1, p2, in_place)
    elif code == LEAKY_RELU:
        _backward_loop(dx, dout, x, out, LEAKY_RELU, p1, p2, in_place)
    else:
        _backward_loop(dx, dout, x, out, code, p1, p2, in_place)
