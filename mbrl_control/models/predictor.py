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
the actuators over the past commands, and the result is moved back to the reference point.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.models.commanded_single_track import FIXED_PARAMS, IDENTIFIED_PARAMS, CommandedSingleTrackModel
from mbrl_control.models.steering_actuator import delayed_commands, steering_map

MODEL_FILE_FORMAT = "mbrl_control.commanded_car/1"
MAX_SUBSTEP_S = 0.005
SENSOR_KEYS = ("sensor_x_m", "sensor_y_m", "sensor_yaw_rad")


def rollout(params, state0: np.ndarray, commands: np.ndarray, past: np.ndarray, dt: float,
            max_substep_s: float = MAX_SUBSTEP_S) -> np.ndarray:
    """Predicted reference-point states (..., H, 6) (see the module docstring).

    ``params`` has the model's parameters and ``SENSOR_KEYS`` as attributes; each may be a scalar
    or an array broadcasting against the window axes (used to evaluate several parameter sets at
    once: ``state0`` (N, 6) with parameters of shape (K, 1) gives (K, N, H, 6)), except
    ``steer_dead_time_s``, a scalar.
    """
    from mbrl_control.ops import numpy_ops as m

    p = params
    H = commands.shape[-2]
    u = np.array(commands, dtype=np.float64)
    u_past = np.array(past, dtype=np.float64)
    steer_seq = delayed_commands(u_past[..., 1:2], u[..., 1:2], p.steer_dead_time_s, dt)[..., 0]
    past_steer = delayed_commands(u_past[..., :1, 1:2].repeat(u_past.shape[-2], -2), u_past[..., 1:2],
                                  p.steer_dead_time_s, dt)[..., 0]
    n_sub = max(1, int(np.ceil(dt / max_substep_s - 1e-9)))
    h = dt / n_sub
    # actuator states at the start: the actuators run over the past commands from rest at the first one
    steer = steering_map(m, past_steer[..., 0], p) + 0.0 * p.steer_time_constant_s
    duty = u_past[..., 0, 0] + 0.0 * p.throttle_time_constant_s
    a_s, a_d = np.exp(-dt / p.steer_time_constant_s), np.exp(-dt / p.throttle_time_constant_s)
    for k in range(u_past.shape[-2]):
        steer = a_s * steer + (1.0 - a_s) * steering_map(m, past_steer[..., k], p)
        duty = a_d * duty + (1.0 - a_d) * u_past[..., k, 0]
    # reference point -> centre of mass
    s0 = np.asarray(state0, dtype=np.float64)
    rx, ry, cy = p.sensor_x_m, p.sensor_y_m, p.sensor_yaw_rad
    yaw = s0[..., 2] + cy
    c, s = np.cos(yaw), np.sin(yaw)
    cc, sc = np.cos(cy), np.sin(cy)
    vxr = cc * s0[..., 3] + sc * s0[..., 4]
    vyr = -sc * s0[..., 3] + cc * s0[..., 4]
    w = s0[..., 5]
    x = s0[..., 0] - (c * rx - s * ry)
    y = s0[..., 1] - (s * rx + c * ry)
    vx = vxr + w * ry
    vy = vyr - w * rx
    shape = np.broadcast_shapes(np.shape(x), np.shape(steer), np.shape(p.mass_kg), np.shape(p.tyre_shape))
    xs = [np.broadcast_to(v, shape).copy() for v in (x, y, yaw, vx, vy, w, steer, duty)]
    out = np.empty(shape + (H, 6))
    model = CommandedSingleTrackModel
    for j in range(H):
        uj = model.control_record((u[..., j, 0], steer_seq[..., j]))
        for _ in range(n_sub):
            d = model.derivative(m, model.state_record(xs), uj, p)
            xs = [a + h * b for a, b in zip(xs, d)]
        x, y, yaw, vx, vy, w = xs[:6]
        c, s = np.cos(yaw), np.sin(yaw)
        vxr, vyr = vx - w * ry, vy + w * rx
        out[..., j, 0] = x + c * rx - s * ry
        out[..., j, 1] = y + s * rx + c * ry
        out[..., j, 2] = yaw - cy
        out[..., j, 3] = cc * vxr - sc * vyr
        out[..., j, 4] = sc * vxr + cc * vyr
        out[..., j, 5] = w
    return out


class CommandedCarPredictor:
    """A fitted commanded single-track model as a metric.py predictor (batched)."""

    batched = True

    def __init__(self, params: dict, command_names=("throttle_applied", "steering"), info: dict | None = None):
        missing = [k for k in FIXED_PARAMS + IDENTIFIED_PARAMS + SENSOR_KEYS if k not in params]
        if missing:
            raise MbrlError(f"model parameters missing: {missing}")
        self.params = {k: float(v) for k, v in params.items()}
        self.command_names = tuple(command_names)
        self.info = dict(info or {})
        self._p = SimpleNamespace(**self.params)

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
        out = rollout(self._p, state0, commands, np.asarray(past_commands, dtype=np.float64), float(dt))
        return out[0] if single else out

    __call__ = predict

    def save(self, path: str | Path) -> Path:
        import io

        import torch

        from mbrl_control.config import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"format": MODEL_FILE_FORMAT, "model": CommandedSingleTrackModel.name, "params": self.params,
                    "command_names": list(self.command_names), "info": self.info}, buf)
        return atomic_write_bytes(path, buf.getvalue())


def load_predictor(path: str | Path) -> CommandedCarPredictor:
    """The predictor of a fitted model file written by ``mbrl-control fit --columns ...``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"model file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise MbrlError(f"{path}: not a readable model file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FILE_FORMAT:
        raise MbrlError(f"{path}: not a fitted real-car model (format {MODEL_FILE_FORMAT} expected)")
    return CommandedCarPredictor(data["params"], data.get("command_names", ("throttle_applied", "steering")),
                                 data.get("info", {}))


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
