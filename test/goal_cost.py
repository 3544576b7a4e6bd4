"""A cost term defined in one file outside the package: reach a goal point, arrive slowly, small effort.

Smooth and memoryless, so iLQR/DDP and NMPC can use it as well as MPPI.
"""

from __future__ import annotations

from mbrl_control.problem.cost_term import CostTerm, Weight


class GoalCost(CostTerm):
    """``position (|p - goal|^2) + speed v^2 + effort (u . u)``."""

    name = "goal"
    weights = (
        Weight("goal_x", "m", 3.0), Weight("goal_y", "m", 2.0),
        Weight("position", "1/m^2", 1.0), Weight("speed", "s^2/m^2", 0.05), Weight("effort", "1", 0.01),
    )
    requires_states = ("x", "y", "v")
    smooth = True

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        dx = x.x - w.goal_x
        dy = x.y - w.goal_y
        effort = u[0] * u[0] + u[1] * u[1]
        return w.position * (dx * dx + dy * dy) + w.speed * x.v * x.v + w.effort * effort, ()
