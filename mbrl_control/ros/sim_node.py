"""``sim_node``: a simulated car on ROS topics (built-in single-track plant or MuJoCo).

Subscribes ``drive`` (AckermannDriveStamped: ``steering_angle`` -> STEER_CMD, ``acceleration``
-> ACCEL) or ``cmd_vel`` (TwistStamped, inverted by :func:`conversions.control_from_twist`),
holds the latest command, advances the plant on every tick (``rate_hz``) to the current wall time
(times ``real_time_factor``), so simulated time keeps pace with the clock on the wall even when a
tick comes late, and publishes ``odom`` (nav_msgs/Odometry, stamped with sim time) and ``/clock``.

The tick runs on the steady clock, never on ROS time: the simulator is the source of sim time,
so nodes started with ``use_sim_time`` follow it. ``real_time_factor`` > 1 runs faster than
real time. Without a command for ``command_timeout_s`` (wall time) the car brakes to a stop.
"""

from __future__ import annotations

import time

import numpy as np

from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402

from mbrl_control.config import load_vehicle_params  # noqa: E402
from mbrl_control.control.base import safe_stop_command  # noqa: E402
from mbrl_control.models.layout import CONTROL_DIM, S, U  # noqa: E402
from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros.params import ParamSpec, data_file, declare_params, reject_unknown  # noqa: E402
from mbrl_control.sim import ACTUATIONS, PLANTS, make_plant  # noqa: E402
from mbrl_control.sim.plant import PlantConfig, initial_state_at  # noqa: E402
from mbrl_control.track import resolve_track  # noqa: E402

NODE_NAME = "sim_node"
MAX_CATCH_UP_S = 0.1
"""Largest simulated time one tick integrates; a longer stall of the process slows sim time instead."""

PARAMS = (
    ParamSpec("plant", "dynamic", "simulated vehicle", choices=PLANTS),
    ParamSpec("actuation", "acceleration", "the simulated driver: applies AckermannDrive.acceleration, or follows "
              "AckermannDrive.speed like an F1TENTH car / f1tenth_gym (speed loop, rate-limited steering after 20 ms), "
              "or applies the acceleration through actuators that differ from the nominal ('miscalibrated': asymmetric "
              "steering map with a trim offset, 80 ms steering dead time, 15 % throttle dead zone)",
              choices=ACTUATIONS),
    ParamSpec("track", "default", "track NAME or centerline CSV: the car starts at its start pose"),
    ParamSpec("vehicle_file", "", "vehicle parameter YAML of the plant; empty: models/f1tenth.yaml"),
    ParamSpec("rate_hz", 100.0, "simulation step and odometry rate [Hz]", low=1.0, high=2000.0),
    ParamSpec("real_time_factor", 1.0, "simulated seconds per wall second", low=0.01, high=100.0),
    ParamSpec("command_type", "ackermann", "listen to 'drive' (AckermannDriveStamped) or 'cmd_vel' (TwistStamped)",
              choices=("ackermann", "twist")),
    ParamSpec("command_period_s", 0.02, "controller period: a twist's speed set-point is reached in this time [s]",
              positive=True, high=1.0),
    ParamSpec("command_timeout_s", 0.5, "no command for this long (wall time): brake to a stop [s]", positive=True),
    ParamSpec("publish_clock", True, "publish /clock with the simulated time"),
    ParamSpec("frame_id", "map", "odometry frame"),
    ParamSpec("child_frame_id", "base_link", "odometry child frame"),
    ParamSpec("start_speed_mps", 0.0, "initial speed along the start heading [m/s]", low=0.0, high=20.0),
    ParamSpec("seed", 0, "sensor-noise seed", low=0, high=2**31 - 1),
    ParamSpec("command_latency_s", 0.0, "commands take effect this much later [s]", low=0.0, high=1.0),
    ParamSpec("position_noise_m", 0.0, "std of the measured x, y [m]", low=0.0, high=10.0),
    ParamSpec("yaw_noise_rad", 0.0, "std of the measured yaw [rad]", low=0.0, high=1.0),
    ParamSpec("velocity_noise", 0.0, "std of measured speed, yaw rate, slip", low=0.0, high=10.0),
)


