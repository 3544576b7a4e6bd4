"""``mbrl-control tune``: controller parameters by closed-loop search on an identified model.

Each evaluation drives ``--laps`` lap(s) of ``--track`` in the offline closed loop
(:class:`~mbrl_control.sim.runner.ClosedLoop`) against a plant that stands in for the car:

* ``--model FILE`` (default): the model ``fit`` identified from a bag, stepped as the plant
  (:class:`ModelPlant`); also ``dynamic`` / ``kinematic`` (nominal);
* ``--bag BAG``: identify that model first (``fit``'s pipeline), then as ``--model``;
* ``--plant-vehicle YAML``: the built-in single-track plant with those parameters.

The controller predicts with ``--controller-model`` (default: the plant's model, as it would
after ``fit``). The objective (minimised, seconds) is the best lap time plus
``--violation-penalty`` per control step outside the track; a run that fails (leaves the track
for good, stops, or runs out of time) scores ``time_limit * (2 - fraction_of_distance_done)``,
worse than any finished run and better the further it got.

The search is Optuna's TPE sampler (seeded, multivariate; the default configuration is the first
trial, so the study reports the gain over it). Evaluations run in parallel: worker processes on
the local cores (``--jobs``, default all), or Ray tasks on a cluster with ``--ray ADDRESS``
(``--ray local`` starts a private local instance). Results: ``tuned.yaml`` (the base config with
the tuned section, ``controller_node: ros__parameters:`` as ``sim --config`` and the launch files
read it), ``trials.json``, ``tune.json`` (summary) and ``search.png`` in ``--out``. With
``--validate-track`` the default and tuned configurations are also driven on another track
(and ``--validate-plant-vehicle``, e.g. the true car's parameters) and compared.

Search spaces: built in for pure_pursuit, mppi and ilqr (their parameters that exist), or a YAML
``--space`` mapping ``name: {low, high[, log][, type: float|int]}`` or ``name: {choices: [...]}``;
``name`` is a controller option, ``section.option`` inside a nested mapping (``cost.progress_weight``)
or ``option[i]`` for a list element.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict, load_vehicle_params, load_yaml
from mbrl_control.sim.plant import Plant, PlantConfig

DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "pure_pursuit": {
        "lookahead_base_m": {"low": 0.3, "high": 2.0},
        "lookahead_gain_s": {"low": 0.05, "high": 0.6},
        "speed_scale": {"low": 0.6, "high": 1.3},
        "lateral_accel_max_mps2": {"low": 3.0, "high": 14.0},
        "speed_gain_per_s": {"low": 1.0, "high": 10.0, "log": True},
    },
    "mppi": {
        "temperature": {"low": 0.05, "high": 20.0, "log": True},
        "sigma_steer_rad": {"low": 0.03, "high": 0.4, "log": True},
        "sigma_accel_mps2": {"low": 0.5, "high": 6.0, "log": True},
        "horizon": {"low": 20, "high": 80, "type": "int"},
        "noise_alpha": {"low": 0.0, "high": 0.9},
        "cost.progress_weight": {"low": 5.0, "high": 80.0, "log": True},
        "cost.soft_bound_weight": {"low": 30.0, "high": 3000.0, "log": True},
        "cost.soft_margin_m": {"low": 0.2, "high": 0.7},
        "cost.speed_max_mps": {"low": 6.0, "high": 16.0},
        "cost.lateral_accel_max_mps2": {"low": 5.0, "high": 12.0},
        "cost.steer_rate_weight": {"low": 0.0, "high": 0.2},
    },
    "ilqr": {
        "horizon": {"low": 30, "high": 120, "type": "int"},
        "cost.progress_weight": {"low": 5.0, "high": 80.0, "log": True},
        "cost.soft_bound_weight": {"low": 30.0, "high": 3000.0, "log": True},
        "cost.soft_margin_m": {"low": 0.2, "high": 0.7},
        "cost.speed_max_mps": {"low": 6.0, "high": 16.0},
        "cost.lateral_accel_max_mps2": {"low": 5.0, "high": 12.0},
    },
}
"""Built-in search spaces; entries whose option the controller does not have are left out."""


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


# ---- the plant standing in for the car -------------------------------------------------------

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


# ---- search space ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dimension:
    """One searched option: a float/int range (``log`` scale optional) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"  # float | int | choice
    choices: tuple = ()

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def widened(self, value: Any) -> "Dimension":
        """The dimension grown to include ``value`` (the default configuration is always a candidate)."""
        if self.kind == "choice":
            return self if value in self.choices else dataclasses.replace(self, choices=self.choices + (value,))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MbrlError(f"tune: default of '{self.name}' is {value!r}, not a number")
        if self.log and value <= 0:
            raise MbrlError(f"tune: '{self.name}' is searched on a log scale but its default is {value}")
        return dataclasses.replace(self, low=min(self.low, value), high=max(self.high, value))


