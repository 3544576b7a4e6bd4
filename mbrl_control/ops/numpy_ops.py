"""NumPy backend of the definition vocabulary (see :mod:`mbrl_control.ops`): float64 reference."""

from __future__ import annotations

import numpy as np

sin = np.sin
cos = np.cos
sqrt = np.sqrt
tanh = np.tanh
exp = np.exp
abs = np.abs  # noqa: A001 - the vocabulary's name
min = np.minimum  # noqa: A001
max = np.maximum  # noqa: A001
floor = np.floor
select = np.where
logical_and = np.logical_and
logical_or = np.logical_or


def sin_cos(x):
    """(sin x, cos x)."""
    return np.sin(x), np.cos(x)


def clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)
