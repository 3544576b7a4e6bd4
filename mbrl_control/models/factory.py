"""Build a prediction model from a CLI/config spec: a name or a saved model file."""

from __future__ import annotations

from pathlib import Path

import torch

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
from mbrl_control.models.guards import check_model_cost

MODEL_NAMES = ("kinematic", "dynamic", "semiparametric")


def make_model(spec: str, params: VehicleParams, dt_s: float, dtype: torch.dtype = torch.float32,
               check_cost: bool = True):
    """``kinematic`` | ``dynamic`` | ``semiparametric`` | path of a saved model file (``fit``/sysid output).

    Prediction models step once per control period with RK4. A model file is probed for its step cost
    (``check_cost``; a caller with its own, stricter probe, the controller's hot swap, turns it off).
    """
    if spec == "kinematic":
        return KinematicBicycle(params, dt_s=dt_s, integrator="rk4", dtype=dtype)
    if spec == "dynamic":
        return DynamicSingleTrack(params, dt_s=dt_s, integrator="rk4", dtype=dtype)
    if spec == "semiparametric" or Path(spec).suffix in (".pt", ".pth") or Path(spec).is_file():
        try:
            from mbrl_control.models.semiparametric import load_model_spec
        except ImportError:
            raise MbrlError(f"model '{spec}': semi-parametric models are not available in this build") from None
        model = load_model_spec(spec, params, dt_s, dtype)
        if check_cost:  # sub-steps and a timed first step: a slow file cannot hang a loop
            check_model_cost(model, dt_s, spec)
        return model
    raise MbrlError(f"unknown model '{spec}' (choose from {', '.join(MODEL_NAMES)} or a model file)")