_PATH = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


def parse_space(raw: dict, source: str) -> list[Dimension]:
    """Dimensions of a space mapping (``name: {low, high, log, type} | {choices}``), checked."""
    if not isinstance(raw, dict) or not raw:
        raise MbrlError(f"{source}: the search space must be a non-empty mapping")
    dims = []
    for name, spec in raw.items():
        where = f"{source}: '{name}'"
        if not all(_PATH.match(part) for part in str(name).split(".")):
            raise MbrlError(f"{where}: not an option name (name, section.name or name[i])")
        if not isinstance(spec, dict):
            raise MbrlError(f"{where}: expected a mapping with low/high or choices")
        unknown = set(spec) - {"low", "high", "log", "type", "choices"}
        if unknown:
            raise MbrlError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise MbrlError(f"{where}: choices must be a non-empty list")
            dims.append(Dimension(str(name), kind="choice", choices=tuple(spec["choices"])))
            continue
        low, high, kind, log = spec.get("low"), spec.get("high"), spec.get("type", "float"), spec.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
        if not numbers or not low < high:
            raise MbrlError(f"{where}: needs finite numbers low < high")
        if kind not in ("float", "int") or not isinstance(log, bool) or (log and low <= 0):
            raise MbrlError(f"{where}: type must be float or int, log true/false (log needs low > 0)")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise MbrlError(f"{where}: an int range needs integer bounds")
        dims.append(Dimension(str(name), float(low), float(high), log, kind))
    return dims


def _steps(name: str) -> list[tuple[str, int | None]]:
    return [(m.group(1), None if m.group(2) is None else int(m.group(2))) for m in map(_PATH.match, name.split("."))]


def get_option(options: dict, name: str) -> Any:
    """The value at ``name`` (``a.b``, ``a[i]``) in nested options; KeyError if absent."""
    node: Any = options
    for key, index in _steps(name):
        node = node[key] if isinstance(node, dict) else getattr(node, key)
        if index is not None:
            node = node[index]
    return node


def set_option(options: dict, name: str, value: Any) -> None:
    """Set ``name`` in nested options (creating mappings; a list element needs its list present)."""
    steps = _steps(name)
    node = options
    for key, index in steps[:-1]:
        node = node.setdefault(key, {}) if index is None else node[key][index]
    key, index = steps[-1]
    if index is None:
        node[key] = value
    else:
        node[key] = list(node[key])
        node[key][index] = value


def default_values(dims: list[Dimension], base: dict, controller) -> dict[str, Any]:
    """Each dimension's value in the default configuration: the base YAML, else the controller's config.

    A nested section the config keeps as a mapping (e.g. ``cost``) takes its defaults from the
    config's ``<section>_config()`` dataclass when the mapping lacks the key.
    """
    config = getattr(controller, "config", None)
    out = {}
    for dim in dims:
        for source in (base, config, _section_configs(config)):
            try:
                out[dim.name] = _plain(get_option(source, dim.name))
                break
            except (KeyError, AttributeError, IndexError, TypeError):
                continue
        else:
            raise MbrlError(f"tune: the controller has no option '{dim.name}' (and the base config does not set it)")
    return out


def _section_configs(config) -> dict:
    """``{section: <section>_config()}`` of a config dataclass whose nested sections are plain mappings."""
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    out = {}
    for f in dataclasses.fields(config):
        getter = getattr(config, f"{f.name}_config", None)
        if isinstance(getattr(config, f.name), dict) and callable(getter):
            out[f.name] = getter()
    return out


