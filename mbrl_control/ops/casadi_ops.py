"""CasADi backend of the definition vocabulary (see :mod:`mbrl_control.ops`): symbolic, for NMPC and
the exact iLQR/DDP derivatives."""

from __future__ import annotations

import casadi as ca

sin = ca.sin
cos = ca.cos
sqrt = ca.sqrt
tan = ca.tan
atan = ca.atan
tanh = ca.tanh
exp = ca.exp
abs = ca.fabs  # noqa: A001 - the vocabulary's name
min = ca.fmin  # noqa: A001
max = ca.fmax  # noqa: A001
floor = ca.floor
select = ca.if_else
logical_and = ca.logic_and
logical_or = ca.logic_or


def sin_cos(x):
    """(sin x, cos x)."""
    return ca.sin(x), ca.cos(x)


def clip(x, lo, hi):
    return ca.fmin(ca.fmax(x, lo), hi)


# ------------------------------------------------------------------ network vocabulary (see NETWORK_VOCABULARY)
# A vector is a column; an ensemble's vectors are the columns of one matrix, member ``e`` in column ``e``.
def softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    return ca.fmax(x, 0) + ca.log1p(ca.exp(-ca.fabs(x)))


def affine(w, b, x):
    """``w[e] x_e + b[e]`` for every member ``e``: ``w`` (E, out, in) and ``b`` (E, out) numbers (or E
    CasADi matrices and columns), ``x`` (in, E), or (in, 1) shared by all members; returns (out, E)."""
    shared = x.shape[1] == 1
    return ca.horzcat(*[ca.mtimes(_matrix(w[e]), x if shared else x[:, e]) + _matrix(b[e]) for e in range(len(w))])


def _matrix(a):
    return a if isinstance(a, (ca.SX, ca.MX, ca.DM)) else ca.DM(a)


def part(x, start, stop):
    """Components ``start:stop`` of vectors (the rows)."""
    return x[start:stop, :]


def member_average(x):
    """Average over the members (the columns)."""
    return ca.sum2(x) / x.shape[1]
