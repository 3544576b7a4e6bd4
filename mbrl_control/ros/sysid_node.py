"""``sysid_node``: online system identification on the live odometry and commands.

Subscribes ``odom`` and the commands (``drive`` or ``cmd_vel`` by ``command_type``). Each command
is one observation at its stamp (the controller's tick): the odometry received last before that
tick as a 7-state (steering estimated with the servo model on the commanded steering, as the
controller does) and the command. The observations feed
:func:`mbrl_control.sysid.online.make_online_updater` (options: the ``sysid`` parameter section),
which refits in a background worker and validates every candidate. An accepted model is saved
as a versioned file (``<out_dir>/model_vNNN.pt`` plus ``.json`` metrics) and announced on
``model_updates`` (std_msgs/String, JSON ``{"version", "path", "sha256", "hmac", "metrics", "t_s"}``,
reliable, transient local) for controller_node to hot-swap; ``hmac`` authenticates the announcement
with the per-run secret (:mod:`mbrl_control.ros.model_auth`).
"""

from __future__ import annotations

import json
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mbrl_control.config import atomic_write_text, load_vehicle_params  # noqa: E402
from mbrl_control.control.command_interface import (CALIBRATION_TERMS, MAX_DEAD_TIME_S,  # noqa: E402
                                                    calibration_terms, load_actuation)
from mbrl_control.models.factory import make_model  # noqa: E402
from mbrl_control.models.layout import S, U  # noqa: E402
from mbrl_control.models.odometry import odometry_to_state  # noqa: E402
from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import model_auth  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros.params import (ACTUATOR_CALIBRATION_PARAMS, ParamSpec, data_file, declare_params,  # noqa: E402
                                     declare_sections, model_spec, reject_unknown)
from mbrl_control.ros.steering import SteeringEstimator  # noqa: E402
from mbrl_control.sysid.actuator_id import ActuatorIdentifier, identifier_for  # noqa: E402
from mbrl_control.sysid.applied_controls import AppliedControls  # noqa: E402

NODE_NAME = "sysid_node"
ODOM_HISTORY = 64
"""Recent odometry kept to pair a command with the odometry received before its tick."""

PARAMS = (
    ParamSpec("model", "dynamic", "the controller's starting model: kinematic | dynamic | semiparametric | FILE"),
    ParamSpec("vehicle_file", "", "vehicle parameter YAML (the prior); empty: models/f1tenth.yaml"),
    ParamSpec("rate_hz", 50.0, "control rate [Hz]: models step 1/rate_hz", low=1.0, high=1000.0),
    ParamSpec("command_type", "ackermann", "learn from 'drive' (AckermannDriveStamped) or 'cmd_vel' (TwistStamped)",
              choices=("ackermann", "twist")),
    ParamSpec("odom_timeout_s", 0.2, "commands with odometry older than this are not used [s]", positive=True),
    ParamSpec("out_dir", "", "folder of the versioned model files; empty: $MBRL_MODEL_DIR, else a temporary folder"),
    ParamSpec("poll_period_s", 0.2, "how often to collect a finished refit [s]", positive=True, high=10.0),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics [s]", positive=True, high=60.0),
    *ACTUATOR_CALIBRATION_PARAMS,
    ParamSpec("steer_dead_time_s", 0.0, "steering dead time [s] (identified with actuator_calibration 'identify')",
              low=0.0, high=MAX_DEAD_TIME_S),
)


