"""Conversions between ROS 2 messages and the model layout (:mod:`mbrl_control.models.layout`).

Commands on the wire are exactly the model control ``u = (STEER_CMD, ACCEL)``:
AckermannDrive ``steering_angle`` and ``acceleration``; its ``speed`` carries the speed
set-point ``v + a dt`` for drivers that only follow a speed. A ``cmd_vel`` TwistStamped carries
that speed set-point in ``linear.x`` and the kinematic yaw rate ``v_cmd tan(steer) / wheelbase``
in ``angular.z`` (what Gazebo's Ackermann plugin inverts); :func:`control_from_twist` inverts it.
"""

from __future__ import annotations

import math

import numpy as np
from ackermann_msgs.msg import AckermannDriveStamped
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped, TwistStamped
from nav_msgs.msg import Odometry, Path
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_control.models.actuation import speed_after_one_period
from mbrl_control.models.layout import CONTROL_DIM, U
from mbrl_control.models.odometry import odometry_to_state, quaternion_to_yaw, state_to_odometry

MIN_TWIST_SPEED_MPS = 0.05
"""Below this commanded speed a twist's yaw rate gives no steering angle; the last one is kept."""


def stamp_to_s(stamp: TimeMsg) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


def s_to_stamp(t_s: float) -> TimeMsg:
    ns = int(round(t_s * 1e9))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ------------------------------------------------------------------ odometry
def odometry_fields(msg: Odometry) -> tuple[float, float, float, float, float, float]:
    """(x_m, y_m, yaw_rad (wrapped), vx_body_mps, vy_body_mps, yaw_rate_radps) of an Odometry."""
    p, q, tw = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
    return p.x, p.y, quaternion_to_yaw(q.x, q.y, q.z, q.w), tw.linear.x, tw.linear.y, tw.angular.z


def odometry_is_finite(msg: Odometry) -> bool:
    """False for NaN/inf anywhere in the pose or twist we use, or a degenerate quaternion."""
    q = msg.pose.pose.orientation
    values = odometry_fields(msg) if all(math.isfinite(v) for v in (q.x, q.y, q.z, q.w)) else (math.nan,)
    return all(math.isfinite(v) for v in values) and (q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w) > 1e-6


MAX_ODOM_POSITION_M = 1e5
"""Largest plausible |x|, |y| of odometry (100 km from the origin of the map frame)."""
MAX_ODOM_YAW_RATE_RADPS = 50.0
"""Largest plausible |yaw rate| (about 8 turns a second)."""
ODOM_JUMP_MARGIN_M = 1.0
"""A new position may be this much further from the last accepted one than the speed bound allows."""
ODOM_REANCHOR_COUNT = 5
"""After this many consecutive mutually consistent odometry messages at a new place the jump is accepted
(a relocalisation, a teleported simulation)."""


def odometry_speed_bound_mps(params) -> float:
    """A physical bound on the speed odometry may report: twice the vehicle's top speed (plus 5 m/s)."""
    return 2.0 * max(params.v_max_mps, abs(params.v_min_mps)) + 5.0


def odometry_implausibility(fields: tuple[float, ...], max_speed_mps: float,
                            max_position_m: float = MAX_ODOM_POSITION_M) -> str | None:
    """Why odometry ``fields`` (of :func:`odometry_fields`) cannot be a car, or None when they can."""
    x, y, _, vx, vy, wz = fields
    if not all(math.isfinite(v) for v in fields):
        return "non-finite odometry"
    if abs(x) > max_position_m or abs(y) > max_position_m:
        return f"odometry position beyond {max_position_m:g} m"
    if math.hypot(vx, vy) > max_speed_mps:
        return f"odometry speed {math.hypot(vx, vy):.4g} m/s above the physical bound {max_speed_mps:.4g} m/s"
    if abs(wz) > MAX_ODOM_YAW_RATE_RADPS:
        return f"odometry yaw rate {wz:.4g} rad/s above {MAX_ODOM_YAW_RATE_RADPS:g} rad/s"
    return None


