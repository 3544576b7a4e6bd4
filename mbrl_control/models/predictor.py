"""Predictors of recorded states from raw commands, and the fitted model files that hold them.

A predictor follows the contract of ``../shared/realdata/metric.py``:
``predict(state0, commands, dt=..., past_commands=...)`` with ``state0`` ``[x, y, yaw, vx, vy, w]``
of the recording's reference point (body-frame velocities, unwrapped yaw), ``commands`` the raw
command rows ``u[0..H-1]`` held over each step, ``past_commands`` the rows before the start
(oldest first), and the predicted states at ``t0 + dt ... t0 + H dt``. ``batched = True``: it
takes (N, 6), (N, H, m), (N, P, m) and returns (N, H, 6) as well as the unbatched shapes.

:class:`CommandedCarPredictor` runs :class:`.commanded_single_track.CommandedSingleTrackModel`
(Euler with substeps of at most ``max_substep_s``): the recorded reference point is moved to the
centre of mass (``sensor_x_m``, ``sensor_y_m``, ``sensor_yaw_rad`` of the vehicle), the steering
dead time is applied to past + planned commands, the actuator states are initialised by running
the actuators over the past commands, and the result is moved back to the reference point. With a
learned residual (:mod:`.commanded_residual`, ``fit --residual``) its ensemble-mean accelerations are
added to the derivative in every substep. The pieces (:func:`rollout_start`, :func:`euler_step`,
:func:`to_centre_of_mass`, :func:`to_reference_point`) take the ops vocabulary ``m``, so residual
training runs the same steps on torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.models.commanded_single_track import FIXED_PARAMS, IDENTIFIED_PARAMS, CommandedSingleTrackModel
from mbrl_control.models.steering_actuator import delayed_commands, steering_map

MODEL_FILE_FORMAT = "mbrl_control.commanded_car/1"
RESIDUAL_FILE_FORMAT = "mbrl_control.commanded_car_residual/1"
"""A model file with a learned residual (older readers refuse it rather than drop the residual)."""
MAX_SUBSTEP_S = 0.005
SENSOR_KEYS = ("sensor_x_m", "sensor_y_m", "sensor_yaw_rad")


@dataclass
class RolloutStart:
    """Where a rollout starts, prepared in NumPy: the centre-of-mass state with the actuator states
    (``x y yaw vx vy w steer duty``, each (...)), the commands as the actuators get them (each
    (..., H): throttle, delayed steering) and the Euler substeps per step."""

    state: tuple
    throttle: np.ndarray
    steering: np.ndarray
    substeps: int
    substep_s: float


def rollout_start(params, state0: np.ndarray, commands: np.ndarray, past: np.ndarray, dt: float,
                  max_substep_s: float = MAX_SUBSTEP_S) -> RolloutStart:
    """The start of :func:`rollout`: dead time applied, actuators run over the past commands, the
    reference point moved to the centre of mass."""
    from mbrl_control.ops import numpy_ops as m

    p = params
    u = np.array(commands, dtype=np.float64)
    u_past = np.array(past, dtype=np.float64)
    steer_seq = delayed_commands(u_past[..., 1:2], u[..., 1:2], p.steer_dead_time_s, dt)[..., 0]
    past_steer = delayed_commands(u_past[..., :1, 1:2].repeat(u_past.shape[-2], -2), u_past[..., 1:2],
                                  p.steer_dead_time_s, dt)[..., 0]
    n_sub = max(1, int(np.ceil(dt / max_substep_s - 1e-9)))
    # actuator states at the start: the actuators run over the past commands from rest at the first one
    steer = steering_map(m, past_steer[..., 0], p) + 0.0 * p.steer_time_constant_s
    duty = u_past[..., 0, 0] + 0.0 * p.throttle_time_constant_s
    a_s, a_d = np.exp(-dt / p.steer_time_constant_s), np.exp(-dt / p.throttle_time_constant_s)
    for k in range(u_past.shape[-2]):
        steer = a_s * steer + (1.0 - a_s) * steering_map(m, past_steer[..., k], p)
        duty = a_d * duty + (1.0 - a_d) * u_past[..., k, 0]
    body = to_centre_of_mass(m, np.moveaxis(np.asarray(state0, dtype=np.float64), -1, 0), p)
    shape = np.broadcast_shapes(np.shape(body[0]), np.shape(steer), np.shape(p.mass_kg), np.shape(p.tyre_shape))
    xs = tuple(np.broadcast_to(v, shape).copy() for v in (*body, steer, duty))
    return RolloutStart(xs, u[..., 0], steer_seq, n_sub, dt / n_sub)


def to_centre_of_mass(m, s, p) -> tuple:
    """Reference-point state ``s`` (x, y, yaw, vx, vy, w) -> the centre of mass's (body velocities)."""
    rx, ry, cy = p.sensor_x_m, p.sensor_y_m, p.sensor_yaw_rad
    yaw = s[2] + cy
    sn, c = m.sin_cos(yaw)
    sc, cc = np.sin(cy), np.cos(cy)
    vxr, vyr, w = cc * s[3] + sc * s[4], -sc * s[3] + cc * s[4], s[5]
    return (s[0] - (c * rx - sn * ry), s[1] - (sn * rx + c * ry), yaw, vxr + w * ry, vyr - w * rx, w)