class SysidNode(Node):
    """Feeds the online updater and announces accepted models; see the module docstring."""

    updater = None  # until the constructor got that far (rclpy may destroy a half-built node at shutdown)
    _closed = True

    def __init__(self, context: Context | None = None, node_name: str = NODE_NAME, cli_args: list[str] | None = None,
                 parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(node_name, context=context, cli_args=cli_args, parameter_overrides=parameter_overrides)
        self.cfg = cfg = declare_params(self, PARAMS)
        options = declare_sections(self, ("sysid",))["sysid"]
        reject_unknown(self)
        self.dt_s = 1.0 / cfg["rate_hz"]
        self.params = load_vehicle_params(data_file(cfg["vehicle_file"]))
        self.out_dir = model_auth.resolve_model_dir(cfg["out_dir"]) or Path(tempfile.mkdtemp(prefix="mbrl_sysid_"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._secret = model_auth.run_secret(self.out_dir)  # $MBRL_MODEL_SECRET, else the folder's key file
        options.setdefault("out_dir", str(self.out_dir / "refits"))
        options.setdefault("deterministic", False)  # live data: take a refit when it is ready, never wait for it
        self.model = make_model(model_spec(cfg["model"]), self.params, self.dt_s)
        try:
            from mbrl_control.sysid.online import make_online_updater
        except ModuleNotFoundError as exc:
            raise MbrlError(f"online system identification is not available in this build ({exc.name})") from None
        self.updater = make_online_updater(self.model, self.params, self.dt_s, options)
        self._closed = False
        self.version = 0
        self.observations = 0
        self.announced: list[dict[str, Any]] = []
        self._odom: tuple[tuple[float, ...], int] | None = None
        self._recent: deque[tuple[tuple[float, ...], int]] = deque(maxlen=ODOM_HISTORY)  # (fields, receive ns)
        self._steering = SteeringEstimator(self.params)
        self._applied, self._actuator_id = self._make_actuators()
        self._last_cmd_ns: int | None = None
        self._yaw_ref: float | None = None
        self._make_interfaces()
        self.get_logger().info(f"online sysid on '{self._cmd_topic}', models announced on 'model_updates', files in {self.out_dir}")

    def _make_actuators(self) -> tuple[AppliedControls, ActuatorIdentifier | None]:
        """The car's actuator models (controller_node's parameters and definitions): wire commands ->
        applied controls, their terms given or identified online."""
        cfg = self.cfg
        config = load_actuation({"calibration": cfg["actuator_calibration"], "steer_dead_time_s": cfg["steer_dead_time_s"],
                                 **{name: cfg[name] for name in CALIBRATION_TERMS}}, f"{self.get_name()} parameters")
        applied = AppliedControls(self.params, self.dt_s, calibration_terms(config, self.params), config.steer_dead_time_s)
        return applied, identifier_for(config, self.params, self.dt_s, background=True)

    def _make_interfaces(self) -> None:
        cfg = self.cfg
        io_group, poll_group = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.create_subscription(Odometry, "odom", self._on_odom, qos.ODOMETRY, callback_group=io_group)
        if cfg["command_type"] == "ackermann":
            self._cmd_topic = "drive"
            self.create_subscription(AckermannDriveStamped, "drive", self._on_drive, qos.COMMAND, callback_group=io_group)
        else:
            self._cmd_topic = "cmd_vel"
            self.create_subscription(TwistStamped, "cmd_vel", self._on_twist, qos.COMMAND, callback_group=io_group)
        self._announce_pub = self.create_publisher(String, "model_updates", qos.MODEL_UPDATES)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self.create_timer(cfg["poll_period_s"], self._on_poll, callback_group=poll_group)
        self.create_timer(cfg["diagnostics_period_s"], self._on_diagnostics, callback_group=poll_group)

    # ------------------------------------------------------------------ observations
    def _on_odom(self, msg: Odometry) -> None:
        if conv.odometry_is_finite(msg):
            self._odom = (conv.odometry_fields(msg), self.get_clock().now().nanoseconds)
            self._recent.append(self._odom)

    def _on_drive(self, msg: AckermannDriveStamped) -> None:
        self._observe(conv.control_from_drive(msg), msg.header.stamp)

    def _on_twist(self, msg: TwistStamped) -> None:
        odom = self._odom
        v_now = 0.0 if odom is None else float(np.hypot(odom[0][3], odom[0][4]))
        self._observe(conv.control_from_twist(msg, v_now, self.dt_s, self.params.wheelbase_m,
                                              last_steer_rad=self._steering.command_rad), msg.header.stamp)

    def _observe(self, u: np.ndarray, stamp) -> None:
        """Pair a command with the odometry its controller saw and hand both to the updater.

        Time is the command's stamp (the controller's tick, free of delivery jitter; the receive
        time if unstamped); the state is the latest odometry received before that tick.
        """
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        t_ns = stamp_ns if stamp_ns > 0 else self.get_clock().now().nanoseconds
        elapsed = self.dt_s if self._last_cmd_ns is None else (t_ns - self._last_cmd_ns) * 1e-9
        if elapsed <= 0.0:
            return  # out of order or repeated
        self._last_cmd_ns = t_ns
        steer = self._steering.advance(elapsed)
        applied = self._applied.applied(u) if np.all(np.isfinite(u)) else u  # through the car's actuators
        self._steering.set_command(float(applied[U.STEER_CMD]))
        odom = next((o for o in reversed(self._recent) if o[1] <= t_ns), None)
        if odom is None or t_ns - odom[1] > self.cfg["odom_timeout_s"] * 1e9 or not np.all(np.isfinite(u)):
            return
        state = odometry_to_state(*odom[0], steer, yaw_ref_rad=self._yaw_ref)
        self._yaw_ref = float(state[S.YAW])
        if self._actuator_id is not None:
            self._actuator_id.observe(t_ns * 1e-9, state, np.append(u, state[S.V]), measured_at_s=odom[1] * 1e-9)
            found = self._actuator_id.poll()
            if found:
                self._applied.adopt(found)
                self.get_logger().info("actuation identified: " + ", ".join(f"{k} {v:.4g}" for k, v in found.items()))
        if self._actuator_id is not None and not self._actuator_id.steering_known():
            return  # the applied controls are guesses until the car's actuators are identified
        self.updater.observe(t_ns * 1e-9, state, applied)
        self.observations += 1

    # ------------------------------------------------------------------ announcements
    def _on_poll(self) -> None:
        model = self.updater.poll_new_model()
        if model is None:
            return
        version = self.version + 1
        try:
            path = self._save(model, version)
        except (MbrlError, OSError, AttributeError) as exc:
            self.get_logger().error(f"could not save accepted model v{version}: {exc}")
            return
        self.version = version
        metrics = {k: v for k, v in dict(getattr(model, "metrics", {}) or {}).items()
                   if isinstance(v, (int, float, str, bool)) or v is None}
        try:
            info = model_auth.announcement(self._secret, version, path.resolve(), metrics=metrics,
                                           t_s=self.get_clock().now().nanoseconds * 1e-9)
        except (OSError, model_auth.RejectedUpdate) as exc:
            self.get_logger().error(f"could not hash accepted model v{version}: {exc}")
            return
        try:
            atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
        except OSError as exc:  # the model itself is saved: announce it anyway
            self.get_logger().error(f"could not write the metrics of model v{version}: {exc}")
        self._announce_pub.publish(String(data=json.dumps(info)))
        self.announced.append(info)
        self.get_logger().info(f"announced model v{version}: {path.name} ({_summary(metrics)}; all metrics in "
                               f"{path.with_suffix('.json').name})")

    def _save(self, model, version: int) -> Path:
        """The versioned model file (written atomically by the model's ``save``)."""
        save = getattr(model, "save", None)
        if save is None:
            raise MbrlError(f"{type(model).__name__} cannot be saved to a file")
        return Path(save(self.out_dir / f"model_v{version:03d}.pt"))

    def _on_diagnostics(self) -> None:
        values = {"observations": self.observations, "models_announced": self.version,
                  "actuation steer_dead_time_s": self._applied.dead_time_s,
                  **{f"actuation {name}": getattr(self._applied.terms, name) for name in CALIBRATION_TERMS}}
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [conv.diagnostic_status(f"{self.get_name()}: online sysid", self.get_fully_qualified_name(),
                                               DiagnosticStatus.OK, "running", values)]
        self._diag_pub.publish(array)

    def close(self) -> None:
        """Stop the refit worker (idempotent)."""
        if not self._closed:
            self._closed = True
            self.updater.close()

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


SUMMARY_METRICS = ("rmse_candidate_m", "rmse_current_m", "physics", "residual_kept", "samples", "fit_s")
"""The metrics an 'announced model' log line shows (the .json beside the model has them all)."""


def _summary(metrics: dict) -> str:
    """One short line: the held-out errors of the candidate and the current model, and how it was fitted."""
    parts = []
    for key in SUMMARY_METRICS:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def main(args: list[str] | None = None) -> int:
    from mbrl_control.ros.runtime import run_node

    return run_node(NODE_NAME, lambda context: SysidNode(context=context), args)


if __name__ == "__main__":
    raise SystemExit(main())