def _plain(value: Any) -> Any:
    """numpy scalars / tuples as plain YAML-able Python values."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def trial_options(base: dict, values: dict[str, Any]) -> dict:
    """The base options with the trial's values written in (base left unchanged)."""
    options = copy.deepcopy(base)
    for name, value in values.items():
        set_option(options, name, _plain(value))
    return options


# ---- one closed-loop evaluation (runs in workers) --------------------------------------------

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


# ---- executors: local processes or Ray -------------------------------------------------------

_WORKER_SPEC: EvalSpec | None = None


def _init_worker(spec: EvalSpec) -> None:
    import torch

    global _WORKER_SPEC
    torch.set_num_threads(1)
    _WORKER_SPEC = spec


def _evaluate_in_worker(values: dict) -> dict:
    assert _WORKER_SPEC is not None
    return evaluate(_WORKER_SPEC, values)


class LocalEngine:
    """Evaluations in ``jobs`` spawned worker processes (one thread each), the spec sent once."""

    name = "local"

    def __init__(self, spec: EvalSpec, jobs: int) -> None:
        self.jobs = jobs or os.cpu_count() or 1
        self._env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")}
        for key in self._env:
            os.environ[key] = "1"  # read by the workers at start: one thread each, the parallelism is across them
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(spec,))

    def submit(self, values: dict):
        return self.pool.submit(_evaluate_in_worker, values)

    def wait_one(self, pending) -> list:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        return [(f, f.result()) for f in done]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ray_evaluate(spec: EvalSpec, values: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    return evaluate(spec, values)


class RayEngine:
    """Evaluations as Ray tasks (1 CPU each) on the cluster at ``address`` ('local': a private instance)."""

    name = "ray"

    def __init__(self, spec: EvalSpec, jobs: int, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise MbrlError("--ray needs the 'ray' package (pip install ray)") from None
        self.ray = ray
        try:
            if address == "local":
                ray.init(num_cpus=jobs or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ... from ray
            raise MbrlError(f"cannot connect to Ray at '{address}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.jobs = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._spec = ray.put(spec)
        self._task = ray.remote(num_cpus=1, max_retries=1)(_ray_evaluate)

    def submit(self, values: dict):
        return self._task.remote(self._spec, values)

    def wait_one(self, pending) -> list:
        ready, _ = self.ray.wait(list(pending), num_returns=1)
        return [(ref, self.ray.get(ref)) for ref in ready]

    def close(self) -> None:
        self.ray.shutdown()


# ---- the study -------------------------------------------------------------------------------

@dataclass
class TuneResult:
    trials: list[dict] = field(default_factory=list)  # number, values, result (in completion order)
    default_values: dict = field(default_factory=dict)
    best: dict | None = None
    engine: str = "local"
    jobs: int = 1
    tune_s: float = 0.0

    @property
    def default_trial(self) -> dict:
        return next(t for t in self.trials if t["number"] == 0)


def run_search(spec: EvalSpec, dims: list[Dimension], defaults: dict, ray_address: str | None = None,
               progress: bool = True) -> TuneResult:
    """Optuna TPE over ``dims``, the default configuration first, evaluations in parallel."""
    import optuna
    from tqdm import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = spec.config
    dims = [d.widened(defaults[d.name]) for d in dims]
    dists = {d.name: d.distribution() for d in dims}
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.startup_trials, multivariate=True,
                                         constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(defaults)
    engine = RayEngine(spec, cfg.jobs, ray_address) if ray_address else LocalEngine(spec, cfg.jobs)
    result = TuneResult(default_values=defaults, engine=engine.name, jobs=engine.jobs)
    tic = time.perf_counter()
    pending: dict = {}
    asked = 0
    bar = tqdm(total=cfg.trials, file=sys.stderr, disable=not progress, desc="tune", unit="run", dynamic_ncols=True)
    try:
        while len(result.trials) < cfg.trials:
            while len(pending) < engine.jobs and asked < cfg.trials:
                trial = study.ask(dists)
                pending[engine.submit(dict(trial.params))] = trial
                asked += 1
            for handle, outcome in engine.wait_one(pending):
                trial = pending.pop(handle)
                study.tell(trial, outcome["objective"])
                result.trials.append({"number": trial.number, "values": dict(trial.params), **outcome})
                bar.update(1)
                bar.set_postfix(best=f"{study.best_value:.2f}", last=f"{outcome['objective']:.2f}")
    finally:
        bar.close()
        engine.close()
    result.tune_s = round(time.perf_counter() - tic, 2)
    result.best = min(result.trials, key=lambda t: (t["objective"], t["number"]))
    return result


# ---- CLI ---------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    from mbrl_control.bag import add_bag_arguments

    p.add_argument("--track", required=True, help="track NAME or centerline CSV to tune on")
    p.add_argument("--controller", default="mppi", help="controller whose parameters are tuned")
    p.add_argument("--config", type=Path, default=None, help="base controller YAML (controller_node: ros__parameters:)")
    p.add_argument("--model", default=None, help="plant: a model FILE from 'fit' (or kinematic | dynamic | semiparametric)")
    p.add_argument("--bag", type=Path, default=None, help="identify the plant model from this bag first (as 'fit')")
    p.add_argument("--plant-vehicle", type=Path, default=None, help="plant: the built-in single-track with this vehicle YAML")
    p.add_argument("--controller-model", default=None, help="the controller's prediction model (default: the plant's)")
    p.add_argument("--vehicle", type=Path, default=None, help="nominal vehicle YAML (default models/f1tenth.yaml)")
    p.add_argument("--space", type=Path, default=None, help="search space YAML (default: built in for the controller)")
    p.add_argument("--trials", type=int, default=40, help="closed-loop evaluations, the default config included")
    p.add_argument("--jobs", type=int, default=0, help="parallel evaluations (default: all local cores / cluster CPUs)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run the evaluations on this Ray cluster ('local': a private one)")
    p.add_argument("--laps", type=int, default=1)
    p.add_argument("--rate", type=float, default=50.0, help="control rate [Hz]")
    p.add_argument("--violation-penalty", type=float, default=0.1, help="objective seconds per control step off the track")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-track", default=None, help="also drive default and tuned configs on this track")
    p.add_argument("--validate-plant-vehicle", type=Path, default=None, help="vehicle YAML of the validation plant")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/tune-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_bag_arguments(p)


def main(args: argparse.Namespace) -> int:
    from mbrl_control.control.factory import CONTROLLERS, make_controller
    from mbrl_control.sim.cli import controller_options
    from mbrl_control.track import resolve_track

    if args.controller not in CONTROLLERS:
        raise MbrlError(f"unknown controller '{args.controller}' (choose from {', '.join(CONTROLLERS)})")
    if sum(x is not None for x in (args.model, args.bag, args.plant_vehicle)) > 1:
        raise MbrlError("give one plant: --model, --bag or --plant-vehicle")
    config = dataclass_from_dict(TuneConfig, {"trials": args.trials, "jobs": args.jobs, "laps": args.laps,
                                              "rate_hz": args.rate, "violation_penalty_s": args.violation_penalty,
                                              "seed": args.seed}, "tune")
    params = load_vehicle_params(args.vehicle)
    dt = 1.0 / config.rate_hz
    track = resolve_track(args.track)
    out = args.out or Path("runs") / time.strftime("tune-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    plant_model, plant_params, plant_desc = _plant(args, params, dt, out)
    controller_model = _controller_model(args, params, dt, plant_model)
    base_all, _ = controller_options(args.config, args.controller)
    base = dict(base_all.get(args.controller, {}) or {})
    probe = make_controller(args.controller, params, dt, track, copy.deepcopy(controller_model), base)
    dims = _space(args, probe, base)
    defaults = default_values(dims, base, probe)
    spec = EvalSpec(track, args.controller, base, params, plant_model, plant_params, controller_model, config)
    _say(args, f"tuning {len(dims)} parameters of {args.controller} on {track.name} ({plant_desc}), "
               f"{config.trials} evaluations, time limit {spec.time_limit_s:.0f} s each")
    result = run_search(spec, dims, defaults, args.ray, progress=not args.quiet)
    if all(t["state"] != "complete" for t in result.trials):
        print("[tune] warning: no evaluation finished a lap; check the controller and plant with 'mbrl-control sim'",
              file=sys.stderr, flush=True)
    elif result.default_trial["state"] != "complete":
        _say(args, "the default configuration does not finish; gains are reported against the objective only")
    tuned = trial_options(base, result.best["values"])
    summary = _summary(args, spec, plant_desc, result, dims)
    if args.validate_track:
        summary["validation"] = validate(args, spec, tuned)
    write_tuned_yaml(out / "tuned.yaml", base_all, args.controller, tuned, summary)
    (out / "trials.json").write_text(json.dumps(result.trials, indent=2, default=_plain) + "\n")
    (out / "tune.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    plot_search(out / "search.png", result, dims, summary)
    print(json.dumps(summary, indent=2, default=_plain))
    print(f"tuned config: {out / 'tuned.yaml'}", flush=True)
    return 0


def _say(args, text: str) -> None:
    if not args.quiet:
        print(f"[tune] {text}", file=sys.stderr, flush=True)


def _plant(args, params: VehicleParams, dt: float, out: Path):
    """(plant model or None, plant vehicle params, description)."""
    import torch

    from mbrl_control.models.factory import make_model

    if args.plant_vehicle is not None:
        return None, load_vehicle_params(args.plant_vehicle), f"single-track plant {args.plant_vehicle}"
    spec = args.model or "dynamic"
    if args.bag is not None:
        spec = str(identify_from_bag(args, params, dt, out / "identified.pt"))
    model = make_model(spec, params, dt, torch.float64)
    return model, getattr(model, "params", params), f"model {spec}"


def _controller_model(args, params: VehicleParams, dt: float, plant_model):
    import torch

    from mbrl_control.models.factory import make_model

    if args.controller_model is not None:
        return make_model(args.controller_model, params, dt, torch.float32)
    if plant_model is not None:
        return copy.deepcopy(plant_model).to(torch.float32)
    return make_model("dynamic", params, dt, torch.float32)


def identify_from_bag(args, params: VehicleParams, dt: float, path: Path) -> Path:
    """Fit a model to the bag (the ``fit`` pipeline, sysid defaults) and save it to ``path``."""
    from mbrl_control.bag import drive_read_config, read_drive
    from mbrl_control.sysid.config import FitConfig
    from mbrl_control.sysid.dataset import from_drive
    from mbrl_control.sysid.fit import fit_model

    _say(args, f"identifying the plant model from {args.bag}")
    drive = read_drive(args.bag, config=drive_read_config(args), params=params)
    fit_config = FitConfig()
    dataset = from_drive(drive, dt, params, fit_config.dataset, fit_config.identify.substeps)
    fitted = fit_model(dataset, params, fit_config)
    fitted.model.save(path)
    return path


def _space(args, probe, base: dict) -> list[Dimension]:
    if args.space is not None:
        data = load_yaml(args.space)
        return parse_space(data.get("space", data), str(args.space))
    if args.controller not in DEFAULT_SPACES:
        raise MbrlError(f"no built-in search space for '{args.controller}': give one with --space")
    dims = parse_space(DEFAULT_SPACES[args.controller], f"built-in space of {args.controller}")
    kept = []
    for dim in dims:
        try:
            default_values([dim], base, probe)
            kept.append(dim)
        except MbrlError:
            continue  # an option this version of the controller does not have
    if not kept:
        raise MbrlError(f"the built-in space of '{args.controller}' matches none of its options: give --space")
    return kept


def _summary(args, spec: EvalSpec, plant_desc: str, result: TuneResult, dims: list[Dimension]) -> dict:
    default, best = result.default_trial, result.best
    gain = _gain(default, best, "lap_time_s")
    return {
        "track": spec.track.name, "controller": spec.controller, "plant": plant_desc, "engine": result.engine,
        "jobs": result.jobs, "trials": len(result.trials), "tune_s": result.tune_s,
        "time_limit_s": round(spec.time_limit_s, 2), "space": [dataclasses.asdict(d) for d in dims],
        "default": {"values": result.default_values, **_facts(default)},
        "best": {"trial": best["number"], "values": best["values"], **_facts(best)},
        "lap_time_gain_pct": gain,
        "objective_gain_pct": _gain(default, best, "objective"),
        "failed_trials": sum(t["state"] != "complete" for t in result.trials),
    }


def _facts(trial: dict) -> dict:
    return {k: trial.get(k) for k in ("objective", "state", "lap_time_s", "violations", "fraction")}


def validate(args, spec: EvalSpec, tuned: dict) -> dict:
    """Default and tuned configurations on ``--validate-track`` (and plant); lap times and the gain."""
    from mbrl_control.track import resolve_track

    track = resolve_track(args.validate_track)
    plant_params = load_vehicle_params(args.validate_plant_vehicle) if args.validate_plant_vehicle else spec.plant_params
    plant_model = None if args.validate_plant_vehicle else spec.plant_model
    other = dataclasses.replace(spec, track=track, plant_model=plant_model, plant_params=plant_params, base_options={})
    _say(args, f"validating default and tuned configurations on {track.name}")
    default = evaluate(other, spec.base_options)
    best = evaluate(other, tuned)
    return {"track": track.name, "plant": str(args.validate_plant_vehicle or "the tuning plant"),
            "default": _facts(default), "tuned": _facts(best), "lap_time_gain_pct": _gain(default, best, "lap_time_s"),
            "objective_gain_pct": _gain(default, best, "objective")}


def _gain(default: dict, other: dict, key: str) -> float | None:
    """Percent by which ``other`` improves on ``default`` in ``key`` (None unless both finished)."""
    if default.get("state") != "complete" or other.get("state") != "complete":
        return None
    return round(100.0 * (default[key] - other[key]) / default[key], 2)


def write_tuned_yaml(path: Path, base_all: dict, controller: str, tuned: dict, summary: dict) -> None:
    """The base YAML's parameters with the tuned controller section, in ``controller_node: ros__parameters:``."""
    import yaml

    params = copy.deepcopy(base_all)
    params[controller] = json.loads(json.dumps(tuned, default=_plain))  # plain floats / ints / lists
    best, default = summary["best"], summary["default"]
    header = (f"# tuned by 'mbrl-control tune' on {summary['track']} ({summary['plant']}), {summary['trials']} evaluations\n"
              f"# best objective {best['objective']:.3f} s (lap {best['lap_time_s']}), default {default['objective']:.3f} s "
              f"(lap {default['lap_time_s']})\n")
    path.write_text(header + yaml.safe_dump({"controller_node": {"ros__parameters": params}}, sort_keys=False))


def plot_search(path: Path, result: TuneResult, dims: list[Dimension], summary: dict) -> None:
    """Objective per trial with the best so far, and each parameter against the objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted(result.trials, key=lambda t: t["number"])
    number = np.array([t["number"] for t in trials])
    objective = np.array([t["objective"] for t in trials])
    ok = np.array([t["state"] == "complete" for t in trials])
    cols = 3
    rows = 1 + math.ceil(len(dims) / cols)
    fig = plt.figure(figsize=(13, 3.6 * rows))
    ax = fig.add_subplot(rows, 1, 1)
    ax.scatter(number[ok], objective[ok], s=18, label="finished")
    ax.scatter(number[~ok], objective[~ok], s=22, marker="x", color="red", label="failed / invalid")
    ax.step(number, np.minimum.accumulate(objective), where="post", color="black", label="best so far")
    ax.axhline(summary["default"]["objective"], color="0.5", ls="--", label="default config")
    if ok.any():
        top = max(objective[ok].max(), summary["default"]["objective"])
        ax.set_ylim(objective[ok].min() * 0.97, top * 1.05 if not (~ok).any() else top * 1.15)
    ax.set_xlabel("trial")
    ax.set_ylabel("objective [s]")
    ax.set_title(f"{summary['controller']} on {summary['track']}: {summary['trials']} evaluations")
    ax.legend(loc="upper right")
    for i, dim in enumerate(dims):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        x = [t["values"][dim.name] for t in trials]
        if dim.kind == "choice":
            x = [str(v) for v in x]
        ax.scatter(np.array(x)[ok], objective[ok], s=12, c=number[ok], cmap="viridis")
        if dim.kind != "choice":
            ax.axvline(result.best["values"][dim.name], color="red", lw=0.8)
        if dim.log:
            ax.set_xscale("log")
        ax.set_xlabel(dim.name)
        ax.set_ylabel("objective [s]")
    fig.tight_layout()
    fig.savefig(path, dpi=85)
    plt.close(fig)
