"""The cost-term interface: one file per term, every backend derived from it.

A cost term is a class with its weights (names, units, defaults), the context features it reads
(e.g. ``lateral`` from a race track), the states it needs by name, an optional per-sample
memory (``carry``, e.g. "has crashed"), whether it is smooth enough for iLQR/DDP, and two
definitions in the vocabulary of :mod:`mbrl_control.ops`:

- ``initial(m, x, ctx, w) -> carry``: the memory at the start state;
- ``stage(m, x, u, u_prev, ctx, carry, w) -> (cost, carry)``: the cost charged on the state
  ``x`` reached after applying ``u`` (``u_prev`` the control before it; at the first step the
  command applied last period), with ``ctx`` the context features at ``x``.

Inside the definitions, ``x.<state>``, ``u.<control>``, ``ctx.<feature>``, ``carry.<name>`` and
``w.<weight>`` are read by name; the kernels receive them as tuples and
:mod:`mbrl_control.kernels.codegen` turns each name into its index. See ``docs/architecture.md``
("add a cost term").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.ops import record  # noqa: F401 - definitions' records


@dataclass(frozen=True)
class Weight:
    """A named cost parameter with its unit and default."""

    name: str
    unit: str
    default: float | None
    doc: str = ""


class CostTerm:
    """Base of every cost-term definition (class attributes and static methods only)."""

    name: ClassVar[str] = ""
    weights: ClassVar[tuple[Weight, ...]] = ()
    context: ClassVar[tuple[str, ...]] = ()
    requires_states: ClassVar[tuple[str, ...]] = ()
    requires_controls: ClassVar[tuple[str, ...]] = ()
    carry: ClassVar[tuple[str, ...]] = ()
    smooth: ClassVar[bool] = False

    @staticmethod
    def initial(m, x, ctx, w):
        """The carry at the start state (a tuple, one entry per ``carry`` name)."""
        return ()

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        """(cost of this step, carry after it)."""
        raise NotImplementedError

    @classmethod
    def records(cls, state_names, control_names, context_names) -> dict[str, tuple[str, ...]]:
        """What the definitions read by name (for :mod:`mbrl_control.kernels.codegen`)."""
        controls = tuple(control_names)
        return {"x": tuple(state_names), "u": controls, "u_prev": controls, "ctx": tuple(context_names),
                "carry": tuple(cls.carry), "w": cls.weight_names()}

    @classmethod
    def weight_names(cls) -> tuple[str, ...]:
        return tuple(w.name for w in cls.weights)

    @classmethod
    def weight_vector(cls, values: Mapping[str, float] | None = None) -> np.ndarray:
        """float32 weights in ``weights`` order: the defaults, overridden by name from ``values``."""
        values = dict(values or {})
        unknown = set(values) - set(cls.weight_names())
        if unknown:
            raise MbrlError(f"cost '{cls.name}': unknown weight(s) {', '.join(sorted(unknown))}")
        missing = [w.name for w in cls.weights if w.name not in values and w.default is None]
        if missing:
            raise MbrlError(f"cost '{cls.name}': weight(s) without default need a value: {', '.join(missing)}")
        return np.array([float(values.get(w.name, w.default)) for w in cls.weights], dtype=np.float32)
