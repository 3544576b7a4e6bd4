"""Throttle with a dead zone: the commanded acceleration -> the acceleration the drive gives.

Written once in the vocabulary of :mod:`mbrl_control.ops` (``m``), like :mod:`.actuation`. An ESC
(and a brushed motor's static friction) gives nothing for a command within ``throttle_dead_zone``
(a fraction of the full command ``accel_max_mps2``, both ways); beyond it the drive responds
linearly and full command still gives full acceleration:
``a = sign(c) max(|c| - z a_max, 0) / (1 - z)``. :func:`command_for_acceleration` is its inverse,
what a controller sends to get ``a``. The real-car duty model with the same dead zone is
:mod:`.drive_motor`.
"""

from __future__ import annotations

import math

MAX_DEAD_ZONE = 0.6
"""A dead zone is a fraction of the full command below this (beyond it a drive is broken, not calibrated)."""


def dead_zone_acceleration(m, accel_cmd, p):
    """Acceleration [m/s^2] the drive gives for the commanded ``accel_cmd`` (dead zone ``p.throttle_dead_zone``)."""
    a_max = p.accel_max_mps2
    zone = p.throttle_dead_zone * a_max
    magnitude = m.max(m.abs(accel_cmd) - zone, 0.0) * (1.0 / (1.0 - p.throttle_dead_zone))
    return m.select(accel_cmd >= 0.0, magnitude, -magnitude)


def command_for_acceleration(accel_mps2: float, dead_zone: float, accel_max_mps2: float) -> float:
    """The command that makes the drive of :func:`dead_zone_acceleration` give ``accel_mps2`` (0 for 0)."""
    if accel_mps2 == 0.0 or dead_zone <= 0.0:
        return float(accel_mps2)
    magnitude = dead_zone * accel_max_mps2 + abs(accel_mps2) * (1.0 - dead_zone)
    return math.copysign(min(magnitude, accel_max_mps2), accel_mps2)