def to_reference_point(m, xs, p) -> tuple:
    """Centre-of-mass state ``xs`` (x, y, yaw, vx, vy, w, ...) -> the recorded reference point's."""
    rx, ry, cy = p.sensor_x_m, p.sensor_y_m, p.sensor_yaw_rad
    x, y, yaw, vx, vy, w = xs[:6]
    sn, c = m.sin_cos(yaw)
    sc, cc = np.sin(cy), np.cos(cy)
    vxr, vyr = vx - w * ry, vy + w * rx
    return (x + c * rx - sn * ry, y + sn * rx + c * ry, yaw - cy, cc * vxr - sc * vyr, sc * vxr + cc * vyr, w)


def euler_step(m, xs: tuple, throttle, steering, p, start: RolloutStart, correction=None) -> tuple:
    """One command step (``start.substeps`` Euler substeps) of the model; ``correction(m, x, u)``, if
    given, adds accelerations (vx, vy, w) to the derivative (the learned residual)."""
    model = CommandedSingleTrackModel
    u = model.control_record((throttle, steering))
    h = start.substep_s
    for _ in range(start.substeps):
        x = model.state_record(xs)
        d = model.derivative(m, x, u, p)
        if correction is not None:
            a = correction(m, x, u)
            d = (*d[:3], d[3] + a[0], d[4] + a[1], d[5] + a[2], *d[6:])
        xs = tuple(a_ + h * b for a_, b in zip(xs, d))
    return xs


def rollout(params, state0: np.ndarray, commands: np.ndarray, past: np.ndarray, dt: float,
            max_substep_s: float = MAX_SUBSTEP_S, correction=None) -> np.ndarray:
    """Predicted reference-point states (..., H, 6) (see the module docstring).

    ``params`` has the model's parameters and ``SENSOR_KEYS`` as attributes; each may be a scalar
    or an array broadcasting against the window axes (used to evaluate several parameter sets at
    once: ``state0`` (N, 6) with parameters of shape (K, 1) gives (K, N, H, 6)), except
    ``steer_dead_time_s``, a scalar. ``correction``: see :func:`euler_step`.
    """
    from mbrl_control.ops import numpy_ops as m

    start = rollout_start(params, state0, commands, past, dt, max_substep_s)
    xs, out = start.state, []
    for j in range(start.throttle.shape[-1]):
        xs = euler_step(m, xs, start.throttle[..., j], start.steering[..., j], params, start, correction)
        out.append(np.stack(np.broadcast_arrays(*to_reference_point(m, xs, params)), axis=-1))
    return np.stack(out, axis=-2)


class CommandedCarPredictor:
    """A fitted commanded single-track model as a metric.py predictor (batched), with an optional
    learned residual of the body accelerations (:mod:`.commanded_residual`)."""

    batched = True
    residual_kind = "instantaneous"
    """What the residual reads: this instant's state and commands (``history``: also a per-window context)."""

    def __init__(self, params: dict, command_names=("throttle_applied", "steering"), info: dict | None = None,
                 residual=None):
        missing = [k for k in FIXED_PARAMS + IDENTIFIED_PARAMS + SENSOR_KEYS if k not in params]
        if missing:
            raise MbrlError(f"model parameters missing: {missing}")
        self.params = {k: float(v) for k, v in params.items()}
        self.command_names = tuple(command_names)
        self.info = dict(info or {})
        self._p = SimpleNamespace(**self.params)
        self.residual = residual  # a ResidualEnsemble of the commanded car's features, or None
        self._correction = None
        if residual is not None:
            from mbrl_control.models.commanded_residual import EnsembleMeanCorrection

            self._correction = EnsembleMeanCorrection(residual)

    def predict(self, state0, commands, dt: float = 0.01, past_commands=None, meta=None):
        state0 = np.asarray(state0, dtype=np.float64)
        commands = np.asarray(commands, dtype=np.float64)
        single = state0.ndim == 1
        if single:
            state0, commands = state0[None], commands[None]
            past_commands = None if past_commands is None else np.asarray(past_commands)[None]
        if commands.shape[-1] != len(self.command_names):
            raise ValueError(f"commands have {commands.shape[-1]} columns, the model takes {self.command_names}")
        if past_commands is None or np.shape(past_commands)[-2] == 0:  # no history: the first command held
            past_commands = np.repeat(commands[:, :1], max(1, commands.shape[1]), axis=1)
        out = rollout(self._p, state0, commands, np.asarray(past_commands, dtype=np.float64), float(dt),
                      correction=self._correction)
        return out[0] if single else out

    __call__ = predict

    def without_residual(self) -> "CommandedCarPredictor":
        """The same physics and actuators, no residual."""
        return CommandedCarPredictor(self.params, self.command_names, self.info)

    def save(self, path: str | Path) -> Path:
        import io

        import torch

        from mbrl_control.config import atomic_write_bytes

        data = {"format": MODEL_FILE_FORMAT, "model": CommandedSingleTrackModel.name, "params": self.params,
                "command_names": list(self.command_names), "info": self.info}
        if self.residual is not None:
            data.update(format=RESIDUAL_FILE_FORMAT, residual_kind=self.residual_kind, residual_config=self.residual.config(),
                        residual_state={k: v.detach().cpu().double().clone()
                                        for k, v in self.residual.state_dict().items()})
        buf = io.BytesIO()
        torch.save(data, buf)
        return atomic_write_bytes(path, buf.getvalue())


