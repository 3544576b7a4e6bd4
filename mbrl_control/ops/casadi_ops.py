"""CasADi backend of the definition vocabulary (see :mod:`mbrl_control.ops`): symbolic, for NMPC and
the exact iLQR/DDP derivatives."""

from __future__ import annotations

import casadi as ca

sin = ca.sin
cos = ca.cos
sqrt = ca.sqrt
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
