"""``mbrl-control sim``: the closed loop offline (no ROS), deterministic for a seed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mbrl_control import MbrlError
from mbrl_control.config import cli_number, load_vehicle_params, run_folder
from mbrl_control.control.factory import CONTROLLERS, make_controller
from mbrl_control.models.factory import make_model
from mbrl_control.control.command_interface import INTERFACES
from mbrl_control.sim import ACTUATIONS, PLANTS, make_plant
from mbrl_control.sim.plant import PlantConfig
from mbrl_control.sim.runner import ClosedLoop, RunConfig, write_failure_message, write_run
from mbrl_control.track import DEFAULT_TRACK, MAX_WIDTH_M, check_turning_radius, narrowed, resolve_track


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=DEFAULT_TRACK, help="track NAME (default, Austin, ...) or centerline CSV")
    p.add_argument("--half-width-m", type=cli_number(positive=True, high=MAX_WIDTH_M), default=None,
                   help="run the track narrowed: every left and right half width set to this [m] (default: as loaded)")
    p.add_argument("--plant", default="dynamic", choices=PLANTS)
    p.add_argument("--controller", default="mppi", choices=list(CONTROLLERS))
    p.add_argument("--model", default="dynamic", help="kinematic | dynamic | semiparametric | model FILE")
    p.add_argument("--online-sysid", action="store_true", help="refit the model while driving and hot-swap it")
    p.add_argument("--laps", type=cli_number(1, 1000, integer=True), default=2)
    p.add_argument("--seed", type=cli_number(0, 2**32 - 1, integer=True), default=0, help="seeds the plant noise, the MPPI samples and the sysid training")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    p.add_argument("--vehicle", type=Path, default=None, help="vehicle parameter YAML (default models/f1tenth.yaml)")
    p.add_argument("--plant-vehicle", type=Path, default=None, help="vehicle YAML of the plant, if it differs (model mismatch)")
    p.add_argument("--config", type=Path, default=None, help="controller YAML (ros__parameters of controller_node)")
    p.add_argument("--rate", type=cli_number(1.0, 1000.0), default=50.0, help="control rate [Hz], 1 to 1000")
    p.add_argument("--max-time", type=cli_number(positive=True, high=1e6), default=None, help="stop after this much simulated time [s]")
    p.add_argument("--actuation", default="acceleration", choices=ACTUATIONS,
                   help="the plant's driver: applies the acceleration, or follows the speed set-point like an "
                        "F1TENTH car / f1tenth_gym (speed loop, rate-limited steering after 20 ms), or applies it "
                        "through actuators that differ from the nominal (miscalibrated: asymmetric steering map with a "
                        "trim offset, 80 ms steering dead time, 15 %% throttle dead zone; identified online)")
    p.add_argument("--command-interface", default="auto", choices=("auto", *INTERFACES),
                   help="the interface the controller is told (auto: the plant's); its gains and dead time are "
                        "identified online unless the --config YAML's 'actuation' section gives them")
    p.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    if args.laps < 1:
        raise MbrlError("--laps must be at least 1")
    if args.rate <= 0:
        raise MbrlError("--rate must be positive")
    track = resolve_track(args.track)
    if args.half_width_m is not None:
        track = narrowed(track, args.half_width_m)
    params = load_vehicle_params(args.vehicle)
    plant_params = load_vehicle_params(args.plant_vehicle) if args.plant_vehicle else params
    check_turning_radius(track, params.wheelbase_m, min(-params.steer_min_rad, params.steer_max_rad))
    dt = 1.0 / args.rate
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    with run_folder(out):  # before any work: an unwritable --out fails now, not after the run
        return _run(args, track, params, plant_params, dt, out)


def _run(args: argparse.Namespace, track, params, plant_params, dt: float, out: Path) -> int:
    """Build the loop the options describe, run it, write the run folder ``out``."""
    options, controller_name = controller_options(args.config, args.controller)
    model = make_model(args.model, params, dt)
    plant = make_plant(args.plant, plant_params, PlantConfig(seed=args.seed), track=track, actuation=args.actuation)
    interface, identifier = command_interface_for(args, options, params, dt)
    controller = make_controller(controller_name, params, dt, track, model,
                                 seeded_controller_options(controller_name, options.get(controller_name, {}), args.seed))
    updater = None
    if args.online_sysid:
        from mbrl_control.sysid.online import make_online_updater

        sysid_options = {"out_dir": str(out / "models"), "seed": args.seed, **options.get("sysid", {})}
        updater = make_online_updater(model, params, dt, sysid_options)
    loop = ClosedLoop(track, plant, controller, RunConfig(laps=args.laps, control_rate_hz=args.rate, max_time_s=args.max_time,
                                                          seed=args.seed, progress=not args.quiet),
                      metrics_model=model, updater=updater, interface=interface, actuator_identifier=identifier)
    loop.model_name = args.model
    summary = write_run(out, loop)
    print(json.dumps(summary, indent=2))
    print(f"run folder: {out}", flush=True)
    if loop.write_failures:  # the run is complete (summary above); some of its files are not
        raise MbrlError(write_failure_message(loop.write_failures, "the summary is printed above"))
    return 0


def command_interface_for(args: argparse.Namespace, options: dict, params, dt_s: float):
    """(CommandInterface, ActuatorIdentifier or None): the interface from ``--command-interface`` (or
    the plant's actuation), its known terms from the YAML's ``actuation`` section; unknown ones are
    identified online."""
    from mbrl_control.control.command_interface import CommandInterface, load_actuation
    from mbrl_control.sysid.actuator_id import identifier_for

    section = dict(options.get("actuation") or {})
    if args.command_interface != "auto":
        section["interface"] = args.command_interface
    elif "interface" not in section:
        section["interface"] = "speed" if args.actuation == "speed" else "acceleration"
    if args.actuation == "speed":  # the driver's kind (not its terms) is told: the F1TENTH servo turns at its rate
        section.setdefault("steering", "rate_limit")
    if args.actuation == "miscalibrated":  # told that the calibration is not to be trusted, not what it is
        section.setdefault("calibration", "identify")
    config = load_actuation(section, "actuation")
    interface = CommandInterface(config, params, dt_s)
    return interface, identifier_for(config, params, dt_s)


def seeded_controller_options(controller: str, options: dict, seed: int) -> dict:
    """The controller's options with ``--seed`` as its sampling seed, unless the YAML sets one.

    Only the sampling controllers (MPPI, and the MPPI half of ``mppi_ilqr``) draw random numbers.
    """
    if controller == "mppi":
        return {"seed": seed, **options}
    if controller == "mppi_ilqr":
        return {**options, "mppi": {"seed": seed, **options.get("mppi", {})}}
    return dict(options)


def controller_options(path: Path | None, controller: str) -> tuple[dict, str]:
    """Sections of a controller YAML (``controller_node: ros__parameters:``); the CLI flag names the controller."""
    if path is None:
        return {}, controller
    from mbrl_control.config import load_yaml

    data = load_yaml(path)
    node = data.get("controller_node", data)
    params = node.get("ros__parameters", node) if isinstance(node, dict) else None
    if not isinstance(params, dict):
        raise MbrlError(f"{path}: expected controller_node.ros__parameters mapping")
    from mbrl_control.control.factory import CONTROLLERS

    for section in (*CONTROLLERS, "sysid", "actuation"):
        value = params.get(section)
        if value is not None and not isinstance(value, dict):
            raise MbrlError(f"{path}: '{section}' must be a mapping of parameters, got {type(value).__name__} {value!r}")
    return params, controller