class SimNode(Node):
    """Steps a plant in (scaled) real time and publishes its odometry; see the module docstring."""

    def __init__(self, context: Context | None = None, node_name: str = NODE_NAME, cli_args: list[str] | None = None,
                 parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(node_name, context=context, cli_args=cli_args, parameter_overrides=parameter_overrides)
        self.cfg = cfg = declare_params(self, PARAMS)
        reject_unknown(self)
        self.params = load_vehicle_params(data_file(cfg["vehicle_file"]))
        self.track = resolve_track(cfg["track"])
        plant_cfg = PlantConfig(rate_hz=max(cfg["rate_hz"], 100.0), command_latency_s=cfg["command_latency_s"],
                                position_noise_m=cfg["position_noise_m"], yaw_noise_rad=cfg["yaw_noise_rad"],
                                velocity_noise=cfg["velocity_noise"], seed=cfg["seed"])
        self.plant = make_plant(cfg["plant"], self.params, plant_cfg, track=self.track, actuation=cfg["actuation"])
        self.step_s = 1.0 / cfg["rate_hz"]
        x, y, yaw = self.track.start_pose()
        self.plant.reset(initial_state_at(x, y, yaw, cfg["start_speed_mps"], self.params))
        self.measured = self.plant.measure()
        self.sim_time_s = 0.0
        self.commands_received = 0
        self.stalls = 0
        self._start_wall_s: float | None = None
        self._command = np.zeros(CONTROL_DIM)
        self._command_wall_s: float | None = None
        self._odom_msg = Odometry()
        self._clock_msg = ClockMsg()
        self._make_interfaces()
        self.get_logger().info(f"{self.plant.name} plant on '{self.track.name}' at {cfg['rate_hz']:g} Hz "
                               f"(x{cfg['real_time_factor']:g} real time)")

    def _make_interfaces(self) -> None:
        cfg = self.cfg
        # Commands in their own group: a tick that runs long (catching up) must not hold back the latest command.
        command_group, tick_group = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        if cfg["command_type"] == "ackermann":
            self.create_subscription(AckermannDriveStamped, "drive", self._on_drive, qos.COMMAND, callback_group=command_group)
        else:
            self.create_subscription(TwistStamped, "cmd_vel", self._on_twist, qos.COMMAND, callback_group=command_group)
        self._odom_pub = self.create_publisher(Odometry, "odom", qos.ODOMETRY)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", qos.CLOCK) if cfg["publish_clock"] else None
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = self.create_timer(self.step_s / cfg["real_time_factor"], self._on_timer, callback_group=tick_group,
                                        clock=steady)

    def _on_drive(self, msg: AckermannDriveStamped) -> None:
        self._set_command(conv.wire_from_drive(msg))

    def _on_twist(self, msg: TwistStamped) -> None:
        u = conv.control_from_twist(msg, float(self.measured[S.V]), self.cfg["command_period_s"], self.params.wheelbase_m,
                                    last_steer_rad=float(self._command[U.STEER_CMD]))
        self._set_command(np.array([u[U.STEER_CMD], u[U.ACCEL], msg.twist.linear.x]))

    def _set_command(self, u: np.ndarray) -> None:
        if np.all(np.isfinite(u)):
            self._command = u
            self._command_wall_s = time.monotonic()
            self.commands_received += 1
        else:
            self.get_logger().warning("ignored non-finite command", throttle_duration_sec=1.0)

    def _current_command(self) -> np.ndarray:
        """The latest command, or a braking stop when commands stopped coming."""
        last = self._command_wall_s
        if last is None or time.monotonic() - last > self.cfg["command_timeout_s"]:
            return safe_stop_command(self.plant.state, self.params, self.step_s)
        return self._command

    def _on_timer(self) -> None:
        """Advance the plant to the (scaled) wall time, at most ``MAX_CATCH_UP_S`` at once, and publish."""
        now = time.monotonic()
        if self._start_wall_s is None:
            self._start_wall_s = now - self.step_s / self.cfg["real_time_factor"]
        behind_s = (now - self._start_wall_s) * self.cfg["real_time_factor"] - self.sim_time_s
        if behind_s < 0.5 * self.step_s:
            return  # an early tick: nothing to simulate yet
        duration = min(behind_s, MAX_CATCH_UP_S)
        if duration < behind_s:  # the process was stalled: let sim time fall behind instead of jumping
            self._start_wall_s += (behind_s - duration) / self.cfg["real_time_factor"]
            self.stalls += 1
        # A late tick catches up in steps of about 1 / rate_hz, each with its /clock and odometry: sim time
        # then never jumps over a control period of the nodes that follow it (their timers would skip it).
        count = max(1, round(duration / self.step_s))
        for _ in range(count):
            self.step(duration / count)

    def _on_tick(self) -> None:
        """Exactly one simulation step of ``1 / rate_hz`` (deterministic stepping, e.g. in tests)."""
        self.step(self.step_s)

    def step(self, duration_s: float) -> None:
        """Simulate ``duration_s`` with the current command, then publish odometry and /clock."""
        self.measured = self.plant.advance(self._current_command(), duration_s)
        self.sim_time_s += duration_s
        stamp = conv.s_to_stamp(self.sim_time_s)
        if self._clock_pub is not None:
            self._clock_msg.clock = stamp
            self._clock_pub.publish(self._clock_msg)
        self._odom_pub.publish(conv.fill_odometry(self._odom_msg, self.measured, stamp, self.cfg["frame_id"],
                                                  self.cfg["child_frame_id"]))


def main(args: list[str] | None = None) -> int:
    from mbrl_control.ros.runtime import run_node

    return run_node(NODE_NAME, lambda context: SimNode(context=context), args)


if __name__ == "__main__":
    raise SystemExit(main())
