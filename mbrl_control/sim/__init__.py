"""Plants (built-in single-track, MuJoCo) and the offline closed-loop runner."""

from __future__ import annotations

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.sim.plant import (MiscalibratedActuatorPlant, Plant, PlantConfig, SingleTrackPlant, SpeedDrivenPlant,
                                    SpeedFollowingPlant)

PLANTS = ("dynamic", "kinematic", "mujoco")


ACTUATIONS = ("acceleration", "speed", "miscalibrated")
"""The plant's driver: applies the commanded acceleration, follows the speed set-point (F1TENTH), or
applies the acceleration through actuators that differ from the nominal (steering map, dead time,
throttle dead zone)."""


def make_plant(name: str, params: VehicleParams, config: PlantConfig | None = None, track=None,
               actuation: str | object = "acceleration") -> Plant:
    """The plant by name; ``track`` lets MuJoCo draw the track bounds. ``actuation`` is ``acceleration``,
    ``speed`` (the F1TENTH driver, :func:`~mbrl_control.control.command_interface.f1tenth_speed_actuation`)
    ``miscalibrated`` (:func:`~mbrl_control.control.command_interface.miscalibrated_actuation`) or an
    :class:`~mbrl_control.control.command_interface.ActuationConfig` (the speed interface, or the
    acceleration interface with the car's steering map, dead time and throttle dead zone)."""
    if isinstance(actuation, str) and actuation not in ACTUATIONS:
        raise MbrlError(f"unknown actuation '{actuation}' (choose from {', '.join(ACTUATIONS)})")
    if actuation == "miscalibrated" or (not isinstance(actuation, str) and actuation.interface == "acceleration"):
        terms = None if isinstance(actuation, str) else actuation
        return MiscalibratedActuatorPlant(make_plant(name, params, config, track), terms)
    speed = actuation if not isinstance(actuation, str) else (None if actuation == "speed" else False)
    if speed is not False:
        if name == "dynamic":
            return SpeedFollowingPlant(params, config, speed)
        return SpeedDrivenPlant(make_plant(name, params, config, track), speed)
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
