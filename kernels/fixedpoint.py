"""Exact fixed-point arithmetic for the kernels, and the seqlock fence.

Owns: ``muldiv_round_nb`` (exact ``round_half_even(a * b / d)`` on int64 without
a 128-bit type), boundary conversions from float to fixed point, FX ratio and
conversion, and ``release_fence_nb``.
Runs on: the engine thread (inside kernels). Imports: numpy, numba.

Why not float money: totals must equal the sum of their parts to the cent, and a
replay must reproduce memory byte for byte. Integer cents give both; floats drift.
"""
import numpy as np
from numba import types
from numba.extending import intrinsic


from .enums import MAX_MONEY, NOTIONAL_DIV
from .jit import inline

_TWO63 = 9.2e18


@intrinsic
def release_fence_nb(typingctx):
    """A release fence: earlier stores are not reordered after later ones.

    On x86 it emits no instruction, but it stops LLVM from moving the seqlock's
    version stores across the data stores they guard.
    """

    def codegen(context, builder, signature, args):
        builder.fence("release")
        return context.get_dummy_value()

    return types.void(), codegen


@inline
def muldiv_round_nb(a, b, d):
    """round_half_even(a * b / d), exact, for int64 a, b and int64 d > 0.

    A float estimate lands within a few units of the answer; the remainder
    ``a*b - c*d`` is then computed exactly in wrapping 64-bit arithmetic (valid
    because the true remainder is far below 2**63) and corrects it. The caller
    guarantees the result fits (``|a*b/d| < 2**62``; see ``notional_ok_nb``).
    """
    c = np.int64(np.rint(np.float64(a) * np.float64(b) / np.float64(d)))
    r = np.int64(np.uint64(a) * np.uint64(b) - np.uint64(c) * np.uint64(d))
    q = r // d
    c += q
    r -= q * d  # now 0 <= r < d
    twice = 2 * r
    if twice > d or (twice == d and (c & 1) == 1):
        c += 1
    return c


@inline
def notional_ok_nb(a, b, d):
    """True when |a * b / d| stays within MAX_MONEY (no overflow downstream)."""
    return abs(np.float64(a) * np.float64(b) / np.float64(d)) <= MAX_MONEY


@inline
def value_ok_nb(qty, px_eff, ratio):
    """True when qty at px_eff, converted at ratio, stays within MAX_MONEY cents (float estimate).

    Guards every market value before it is computed: int64 arithmetic would wrap silently.
    """
    return abs(np.float64(qty) * np.float64(px_eff) / np.float64(NOTIONAL_DIV) * ratio) <= MAX_MONEY


@inline
def to_fixed_nb(x, scale, limit):
    """Float -> int64 count of 1/scale units, rounded to nearest; -1 flags bad.

    Returns (ok, value). Not ok for NaN, inf, or |value| > limit. Exact for any
    decimal with at most log10(scale) places while |x * scale| < 2**53.
    """
    if not np.isfinite(x):
        return False, np.int64(0)
    v = x * scale
    if abs(v) > limit:
        return False, np.int64(0)
    return True, np.int64(np.rint(v))


@inline
def fx_ratio_nb(fx, ccy, base):
    """Units of ``base`` per unit of ``ccy``: fx[ccy] / fx[base].

    ``fx[k]`` is the value of one unit of k in the pivot currency. NaN when
    either rate is unknown (never a silent 1.0). Exactly 1.0 when ccy == base.
    """
    if ccy == base:
        return 1.0
    return fx[ccy] / fx[base]


@inline
def fx_known_nb(ratio):
    return np.isfinite(ratio) and ratio > 0.0


@inline
def to_base_nb(cents, ratio):
    """Local cents -> base cents: rint(cents * ratio) (half to even)."""
    if ratio == 1.0:
        return cents
    return np.int64(np.rint(np.float64(cents) * ratio))
