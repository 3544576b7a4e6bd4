"""Pure pursuit, the F1TENTH teams' baseline: steer towards a look-ahead point on a path.

Follows the centerline; the speed reference is the raceline's speed profile (mapped onto the
centerline, scaled by ``speed_scale``) when the track has one, otherwise a set speed; both are
capped by a lateral-acceleration limit on the centerline's curvature. Speed is held by a
proportional acceleration command.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.control.base import Controller
from mbrl_control.models.layout import CONTROL_DIM, S, U
from mbrl_control.track import ClosedPath, Track


@dataclass(frozen=True)
class PurePursuitConfig:
    lookahead_base_m: float = 0.6  # look-ahead distance at standstill
    lookahead_gain_s: float = 0.25  # plus this many seconds of travel
    set_speed_mps: float = 5.0  # on a centerline without a raceline
    speed_scale: float = 0.85  # fraction of the raceline speed profile to follow
    lateral_accel_max_mps2: float = 6.0  # curvature speed limit on a centerline
    speed_gain_per_s: float = 3.0  # accel = gain * (v_ref - v)

    def validate(self) -> None:
        """One clear :class:`MbrlError` for the first bad setting (a negative speed would drive backwards)."""
        from mbrl_control.config import check_number

        for name, low, high in (("lookahead_base_m", 0.01, 100.0), ("lookahead_gain_s", 0.0, 10.0),
                                ("set_speed_mps", 0.01, 200.0), ("speed_scale", 0.01, 2.0),
                                ("lateral_accel_max_mps2", 0.01, 100.0), ("speed_gain_per_s", 0.01, 100.0)):
            check_number(f"pure_pursuit: '{name}'", getattr(self, name), low, high)


class PurePursuit(Controller):
    name = "pure_pursuit"

    def __init__(self, params: VehicleParams, control_dt_s: float, track: Track, config: PurePursuitConfig | None = None) -> None:
        super().__init__(params, control_dt_s)
        self.config = config or PurePursuitConfig()
        self.config.validate()
        cfg = self.config
        self.path: ClosedPath = track.centerline
        curvature = np.abs(self._smoothed_curvature(self.path))
        limit = np.sqrt(cfg.lateral_accel_max_mps2 / np.maximum(curvature, 1e-6))
        if track.raceline is not None:
            wanted = cfg.speed_scale * self._raceline_speed_on_centerline(track)
        else:
            wanted = np.full(len(self.path), cfg.set_speed_mps)
        self.speed_profile_mps = np.minimum(wanted, limit)
        self._last_plan: np.ndarray | None = None

    @staticmethod
    def _raceline_speed_on_centerline(track: Track) -> np.ndarray:
        """The raceline's speed at the centerline vertices (raceline points projected on the centerline)."""
        progress = track.centerline.project(track.raceline.path.xy_m).progress_m
        order = np.argsort(progress)
        s, v = progress[order], track.raceline.speed_mps[order]
        period = track.centerline.length_m
        return np.interp(track.centerline.s_m, np.concatenate([s - period, s, s + period]), np.tile(v, 3))

    @staticmethod
    def _smoothed_curvature(path: ClosedPath, window: int = 7) -> np.ndarray:
        kernel = np.ones(window) / window
        k = path.curvature_1pm
        padded = np.concatenate([k[-window:], k, k[:window]])
        return np.convolve(padded, kernel, mode="same")[window:-window]

    def step(self, state: np.ndarray) -> np.ndarray:
        cfg = self.config
        x, y, yaw, v = state[S.X], state[S.Y], state[S.YAW], state[S.V]
        proj = self.path.project(np.array([x, y]))
        lookahead = cfg.lookahead_base_m + cfg.lookahead_gain_s * max(v, 0.0)
        target = self.path.point_at(proj.progress_m + lookahead)
        dx, dy = target[0] - x, target[1] - y
        local_y = -np.sin(yaw) * dx + np.cos(yaw) * dy
        dist2 = max(dx * dx + dy * dy, 1e-6)
        steer = np.arctan(2.0 * self.params.wheelbase_m * local_y / dist2)
        v_ref = float(self.path.interpolate(proj.progress_m + 0.5 * lookahead, self.speed_profile_mps))
        u = np.zeros(CONTROL_DIM)
        u[U.STEER_CMD] = steer
        u[U.ACCEL] = cfg.speed_gain_per_s * (v_ref - v)
        self._last_plan = np.stack([[x, y], target])
        return u

    def planned_xy(self) -> np.ndarray | None:
        return self._last_plan


def make_pure_pursuit(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> PurePursuit:
    """Factory for :mod:`mbrl_control.control.factory` (the model is not used)."""
    from mbrl_control.config import dataclass_from_dict

    return PurePursuit(params, control_dt_s, track, dataclass_from_dict(PurePursuitConfig, options, "pure_pursuit"))
