"""Dynamics models: batched, differentiable torch modules sharing one state/control layout."""

from mbrl_control.models.base import DynamicsModel, integrate_step
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle, kinematic_state
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.models.predictor import load_predictor

__all__ = [
    "CONTROL_DIM", "STATE_DIM", "S", "U", "DynamicsModel", "DynamicSingleTrack",
    "KinematicBicycle", "integrate_step", "kinematic_state", "load_predictor",
]