class OdometryGate:
    """Odometry plausibility, rejected like NaN: non-finite values, a broken quaternion, a position beyond
    :data:`MAX_ODOM_POSITION_M`, a speed above :func:`odometry_speed_bound_mps`, a yaw rate above
    :data:`MAX_ODOM_YAW_RATE_RADPS`, and a position jump further from the last accepted position than the
    speed bound allows in the time between them (plus :data:`ODOM_JUMP_MARGIN_M`). A jump is accepted after
    :data:`ODOM_REANCHOR_COUNT` consecutive messages that agree with each other at the new place."""

    def __init__(self, params, max_speed_mps: float | None = None) -> None:
        self.max_speed_mps = float(max_speed_mps if max_speed_mps is not None else odometry_speed_bound_mps(params))
        self._last: tuple[float, float, int] | None = None  # accepted (x, y, receipt ns)
        self._candidate: tuple[float, float, int] | None = None  # the latest jumped message
        self._candidate_count = 0
        self.rejected = 0
        self.last_reason: str | None = None

    def _reachable(self, anchor: tuple[float, float, int], x: float, y: float, t_ns: int) -> bool:
        dt_s = max(0.0, (t_ns - anchor[2]) * 1e-9)
        return math.hypot(x - anchor[0], y - anchor[1]) <= self.max_speed_mps * dt_s + ODOM_JUMP_MARGIN_M

    def check(self, msg: Odometry, t_ns: int) -> tuple[float, ...] | None:
        """The odometry fields when ``msg`` (received at ``t_ns``) is plausible, else None (see ``last_reason``)."""
        reason = None
        fields = odometry_fields(msg) if odometry_is_finite(msg) else None
        if fields is None:
            reason = "non-finite odometry"
        else:
            reason = odometry_implausibility(fields, self.max_speed_mps)
        if reason is None and self._last is not None and not self._reachable(self._last, fields[0], fields[1], t_ns):
            if self._candidate is not None and self._reachable(self._candidate, fields[0], fields[1], t_ns):
                self._candidate_count += 1
            else:
                self._candidate_count = 1
            self._candidate = (fields[0], fields[1], t_ns)
            if self._candidate_count < ODOM_REANCHOR_COUNT:
                reason = (f"odometry position jumped {math.hypot(fields[0] - self._last[0], fields[1] - self._last[1]):.4g} m "
                          f"in {max(0.0, (t_ns - self._last[2]) * 1e-9):.3g} s")
        if reason is not None:
            self.rejected += 1
            self.last_reason = reason
            return None
        self._last = (fields[0], fields[1], t_ns)
        self._candidate, self._candidate_count = None, 0
        return fields


def state_from_odometry(msg: Odometry, steer_rad: float, yaw_ref_rad: float | None = None) -> np.ndarray:
    """The 7-state of an Odometry plus a steering estimate; yaw unwrapped next to ``yaw_ref_rad``."""
    x, y, yaw, vx, vy, wz = odometry_fields(msg)
    return odometry_to_state(x, y, yaw, vx, vy, wz, steer_rad, yaw_ref_rad=yaw_ref_rad)


def fill_odometry(msg: Odometry, state: np.ndarray, stamp: TimeMsg, frame_id: str, child_frame_id: str) -> Odometry:
    """Write pose and body-frame twist of ``state`` into ``msg`` (reused, no allocation of a new one)."""
    o = state_to_odometry(state)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    pose = msg.pose.pose
    pose.position.x, pose.position.y, pose.position.z = o["x_m"], o["y_m"], 0.0
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = o["qx"], o["qy"], o["qz"], o["qw"]
    twist = msg.twist.twist
    twist.linear.x, twist.linear.y = o["vx_body_mps"], o["vy_body_mps"]
    twist.angular.z = o["yaw_rate_radps"]
    return msg


# ------------------------------------------------------------------ commands
def command_speed_mps(v_mps: float, u: np.ndarray, dt_s: float, limits=None) -> float:
    """The speed set-point sent with an acceleration command: the speed after one period
    (clipped to ``[v_min, v_max]`` of the vehicle parameters ``limits`` when given)."""
    speed = float(speed_after_one_period(v_mps, u[U.ACCEL], dt_s))
    return speed if limits is None else _clip(speed, limits.v_min_mps, limits.v_max_mps)


def _clip(value: float, low: float, high: float) -> float:
    """``value`` within [low, high]; a non-finite value becomes 0 clipped (the neutral command).

    The message fields are float32: a value at a limit is published as the limit's float32 (at
    most half an ulp, 3e-8 relative, beyond it), so that the field is exactly the command.
    """
    value = float(value)
    if not math.isfinite(value):
        value = 0.0
    return min(max(value, low), high)


def bounded_command(u: np.ndarray, speed_mps: float, limits) -> tuple[float, float, float]:
    """(steering, acceleration, speed set-point) within the vehicle limits: steering in
    ``[steer_min, steer_max]``, acceleration in ``[-accel_max, accel_max]``, speed in ``[v_min, v_max]``;
    non-finite fields become 0 first. The last line before anything is published."""
    return (_clip(u[U.STEER_CMD], limits.steer_min_rad, limits.steer_max_rad),
            _clip(u[U.ACCEL], -limits.accel_max_mps2, limits.accel_max_mps2),
            _clip(speed_mps, limits.v_min_mps, limits.v_max_mps))


