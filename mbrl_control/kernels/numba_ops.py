"""Numba backend of the definition vocabulary (see :mod:`mbrl_control.ops`): float32 scalars.

Every name compiles inside vectorised Numba CPU loops and inside CUDA threads: the
transcendental functions are the branch-free polynomials of :mod:`.fastmath` (a libm call would
stop LLVM's vectoriser). Definitions reach this module through the source that
:mod:`.codegen` generates from them (their float literals become float32 there).
"""

from __future__ import annotations

import numpy as np

from mbrl_control.kernels.fastmath import atan32, clip32, device_function, select, sin_cos, tan32, tanh32

sqrt = np.sqrt
exp = np.exp
floor = np.floor
tanh = tanh32
tan = tan32
atan = atan32
clip = clip32
abs = abs  # noqa: A001 - the builtins compile in Numba
min = min  # noqa: A001
max = max  # noqa: A001
__all__ = ["sin", "cos", "sin_cos", "tan", "atan", "sqrt", "tanh", "exp", "abs", "min", "max", "clip", "select", "logical_and",
           "logical_or", "floor"]


@device_function
def sin(x):
    return sin_cos(x)[0]


@device_function
def cos(x):
    return sin_cos(x)[1]


@device_function
def logical_and(a, b):
    return a & b


@device_function
def logical_or(a, b):
    return a | b
