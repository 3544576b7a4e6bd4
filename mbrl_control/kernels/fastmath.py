"""Branch-free float32 elementary functions that vectorise, callable from every kernel target.

Why: the fused MPPI kernels run one loop over a block of samples per time step and rely on
LLVM to turn that loop into AVX-512 code. A call to libm (``sin``, ``tanh``, ``log``) inside
the loop stops the vectoriser (Numba has no vector math library here), so the few functions
the models need are written as range reduction + polynomial with selects only. Accuracy is
a few float32 ulp (tested against NumPy in float64), so the kernels still agree with the
torch models to float32 tolerance.

Every function is a plain Python function registered with :func:`device_function`: it runs
as Python, compiles inside ``numba.njit`` kernels and inside ``numba.cuda.jit`` kernels.
All constants are float32 so that no float64 promotion sneaks into the kernels.
"""

from __future__ import annotations

import numpy as np
from numba.extending import overload

F32 = np.float32
CPU_KERNEL_OPTIONS = {"error_model": "numpy"}
"""Options of every CPU kernel and helper: no Python exceptions in arithmetic (vectorisable)."""

ZERO = F32(0.0)
HALF = F32(0.5)
ONE = F32(1.0)
TWO = F32(2.0)
QUARTER = F32(0.25)
FOUR = F32(4.0)

# Cody-Waite split of pi/2: the leading parts have few mantissa bits so n * part is exact.
_TWO_OVER_PI = F32(0.6366197723675814)
_PIO2_A = F32(1.5703125)
_PIO2_B = F32(4.837512969970703125e-4)
_PIO2_C = F32(7.54978995489188216e-8)
# Taylor coefficients of sin / cos on [-pi/4, pi/4] (truncation error < 2e-9).
_S3, _S5, _S7, _S9 = F32(-1.0 / 6.0), F32(1.0 / 120.0), F32(-1.0 / 5040.0), F32(1.0 / 362880.0)
_C2, _C4, _C6, _C8, _C10 = (F32(-0.5), F32(1.0 / 24.0), F32(-1.0 / 720.0), F32(1.0 / 40320.0),
                            F32(-1.0 / 3628800.0))

_LN2_HI = F32(0.693359375)  # exact in 10 bits
_LN2_LO = F32(-2.12194440e-4)  # ln 2 - _LN2_HI

_TANH_CLAMP = F32(9.0)  # tanh(9) rounds to 1 in float32
_TP0, _TP1, _TP2, _TP3, _TP4 = (F32(0.9999999794960446), F32(0.13381137787709058), F32(0.0034957210115454454),
                                F32(2.0611255376418017e-05), F32(1.3357644768661947e-08))
_TQ1, _TQ2, _TQ3, _TQ4 = (F32(0.46714453417305424), F32(0.025877488559081844), F32(0.00032858515617382783),
                          F32(7.777785304177342e-07))

# atan: reduction to |z| <= tan(pi/8) by the octant (Cephes' atanf scheme), then an odd polynomial
_TAN_3PI_8, _TAN_PI_8 = F32(2.414213562373095), F32(0.41421356237309503)
_PI_2, _PI_4 = F32(1.5707963267948966), F32(0.7853981633974483)
_A1, _A3, _A5, _A7 = F32(-3.33329491539e-1), F32(1.99777106478e-1), F32(-1.38776856032e-1), F32(8.05374449538e-2)

_SQRT_HALF = F32(0.7071067811865476)
_L3, _L5, _L7, _L9 = F32(1.0 / 3.0), F32(1.0 / 5.0), F32(1.0 / 7.0), F32(1.0 / 9.0)
_P16, _P8, _P4, _P2 = F32(65536.0), F32(256.0), F32(16.0), F32(4.0)
_M16, _M8, _M4, _M2 = F32(2.0**-16), F32(2.0**-8), F32(2.0**-4), F32(2.0**-2)


def device_function(fn=None, *, inline: str = "never"):
    """Register ``fn`` so that Numba CPU and CUDA kernels can call it (it stays a Python function too).

    ``inline="always"`` inlines at Numba IR level, for functions too big for LLVM's inliner
    whose call would otherwise stop the vectoriser of the calling loop.
    """

    def register(f):
        def _impl(*args):
            return f

        # CPU: NumPy error model, so that a float division has no ZeroDivisionError branch (which
        # would stop vectorisation); CUDA uses that error model by default.
        overload(f, target="cpu", strict=False, inline=inline, jit_options=CPU_KERNEL_OPTIONS)(_impl)
        overload(f, target="cuda", strict=False, inline=inline)(_impl)
        return f

    return register if fn is None else register(fn)


