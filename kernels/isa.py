"""The vector instruction set the matrix-product tiles are generated for.

Each entry of ``ISAS`` describes a register file: the bytes of one vector
register, how many there are, and the target features that provide them.
``kernels.tiles`` derives its tile's shape from that alone (``tile_shape``),
so an instruction set is one line here.

The instruction set is read off the target Numba compiles for, not only the
host: Numba's JIT takes its features from ``NUMBA_CPU_FEATURES`` when set,
else the host's. ``FASTBP_ISA`` (``auto``, the default, or a name of
``ISAS``, or ``none``) picks one the target supports: ``none`` sends every
product to BLAS. ``auto`` takes the first of ``AUTO`` the target supports:
NEON has its table entry, but its tiles are chosen only on request, for want
of an ARM machine to check them on.

``environment`` gives the variables that make a child process compile as an
AVX2 machine would, on a machine with AVX-512, so that every path can be
tested and timed on either.
"""
import os

import llvmlite.binding

# name -> (bytes per vector register, vector registers, target features needed)
ISAS = {
    "avx512": (64, 32, ("avx512f",)),
    "avx2": (32, 16, ("avx2", "fma")),
    "neon": (16, 32, ("neon",)),
}
AUTO = ("avx512", "avx2")
SETTING = "FASTBP_ISA"


def target_features():
    """The features Numba's JIT compiles for: ``{"avx2", "fma", ...}``."""
    from numba.core import config

    if config.CPU_FEATURES is None:
        return host_features()
    return {item[1:] for item in config.CPU_FEATURES.split(",") if item.startswith("+")}


def host_features():
    """The features of this CPU."""
    flat = llvmlite.binding.get_host_cpu_features().flatten()
    return {item[1:] for item in flat.split(",") if item.startswith("+")}


def supported(features=None):
    """The names of ``ISAS`` whose features the target has, best first."""
    features = target_features() if features is None else features
    return [name for name, (_, _, needed) in ISAS.items() if all(f in features for f in needed)]


def choose(setting=None, features=None):
    """The ISA name that ``FASTBP_ISA`` (or ``setting``) selects, or None
    for none; ValueError naming the setting when the target cannot run it."""
    setting = (os.environ.get(SETTING, "auto") if setting is None else setting).strip().lower() or "auto"
    features = target_features() if features is None else features
    can = supported(features)
    if setting == "none":
        return None
    if setting == "auto":
        return next((name for name in AUTO if name in can), None)
    if setting not in ISAS:
        raise ValueError(f"{SETTING} must be auto, none or one of {', '.join(ISAS)}, got {setting!r}")
    if setting not in can:
        raise ValueError(f"{SETTING}={setting}: the target Numba compiles for lacks "
                         f"{', '.join(f for f in ISAS[setting][2] if f not in features)} "
                         f"(it supports: {', '.join(can) or 'none of ' + ', '.join(ISAS)}); "
                         f"set {SETTING} to one of those, or to none")
    return setting


def tile_shape(vector_bytes, registers):
    """(rows, vectors) of the register tile for a register file: the tile
    holds rows * vectors sums, loads a row of B (vectors registers) and
    broadcasts one element of A (one register), which must all fit; among
    widths of a power of two, the shape with the fewest loads per
    multiply-add, 1 / rows + 1 / vectors. AVX-512 (32 x 64 bytes) gives
    6 x 4, AVX2 (16 x 32 bytes) 6 x 2."""
    best = None
    vectors = 1
    while 2 * vectors + 1 <= registers:  # at least one row
        rows = (registers - vectors - 1) // vectors
        cost = 1 / rows + 1 / vectors
        if best is None or cost < best[0]:
            best = (cost, rows, vectors)
        vectors *= 2
    return best[1], best[2]


def environment(name, base=None):
    """The environment for a child process whose tiles are ``name``'s
    (a ``FASTBP_ISA`` value). For ``"avx2"``, Numba compiles for the host's
    features with AVX-512 and its successors turned off, so that on a host
    with AVX-512 all JIT code is what an AVX2 machine runs (16 vector
    registers, no 512-bit vectors); otherwise for the host."""
    env = dict(os.environ if base is None else base)
    env[SETTING] = name
    env.pop("NUMBA_CPU_FEATURES", None)
    if name == "avx2":
        host = llvmlite.binding.get_host_cpu_features().flatten().split(",")
        wide = ("+avx512", "+avx10", "+amx", "+evex512")
        env["NUMBA_CPU_FEATURES"] = ",".join("-" + item[1:] if item.startswith(wide) else item for item in host)
    return env


NAME = choose()
