"""The peer benchmark problem ``bicycle-track`` (``../shared/bench/PROBLEM.md``) in one namespace.

``from mbrl_control.benchmarks import bicycle_track as bt`` gives the problem's numbers
(:mod:`mbrl_control.models.bicycle_track_spec`), its model, cost, closed loop and metrics
(:mod:`.problem`), the problem as definitions (:mod:`.model`, :mod:`.cost`) and MPPI on it
(:mod:`.settings`, :mod:`.mppi`: the generic MPPI solver on :func:`.mppi.control_problem`).
"""

from mbrl_control.benchmarks.bicycle_track.cost import BicycleTrackCost
from mbrl_control.benchmarks.bicycle_track.model import BicycleTrackModel, BicycleTrackParams
from mbrl_control.benchmarks.bicycle_track.mppi import BicycleTrackMPPI, control_problem, make_bicycle_mppi, solver_config
from mbrl_control.benchmarks.bicycle_track.problem import (ClosedLoopResult, Controller, Quality, Timing, clip_control,
                                                           quality, run_closed_loop, stage_cost, stage_cost_torch, step,
                                                           step_torch, timing, trajectory_cost)
from mbrl_control.benchmarks.bicycle_track.settings import BicycleTrackSettings
from mbrl_control.models import bicycle_track_spec
from mbrl_control.models.bicycle_track_spec import *  # noqa: F401,F403 - the problem's numbers (its __all__)

__all__ = ["BicycleTrackCost", "BicycleTrackMPPI", "BicycleTrackModel", "BicycleTrackParams", "BicycleTrackSettings",
           "ClosedLoopResult", "Controller", "Quality", "Timing", "clip_control", "control_problem", "make_bicycle_mppi",
           "quality", "run_closed_loop", "solver_config", "stage_cost", "stage_cost_torch", "step", "step_torch",
           "timing", "trajectory_cost"]
__all__ += bicycle_track_spec.__all__
