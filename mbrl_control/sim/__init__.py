"""Plants (built-in single-track, MuJoCo) and the offline closed-loop runner."""

from __future__ import annotations

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.sim.plant import Plant, PlantConfig, SingleTrackPlant

PLANTS = ("dynamic", "kinematic", "mujoco")


def make_plant(name: str, params: VehicleParams, config: PlantConfig | None = None, track=None) -> Plant:
    """The plant by name; ``track`` lets MuJoCo draw the track bounds."""
    if name == "dynamic":
        return SingleTrackPlant(params, config)
    if name == "kinematic":
        return SingleTrackPlant(params, config, kinematic=True)
    if name == "mujoco":
        try:
            from mbrl_control.sim.mujoco_plant import MujocoPlant
        except ModuleNotFoundError as exc:
            if exc.name in ("mujoco", "mbrl_control.sim.mujoco_plant"):
                raise MbrlError("plant 'mujoco' is not available (mujoco not installed)") from None
            raise
        return MujocoPlant(params, config, track=track)
    raise MbrlError(f"unknown plant '{name}' (choose from {', '.join(PLANTS)})")
