"""A control problem as data: motion model + cost terms + context + discretisation.

Solvers take a :class:`ControlProblem` and derive everything from its parts' definitions:
:mod:`mbrl_control.kernels.mppi_generated` compiles one fused MPPI kernel per problem *shape*
(model class, cost classes, context kind), so a new model or cost term needs no solver edit;
the arrays (model parameters, integrator tableau, cost weights, context tables) are data, swapped
without recompiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.models.motion_model import MotionModel
from mbrl_control.problem.cost_term import CostTerm
from mbrl_control.problem.track_context import TRACK_FEATURES, TrackTable

INTEGRATORS = ("euler", "rk4")


class NoContext:
    """A problem without context: cost terms read no features."""

    kind = "none"
    features: tuple[str, ...] = ()
    position_states: tuple[str, ...] = ()

    def lookup_torch(self, xy):
        return ()


@dataclass(frozen=True)
class TrackContext:
    """A race track as context: features :data:`TRACK_FEATURES` at the model's (x, y)."""

    table: TrackTable
    kind: str = "track"
    features: tuple[str, ...] = TRACK_FEATURES
    position_states: tuple[str, ...] = ("x", "y")

    def lookup_torch(self, xy):
        """Feature tensors at points ``xy`` (..., 2), same order as ``features``."""
        progress, lateral, wl, wr = self.table.lookup_torch(xy)
        return progress, lateral, wl, wr, progress.new_full(progress.shape, self.table.length_m)


@dataclass(frozen=True)
class CostSpec:
    """A cost term with its weight vector (float32, ``term.weights`` order)."""

    term: type[CostTerm]
    weights: np.ndarray


@dataclass(frozen=True)
class ControlProblem:
    """Model, costs, context, discretisation; :meth:`validate` checks they fit together."""

    model: type[MotionModel]
    costs: tuple[CostSpec, ...]
    context: Any = field(default_factory=NoContext)
    dt_s: float = 0.02
    integrator: str = "rk4"
    substeps: int = 1

    def validate(self) -> "ControlProblem":
        states, controls = set(self.model.state_names()), set(self.model.control_names())
        if self.integrator not in INTEGRATORS or self.substeps < 1 or not self.dt_s > 0:
            raise MbrlError(f"problem: bad discretisation {self.integrator}/{self.substeps}/{self.dt_s}")
        for missing in set(self.context.position_states) - states:
            raise MbrlError(f"problem: context '{self.context.kind}' needs state '{missing}' of {self.model.name}")
        for spec in self.costs:
            term = spec.term
            for need, have, what in ((term.requires_states, states, "state"),
                                     (term.requires_controls, controls, "control"),
                                     (term.context, set(self.context.features), "context feature")):
                lacking = sorted(set(need) - have)
                if lacking:
                    raise MbrlError(f"problem: cost '{term.name}' needs {what}(s) {', '.join(lacking)}, which "
                                    f"model '{self.model.name}' / context '{self.context.kind}' do not provide")
            if spec.weights.shape != (len(term.weights),):
                raise MbrlError(f"problem: cost '{term.name}' has {len(term.weights)} weights, got {spec.weights.shape}")
        return self

    def shape_key(self) -> tuple:
        """What the compiled kernels depend on (everything else is run-time data)."""
        return (self.model, tuple(s.term for s in self.costs), self.context.kind)
