"""The one place where the compilation options of every kernel are decided.

fastmath stays off: it lets LLVM assume no NaN or inf, which would hide exactly
the non-finite values our callers are promised to hear about, and it reorders
floating-point sums, which would break the number-for-number agreement with
torch that the tests hold us to.

``cache=True`` writes compiled machine code next to the sources, so a second
process skips compilation; a change to any file of the package invalidates
every kernel's cache entry (``kernels._cache_stamp``). ``nogil=True`` lets a
caller run kernels from several Python threads.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.ufunc.parallel import _launch_threads

from kernels import _cache_stamp, isa

# before any kernel is decorated: see kernels/_cache_stamp.py
_cache_stamp.install()

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

jit = njit(**JIT_OPTIONS)

# For the few small functions that the step of a tiny network calls each
# step: inlined, their callers keep arrays in registers instead of handing
# them over as structs of seven words each. Also for small glue (views, the
# stages of a step, a check's comparison): a function compiled on its own
# costs a compilation of its own, and Numba links its code into every
# caller above it and optimizes and emits it again there.
inline_jit = njit(**JIT_OPTIONS, inline="always")

parallel_jit = njit(**JIT_OPTIONS, parallel=True)

# A data-parallel step gives each thread its rows of the minibatch and
# single-threaded BLAS calls, then adds up the threads' gradients: one
# synchronisation per step instead of one inside every BLAS call (a narrow
# network makes fifteen per step). Adding up the gradients costs a pass over
# them, so large networks are left to BLAS's own threads; and a part needs
# enough rows for its weight-gradient product (rows deep) to run at speed:
# measured, 2 x 32 rows of 784-128-10 are no faster than BLAS's threads,
# 2 x 512 rows of 64-64x4-3 are 1.3-1.4x faster.
DATA_PARALLEL_MAX_PARAMS = 1 << 18
# From this many parameters the serial epoch's passes over the flat buffers
# (the finite check and the optimizer update) are split between threads: a
# pass over 2**17 float32 parameters and their state takes some 10-40 us, a
# parallel launch a few.
PARALLEL_UPDATE = 1 << 17
# From this many multiply-adds a product is split between threads.
PARALLEL_GEMM = 1 << 20
DATA_PARALLEL_MIN_ROWS = 64


@inline_jit
def split_passes(n_params, batch_size):
    """Whether the serial epoch splits its passes over the flat buffers
    between threads: from PARALLEL_UPDATE parameters, and below that
    wherever the weight-gradient products run on several threads (their
    multiply-adds, n_params * batch_size at most, reach PARALLEL_GEMM).
    Those products leave each thread's share of the gradients in its own
    core's cache: one thread passing over all of them pulls the other half
    across: the update alone measured 15 us of a 91 us step of 784-128-10
    at batch 64 (100K parameters), and 3.4 us split.

    Never without tiles: the products then run on BLAS's threads, and a
    second pool between them makes each spin while the other works (a
    step of 784-128-10 at batch 64 ten times slower on two threads than on
    one), so the passes stay on the step's own thread."""
    return TILED and (n_params >= PARALLEL_UPDATE or n_params * batch_size >= PARALLEL_GEMM)


# whether the products run on fastbp's tiles (and threads) or on BLAS's
TILED = isa.NAME is not None


def data_parallel_chunks(n_params, batch_size, n_threads):
    """How many parts a minibatch is split into, one per thread (1: none)."""
    if n_threads < 2 or n_params > DATA_PARALLEL_MAX_PARAMS:
        return 1
    return max(1, min(n_threads, batch_size // DATA_PARALLEL_MIN_ROWS))


# numba.get_num_threads and numba.set_num_threads go through ctypes pointers,
# which keep every function that calls them out of the cache. These call the
# threading layer's functions by symbol name, resolved when cached code is
# loaded. Numba registers those symbols as it starts its threads, which it
# does lazily, not always before cached code that calls them is loaded (a
# call to an unresolved symbol crashes): start them now.
_launch_threads()
_INT = ir.IntType(32)


@intrinsic
def thread_count(typingctx):
    """The number of threads a parallel loop started here would use."""
    _launch_threads()

    def codegen(context, builder, signature, args):
        # declared as Numba's parallel loops declare it, which share the module
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []), "get_num_threads")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def set_thread_count(typingctx, n):
    """Set that number for this thread (thread-local, as ``numba.set_num_threads``)."""
    _launch_threads()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [_INT]),
                                            "set_num_threads")
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        builder.call(fn, [builder.trunc(value, _INT)])
        return context.get_dummy_value()

    return types.void(n), codegen
