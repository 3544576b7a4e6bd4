"""NumPy backend of the definition vocabulary (see :mod:`mbrl_control.ops`): float64 reference."""

from __future__ import annotations

import numpy as np

sin = np.sin
cos = np.cos
sqrt = np.sqrt
tan = np.tan
atan = np.arctan
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


# ------------------------------------------------------------------ network vocabulary (see NETWORK_VOCABULARY)
def softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    return np.logaddexp(0.0, x)


def affine(w, b, x):
    """``w x + b`` for a batch of row vectors: ``x`` (..., B, in), ``w`` (..., out, in), ``b`` (..., out);
    the leading (member) axes of ``w`` / ``b`` broadcast against those of ``x``; returns (..., B, out)."""
    return np.matmul(x, np.swapaxes(w, -1, -2)) + np.expand_dims(b, -2)


def part(x, start, stop):
    """Components ``start:stop`` of vectors (the last axis)."""
    return x[..., start:stop]


def member_average(x):
    """Average over the members (the first axis)."""
    return np.mean(x, axis=0)