def fill_drive(msg: AckermannDriveStamped, u: np.ndarray, speed_mps: float, stamp: TimeMsg, frame_id: str,
               limits=None) -> AckermannDriveStamped:
    """An AckermannDriveStamped of ``u`` and the speed set-point; every field within the vehicle
    parameters ``limits`` when given (:func:`bounded_command`)."""
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    if limits is not None:
        steer, accel, speed = bounded_command(u, speed_mps, limits)
    else:
        steer, accel, speed = float(u[U.STEER_CMD]), float(u[U.ACCEL]), float(speed_mps)
    msg.drive.steering_angle = steer
    msg.drive.acceleration = accel
    msg.drive.speed = speed
    return msg


def wire_from_drive(msg: AckermannDriveStamped) -> np.ndarray:
    """``[steering_angle, acceleration, speed]`` of a drive message (what a plant's driver reads)."""
    return np.array([msg.drive.steering_angle, msg.drive.acceleration, msg.drive.speed], dtype=np.float64)


def control_from_drive(msg: AckermannDriveStamped) -> np.ndarray:
    u = np.zeros(CONTROL_DIM)
    u[U.STEER_CMD] = msg.drive.steering_angle
    u[U.ACCEL] = msg.drive.acceleration
    return u


def fill_twist(msg: TwistStamped, u: np.ndarray, speed_mps: float, wheelbase_m: float, stamp: TimeMsg,
               frame_id: str, limits=None) -> TwistStamped:
    """A TwistStamped of the speed set-point and the kinematic yaw rate; with ``limits`` (vehicle
    parameters) speed and steering are clipped first, so ``|angular.z| <= v_max tan(steer_max) / L``;
    the other fields are zero."""
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    if limits is not None:
        steer, _, speed = bounded_command(u, speed_mps, limits)
    else:
        steer, speed = float(u[U.STEER_CMD]), float(speed_mps)
    msg.twist.linear.x = float(speed)
    msg.twist.linear.y = msg.twist.linear.z = 0.0
    msg.twist.angular.x = msg.twist.angular.y = 0.0
    msg.twist.angular.z = float(speed * math.tan(steer) / wheelbase_m)
    return msg


def control_from_twist(msg: TwistStamped, v_now_mps: float, dt_s: float, wheelbase_m: float,
                       last_steer_rad: float = 0.0) -> np.ndarray:
    """Invert :func:`fill_twist`: steering from the yaw rate, acceleration reaching the speed in ``dt_s``."""
    v_cmd, wz = msg.twist.linear.x, msg.twist.angular.z
    u = np.zeros(CONTROL_DIM)
    u[U.STEER_CMD] = math.atan(wheelbase_m * wz / v_cmd) if abs(v_cmd) >= MIN_TWIST_SPEED_MPS else last_steer_rad
    u[U.ACCEL] = (v_cmd - v_now_mps) / dt_s
    return u


# ------------------------------------------------------------------ visualisation
def path_msg(xy: np.ndarray, stamp: TimeMsg, frame_id: str) -> Path:
    """A nav_msgs/Path through the (T, 2) points (orientation along the path)."""
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    xy = np.asarray(xy, dtype=np.float64)
    heading = np.arctan2(np.gradient(xy[:, 1]), np.gradient(xy[:, 0])) if len(xy) > 1 else np.zeros(len(xy))
    poses = []
    for (x, y), yaw in zip(xy.tolist(), heading.tolist()):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y = x, y
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(0.5 * yaw), math.cos(0.5 * yaw)
        poses.append(pose)
    msg.poses = poses
    return msg


def candidates_msg(xy: np.ndarray, stamp: TimeMsg, frame_id: str, ns: str = "candidates") -> MarkerArray:
    """Candidate trajectories (K, T, 2) as one LINE_LIST marker (one entity, cheap to draw)."""
    marker = Marker()
    marker.header.stamp = stamp
    marker.header.frame_id = frame_id
    marker.ns, marker.id, marker.type, marker.action = ns, 0, Marker.LINE_LIST, Marker.ADD
    marker.pose.orientation.w = 1.0
    marker.scale.x = 0.01
    marker.color = ColorRGBA(r=0.2, g=0.5, b=1.0, a=0.35)
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim == 3 and xy.shape[1] >= 2:
        segments = np.stack([xy[:, :-1], xy[:, 1:]], axis=2).reshape(-1, 2)  # (K*(T-1)*2, 2) start/end pairs
        marker.points = [Point(x=x, y=y, z=0.0) for x, y in segments.tolist()]
    out = MarkerArray()
    out.markers = [marker]
    return out


# ------------------------------------------------------------------ diagnostics
def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, message=message, level=level)
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    return status


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

