"""One closed-loop evaluation of ``tune``: its settings, the plant standing in for the car, the objective."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.apps.tune.space import trial_options
from mbrl_control.config import VehicleParams
from mbrl_control.sim.plant import Plant, PlantConfig


@dataclass(frozen=True)
class TuneConfig:
    """The search settings (CLI flags; also the ``tune`` section of a YAML given with ``--tune-config``)."""

    trials: int = 40  # closed-loop evaluations, the default configuration included
    jobs: int = 0  # parallel evaluations; 0: every local core (or every CPU of the Ray cluster)
    laps: int = 1
    rate_hz: float = 50.0
    time_limit_factor: float = 2.5  # a run's time limit: this many reference lap times (per lap) + 10 s
    violation_penalty_s: float = 0.1  # added to the objective per control step outside the track
    seed: int = 0
    startup_trials: int = 10  # random trials before TPE models the objective

    def validate(self) -> None:
        if self.trials < 1 or self.jobs < 0 or self.laps < 1 or self.startup_trials < 0:
            raise MbrlError("tune: trials and laps must be >= 1, jobs and startup_trials >= 0")
        if not (self.rate_hz > 0 and self.time_limit_factor > 0 and self.violation_penalty_s >= 0):
            raise MbrlError("tune: rate_hz and time_limit_factor must be positive, violation_penalty_s >= 0")


class ModelPlant(Plant):
    """A :class:`~mbrl_control.models.base.DynamicsModel` (e.g. a fitted semi-parametric model) as the plant.

    Steps the model (float64) ``duration / model.dt_s`` times per control period; the period must
    be a whole number of model steps (a learned residual is only valid at its own step).
    """

    name = "model"

    def __init__(self, model, params: VehicleParams, config: PlantConfig | None = None) -> None:
        import torch

        super().__init__(params, config)
        self.model = copy.deepcopy(model).to(torch.float64)
        self._state = torch.zeros(7, dtype=torch.float64)

    @property
    def state(self) -> np.ndarray:
        return self._state.numpy().copy()

    def reset(self, state: np.ndarray) -> None:
        import torch

        self._state = torch.as_tensor(np.asarray(state, dtype=np.float64)).clone()
        self._applied = np.zeros(2)
        self._pending.clear()
        self.time_s = 0.0

    def _integrate(self, control: np.ndarray, duration_s: float) -> None:
        import torch

        steps = duration_s / self.model.dt_s
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise MbrlError(f"plant model step {self.model.dt_s} s does not divide the control period {duration_s} s")
        u = torch.as_tensor(control, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(int(round(steps))):
                self._state = self.model(self._state, u)


@dataclass
class EvalSpec:
    """Everything a worker needs, picklable: the loaded track, vehicle and models travel with it."""

    track: Any
    controller: str
    base_options: dict
    params: VehicleParams
    plant_model: Any  # DynamicsModel stepped as the plant, or None
    plant_params: VehicleParams
    controller_model: Any
    config: TuneConfig
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        ref = self.track.reference_lap_time_s or self.track.length_m / 3.0
        self.time_limit_s = self.config.laps * self.config.time_limit_factor * ref + 10.0


def evaluate(spec: EvalSpec, values: dict[str, Any]) -> dict:
    """Drive the configuration ``values`` (on top of the base options); objective and run facts."""
    from mbrl_control.control.factory import make_controller
    from mbrl_control.sim.plant import SingleTrackPlant
    from mbrl_control.sim.runner import ClosedLoop, RunConfig

    cfg = spec.config
    tic = time.perf_counter()
    dt = 1.0 / cfg.rate_hz
    try:
        controller = make_controller(spec.controller, spec.params, dt, spec.track, copy.deepcopy(spec.controller_model),
                                     trial_options(spec.base_options, values))
    except MbrlError as exc:
        return {"objective": 2.0 * spec.time_limit_s, "state": "invalid", "error": str(exc), "wall_s": 0.0}
    plant = ModelPlant(spec.plant_model, spec.plant_params) if spec.plant_model is not None else SingleTrackPlant(spec.plant_params)
    loop = ClosedLoop(spec.track, plant, controller,
                      RunConfig(laps=cfg.laps, control_rate_hz=cfg.rate_hz, max_time_s=spec.time_limit_s, seed=cfg.seed,
                                progress=False))
    summary, log = loop.run()
    result = score(summary, log, spec.track.length_m, cfg, spec.time_limit_s)
    result["wall_s"] = round(time.perf_counter() - tic, 3)
    return result


def score(summary: dict, log, track_length_m: float, config: TuneConfig, time_limit_s: float) -> dict:
    """The objective of a run (see the module doc) with the facts it rests on."""
    laps = summary["lap_times_s"]
    violations = int(summary["track_violations"])
    done = summary["laps_completed"] >= config.laps and not summary["collisions_or_stops"]
    steps = np.diff(np.asarray(log.progress_m)) if len(log.progress_m) > 1 else np.zeros(0)
    traveled = float(np.sum(np.remainder(steps + 0.5 * track_length_m, track_length_m) - 0.5 * track_length_m))
    fraction = min(1.0, max(0.0, traveled / (config.laps * track_length_m)))
    if done:
        objective = min(laps) + config.violation_penalty_s * violations
        state = "complete"
    else:
        objective = time_limit_s * (2.0 - fraction)
        state = "failed"
    return {"objective": float(objective), "state": state, "lap_time_s": min(laps) if laps else None,
            "lap_times_s": laps, "violations": violations, "fraction": round(fraction, 4)}