@device_function
def select(cond, a, b):
    """``a if cond else b`` as a call: keeps conditional expressions out of IR-inlined functions."""
    return a if cond else b


@device_function
def sin_cos(x):
    """(sin x, cos x) in float32, |x| up to a few hundred radians."""
    n = np.floor(x * _TWO_OVER_PI + HALF)
    r = ((x - n * _PIO2_A) - n * _PIO2_B) - n * _PIO2_C
    r2 = r * r
    s = r + r * r2 * (_S3 + r2 * (_S5 + r2 * (_S7 + r2 * _S9)))
    c = ONE + r2 * (_C2 + r2 * (_C4 + r2 * (_C6 + r2 * (_C8 + r2 * _C10))))
    q = n - FOUR * np.floor(n * QUARTER)  # quadrant 0..3
    swap = (q == ONE) | (q == F32(3.0))
    sin_v = c if swap else s
    cos_v = s if swap else c
    sin_v = -sin_v if q >= TWO else sin_v
    cos_v = -cos_v if (q == ONE) | (q == TWO) else cos_v
    return sin_v, cos_v


@device_function
def tan32(x):
    """tan(x) in float32 from :func:`sin_cos` (infinite only where cos rounds to 0)."""
    s, c = sin_cos(x)
    return s / c


@device_function
def atan32(x):
    """atan(x) in float32, any x: the octant's offset (0, pi/4, pi/2) plus an odd degree-9 polynomial
    in the reduced argument (|z| <= tan(pi/8)); a few ulp, branch-free."""
    a = abs(x)
    big = a > _TAN_3PI_8
    mid = a > _TAN_PI_8
    z = select(big, -ONE / select(big, a, ONE), select(mid, (a - ONE) / (a + ONE), a))
    offset = select(big, _PI_2, select(mid, _PI_4, ZERO))
    z2 = z * z
    r = offset + z + z * z2 * (_A1 + z2 * (_A3 + z2 * (_A5 + z2 * _A7)))
    return select(x < ZERO, -r, r)


@device_function(inline="always")
def tanh32(x):
    """tanh(x) in float32: x P(x^2) / Q(x^2) with degree-4 polynomials, |x| clamped to 9.

    The coefficients are this project's own weighted least-squares fit of the relative error on
    [0, 9] (linearised, iterated toward equal ripple; all positive, so Q > 0 and nothing cancels):
    max relative error 2e-8 in float64, 4e-7 evaluated in float32. One division, ten FMAs: four
    times cheaper than an exp-based tanh, which matters in the residual MLP (64 per sample-step).
    """
    a = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    z = a * a
    num = _TP0 + z * (_TP1 + z * (_TP2 + z * (_TP3 + z * _TP4)))
    den = ONE + z * (_TQ1 + z * (_TQ2 + z * (_TQ3 + z * _TQ4)))
    return clip32(a * num / den, -ONE, ONE)


@device_function
def log_unit(u):
    """Natural log of u in [2**-31, 1]: exponent by selects, then 2*atanh((m-1)/(m+1)) series."""
    e = ZERO
    b = u < _M16
    u = u * (_P16 if b else ONE)
    e = e + (F32(16.0) if b else ZERO)
    b = u < _M8
    u = u * (_P8 if b else ONE)
    e = e + (F32(8.0) if b else ZERO)
    b = u < _M4
    u = u * (_P4 if b else ONE)
    e = e + (FOUR if b else ZERO)
    b = u < _M2
    u = u * (_P2 if b else ONE)
    e = e + (TWO if b else ZERO)
    b = u < _SQRT_HALF
    u = u * (TWO if b else ONE)
    e = e + (ONE if b else ZERO)
    b = u < _SQRT_HALF  # u in [0.25, 0.5) after the coarse steps needs one more doubling
    u = u * (TWO if b else ONE)
    e = e + (ONE if b else ZERO)
    s = (u - ONE) / (u + ONE)
    s2 = s * s
    series = TWO * s * (ONE + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9))))
    return series - e * _LN2_HI - e * _LN2_LO


@device_function
def clip32(x, lo, hi):
    """min(max(x, lo), hi)."""
    return min(max(x, lo), hi)

