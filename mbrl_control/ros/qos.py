"""QoS profiles for control: fresh data reliably, visualisation best effort, model announcements latched."""

from __future__ import annotations

from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

ODOMETRY = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
"""Odometry: reliable, small depth (only the latest matters; no stale backlog)."""

COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
"""Commands (drive / cmd_vel): reliable, small depth."""

VISUALIZATION = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                           durability=DurabilityPolicy.VOLATILE)
"""Planned path and candidates: best effort, latest only."""

DIAGNOSTICS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

MODEL_UPDATES = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Accepted models: a late-joining controller still gets the newest one."""

CLOCK = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)
"""/clock: reliable publisher (rclpy's time source subscribes best effort, which matches)."""
