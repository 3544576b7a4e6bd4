"""The math vocabulary every model, actuator and cost definition is written in.

A definition is a plain Python function whose first parameter is ``m``, the math namespace,
e.g. ``def derivative(m, x, u, p)``; it calls only ``m.<name>`` for the functions below and
the operators ``+ - * / **`` and comparisons. Each backend supplies the same names:

============  ====================================================================
backend       module
============  ====================================================================
torch         :mod:`mbrl_control.ops.torch_ops` (batched, differentiable)
CasADi        :mod:`mbrl_control.ops.casadi_ops` (symbolic: NMPC, iLQR derivatives)
NumPy         :mod:`mbrl_control.ops.numpy_ops` (float64 reference for tests)
Numba         :mod:`mbrl_control.kernels.numba_ops` (float32 scalars, CPU and CUDA)
============  ====================================================================

So one written equation is evaluated by torch, differentiated by CasADi and compiled into the
fused kernels (:mod:`mbrl_control.kernels.codegen` turns the same source into a Numba device
function). Rules a definition follows so that every backend can run it: no Python ``if`` on
values (use ``m.select``), no ``and``/``or``/``not`` on values (``m.logical_and`` ...), no
builtin ``min``/``max``/``abs`` (``m.min`` ...), states and controls are tuples indexed by
constant integers, parameters are read as attributes ``p.name``.

Networks (the learned residual, :mod:`mbrl_control.models.residual_definition`) are written over
vectors with :data:`NETWORK_VOCABULARY` in addition: ``affine(w, b, x)`` (``w x + b``),
``part(x, start, stop)`` (components of a vector), ``member_average(x)`` (mean over an
ensemble's members) and ``softplus``. A vector is the last axis in torch and NumPy (``x`` is a
batch (..., B, n) of rows, an ensemble's members on the first axis, weights (E, out, in)) and a
column in CasADi (member ``e`` in column ``e``). The Numba backend is scalar and has no network
vocabulary: the kernels evaluate the residual with the hand-specialised
:mod:`mbrl_control.kernels.residual_mlp` and :mod:`mbrl_control.kernels.ilqr_vehicle`, which the
tests compare with the definition.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

VOCABULARY = ("sin", "cos", "sin_cos", "tan", "atan", "sqrt", "tanh", "exp", "abs", "min", "max", "clip", "select",
              "logical_and", "logical_or", "floor")
"""The names every backend module defines."""
NETWORK_VOCABULARY = ("affine", "part", "member_average", "softplus")
"""The vector names of the torch, CasADi and NumPy backends (not Numba's scalar one)."""


def record(names: Sequence[str], values) -> Any:
    """A read-only record with attribute access by ``names`` (a namedtuple) over ``values``: how
    the torch, CasADi and NumPy backends hand ``x``, ``u``, ``ctx``, ``w`` ... to a definition."""
    names = tuple(names)
    cls = _RECORD_CLASSES.get(names)
    if cls is None:
        cls = _RECORD_CLASSES[names] = namedtuple("Record", names)
    return cls(*values)


_RECORD_CLASSES: dict[tuple[str, ...], type] = {}