def _residual_of(data: dict, source: str, extra_features: int = 0):
    """The residual ensemble stored in a model file's dict (validated), of ``extra_features`` inputs
    beyond :data:`~.commanded_residual.FEATURES` (a history residual's context)."""
    from mbrl_control.models.commanded_residual import FEATURES, new_ensemble

    expected = len(FEATURES) + extra_features
    try:
        config = data["residual_config"]
        if int(config.get("feature_dim", -1)) != expected:
            raise ValueError(f"residual of {config.get('feature_dim')} features, expected {expected}")
        ens = new_ensemble(int(config["members"]), tuple(int(h) for h in config["hidden"]), 0, feature_dim=expected)
        ens.load_state_dict(data["residual_state"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MbrlError(f"{source}: bad residual in the model file ({first[:160]})") from None
    if not ens.is_finite():
        raise MbrlError(f"{source}: residual weights are not finite")
    return ens


def load_predictor(path: str | Path) -> CommandedCarPredictor:
    """The predictor of a fitted model file written by ``mbrl-control fit --columns ...``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"model file not found: {path}")
    from mbrl_control.models.guards import check_model_archive

    check_model_archive(path)  # memory budget and torch's zip layout, before torch.load allocates
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise MbrlError(f"{path}: not a readable model file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") not in (MODEL_FILE_FORMAT, RESIDUAL_FILE_FORMAT):
        raise MbrlError(f"{path}: not a fitted real-car model (format {MODEL_FILE_FORMAT} expected)")
    names, info = data.get("command_names", ("throttle_applied", "steering")), data.get("info", {})
    if data["format"] != RESIDUAL_FILE_FORMAT:
        return CommandedCarPredictor(data["params"], names, info)
    kind = data.get("residual_kind", "instantaneous")
    if kind == "history":
        from mbrl_control.models.commanded_residual import HISTORY_CONTEXT, HistoryResidualPredictor

        return HistoryResidualPredictor(data["params"], names, info, _residual_of(data, str(path), len(HISTORY_CONTEXT)))
    if kind != "instantaneous":
        raise MbrlError(f"{path}: unknown residual kind {kind!r}")
    return CommandedCarPredictor(data["params"], names, info, _residual_of(data, str(path)))


def vehicle_params(path: str | Path) -> dict:
    """Facts and initial identified values of a real-car vehicle YAML (``models/dart.yaml``)."""
    from mbrl_control.config import load_yaml

    data = load_yaml(path)
    veh, ident = data.get("vehicle"), data.get("identified", {})
    if not isinstance(veh, dict) or not isinstance(ident, dict):
        raise MbrlError(f"{path}: needs a 'vehicle' mapping (and an 'identified' mapping)")
    out = {"slip_min_speed_mps": 0.5, "kinematic_blend_low_mps": 0.3, "kinematic_blend_high_mps": 1.0,
           "kinematic_relax_time_s": 0.03}
    for key in ("mass_kg", "lf_m", "lr_m", "yaw_inertia_kgm2") + SENSOR_KEYS:
        if key not in veh and key not in SENSOR_KEYS:
            raise MbrlError(f"{path}: vehicle.{key} is missing")
        out[key] = veh.get(key, 0.0)
    for key in IDENTIFIED_PARAMS:
        if key not in ident:
            raise MbrlError(f"{path}: identified.{key} (initial value) is missing")
        out[key] = ident[key]
    for key, value in out.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise MbrlError(f"{path}: {key} must be a number, got {value!r}") from None
        if not np.isfinite(out[key]):
            raise MbrlError(f"{path}: {key} must be finite")
    for key in ("mass_kg", "lf_m", "lr_m", "yaw_inertia_kgm2", "steer_time_constant_s", "throttle_time_constant_s"):
        if out[key] <= 0:
            raise MbrlError(f"{path}: {key} must be positive")
    return out
