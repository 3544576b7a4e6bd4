"""The MPPI racing cost: its weights, the O(1) track lookup table, and the torch reference.

Stage cost of step ``t`` (charged on the resulting state ``x_{t+1}`` and the applied control
``u_t``; ``u_{-1}`` is the command applied last period):

* progress: ``-progress_weight * ds`` with ``ds`` the wrapped change of arclength along the
  centerline (none once the sample has crashed);
* soft track bound: ``soft_bound_weight * e^2`` with ``e`` the distance beyond the half width
  minus ``soft_margin_m`` (left or right);
* hard track bound: a sample whose centre gets closer than ``hard_margin_m`` to an edge has
  crashed; from then on it pays ``crash_cost`` every step;
* speed limit ``speed_weight * max(0, v - speed_max)^2``, reversing ``reverse_weight * min(0, v)^2``;
* lateral acceleration ``lateral_accel_weight * max(0, |v * yaw_rate| - lateral_accel_max)^2``;
* control rate ``steer_rate_weight * (d steer_cmd / dt)^2 + accel_rate_weight * (d accel / dt)^2``;
* side slip ``slip_weight * slip^2``;
* offset from the centerline ``lateral_weight * lateral^2`` (the contouring error of MPCC; it
  rewards a controller for following the path it was given, which a more accurate model does better).

The track is queried through :class:`TrackTable`: a grid over the track's bounding box whose
cells hold the index of the nearest centerline segment. A query reads one cell and projects
on that segment and its two neighbours (the projection of :meth:`Track.project`: progress of
the foot point, lateral = signed distance to it; exact whenever the nearest segment is among
the three), so it costs the same for every point: O(1). Progress is not wrapped to [0, L)
(the cost only uses wrapped differences).
The Numba/CUDA kernels (:mod:`mbrl_control.kernels.racing`) mirror this module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.models.layout import S, U
from mbrl_control.track import Track

# fields of a padded segment row (see TrackTable.segments)
SEG_AX, SEG_AY, SEG_DX, SEG_DY, SEG_S0, SEG_LEN, SEG_WL, SEG_WL_SLOPE, SEG_WR, SEG_WR_SLOPE = range(10)
SEG_FIELDS = 10


@dataclass(frozen=True)
class RacingCostConfig:
    """Weights and limits of the racing cost (per prediction step; SI units)."""

    progress_weight: float = 20.0  # cost per metre of progress (negative)
    soft_margin_m: float = 0.35  # soft bound this far inside each edge
    soft_bound_weight: float = 300.0  # per m^2 beyond the soft bound
    hard_margin_m: float = 0.2  # centre closer than this to an edge: crashed
    crash_cost: float = 1000.0  # per step once crashed
    speed_max_mps: float = 12.0
    speed_weight: float = 20.0  # per (m/s)^2 above speed_max
    reverse_weight: float = 50.0  # per (m/s)^2 of negative speed
    lateral_accel_max_mps2: float = 10.0  # about friction_coeff * g of the F1TENTH car
    lateral_accel_weight: float = 2.0  # per (m/s^2)^2 above the limit
    steer_rate_weight: float = 0.0  # per (rad/s)^2 of commanded steering change
    accel_rate_weight: float = 0.0  # per (m/s^3)^2 of commanded acceleration change
    slip_weight: float = 0.0  # per rad^2 of side slip
    lateral_weight: float = 0.0  # per m^2 of offset from the centerline
    cell_m: float = 0.2  # lookup-table resolution

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise MbrlError(f"mppi.cost: '{name}' must be a finite non-negative number, got {value}")
        if self.cell_m <= 0.01:
            raise MbrlError(f"mppi.cost: 'cell_m' must exceed 0.01 m, got {self.cell_m}")
        if self.hard_margin_m > self.soft_margin_m:
            raise MbrlError("mppi.cost: 'hard_margin_m' must not exceed 'soft_margin_m'")

    def vector(self, dt_s: float) -> np.ndarray:
        """The weights as the float32 array the kernels read (order of :data:`COST_FIELDS`)."""
        inv_dt2 = 1.0 / (dt_s * dt_s)
        values = {
            "progress": self.progress_weight, "soft_margin": self.soft_margin_m, "soft_bound": self.soft_bound_weight,
            "hard_margin": self.hard_margin_m, "crash": self.crash_cost, "speed_max": self.speed_max_mps,
            "speed": self.speed_weight, "reverse": self.reverse_weight, "alat_max": self.lateral_accel_max_mps2,
            "alat": self.lateral_accel_weight, "steer_rate": self.steer_rate_weight * inv_dt2,
            "accel_rate": self.accel_rate_weight * inv_dt2, "slip": self.slip_weight,
            "lateral": self.lateral_weight,
        }
        return np.array([values[name] for name in COST_FIELDS], dtype=np.float32)


COST_FIELDS = ("progress", "soft_margin", "soft_bound", "hard_margin", "crash", "speed_max", "speed", "reverse",
               "alat_max", "alat", "steer_rate", "accel_rate", "slip", "lateral")
(C_PROGRESS, C_SOFT_MARGIN, C_SOFT, C_HARD_MARGIN, C_CRASH, C_VMAX, C_SPEED, C_REVERSE, C_ALAT_MAX, C_ALAT,
 C_STEER_RATE, C_ACCEL_RATE, C_SLIP, C_LATERAL) = range(len(COST_FIELDS))


class TrackTable:
    """Precomputed O(1) track queries: nearest-segment grid plus per-segment geometry (float32).

    ``segments`` has one row per centerline segment, padded with the last segment before the
    first and the first after the last, so that the candidates of a cell holding segment ``i``
    are rows ``i, i+1, i+2`` without any modulo.
    """

    def __init__(self, track: Track, cell_m: float = 0.2, margin_m: float = 3.0) -> None:
        path = track.centerline
        n = len(path)
        lo = path.xy_m.min(axis=0) - margin_m - max(track.width_left_m.max(), track.width_right_m.max())
        hi = path.xy_m.max(axis=0) + margin_m + max(track.width_left_m.max(), track.width_right_m.max())
        self.cell_m = float(cell_m)
        self.nx = int(math.ceil((hi[0] - lo[0]) / cell_m))
        self.ny = int(math.ceil((hi[1] - lo[1]) / cell_m))
        self.origin_xy = lo.astype(np.float64)
        self.length_m = float(path.length_m)
        centres_x = lo[0] + (np.arange(self.nx) + 0.5) * cell_m
        centres_y = lo[1] + (np.arange(self.ny) + 0.5) * cell_m
        grid = np.stack(np.meshgrid(centres_x, centres_y, indexing="xy"), axis=-1)  # (ny, nx, 2)
        self.cells = _nearest_segments(path, grid.reshape(-1, 2), spacing_m=0.5 * cell_m).reshape(self.ny, self.nx)
        seg = np.zeros((n, SEG_FIELDS))
        seg[:, SEG_AX], seg[:, SEG_AY] = path.xy_m[:, 0], path.xy_m[:, 1]
        seg[:, SEG_DX], seg[:, SEG_DY] = path.segment_dir[:, 0], path.segment_dir[:, 1]
        seg[:, SEG_S0], seg[:, SEG_LEN] = path.s_m, path.segment_length_m
        wl, wr = track.width_left_m, track.width_right_m
        seg[:, SEG_WL], seg[:, SEG_WR] = wl, wr
        seg[:, SEG_WL_SLOPE] = (np.roll(wl, -1) - wl) / path.segment_length_m
        seg[:, SEG_WR_SLOPE] = (np.roll(wr, -1) - wr) / path.segment_length_m
        self.segments = np.concatenate([seg[-1:], seg, seg[:1]]).astype(np.float32)
        # geometry scalars for the kernels: origin x, origin y, 1/cell, nx, ny, length
        self.scalars = np.array([lo[0], lo[1], 1.0 / cell_m, self.nx, self.ny, self.length_m], dtype=np.float32)

    def lookup(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(progress, lateral, width_left, width_right) for points (..., 2), in float64 NumPy."""
        t = self.lookup_torch(torch.as_tensor(np.asarray(xy, dtype=np.float64)))
        return tuple(v.numpy() for v in t)  # type: ignore[return-value]

    def torch_tensors(self, device, dtype) -> dict[str, torch.Tensor]:
        return {"cells": torch.as_tensor(self.cells, device=device).long(),
                "segments": torch.as_tensor(self.segments, device=device).to(dtype)}

    def lookup_torch(self, xy: torch.Tensor, tensors: dict | None = None):
        """Torch version of the kernel lookup: (progress, lateral, width_left, width_right), shape of xy[..., 0]."""
        tensors = tensors or self.torch_tensors(xy.device, xy.dtype)
        dtype = xy.dtype
        ox, oy, inv_cell = (torch.tensor(float(v), dtype=torch.float32).to(dtype) for v in self.scalars[:3])
        x, y = xy[..., 0], xy[..., 1]
        ix = torch.clamp(torch.floor((x - ox) * inv_cell), 0, self.nx - 1).long()
        iy = torch.clamp(torch.floor((y - oy) * inv_cell), 0, self.ny - 1).long()
        first = tensors["cells"][iy, ix]
        seg = tensors["segments"]
        best = None
        for offset in range(3):
            row = seg[first + offset]
            rx, ry = x - row[..., SEG_AX], y - row[..., SEG_AY]
            dx, dy = row[..., SEG_DX], row[..., SEG_DY]
            along = torch.minimum(torch.clamp(rx * dx + ry * dy, min=0.0), row[..., SEG_LEN])
            fx, fy = rx - along * dx, ry - along * dy
            dist2 = fx * fx + fy * fy
            cand = (dist2, row[..., SEG_S0] + along, dx * ry - dy * rx,
                    row[..., SEG_WL] + row[..., SEG_WL_SLOPE] * along, row[..., SEG_WR] + row[..., SEG_WR_SLOPE] * along)
            if best is None:
                best = cand
            else:
                better = cand[0] < best[0]
                best = tuple(torch.where(better, c, b) for c, b in zip(cand, best))
        lateral = torch.where(best[2] >= 0, 1.0, -1.0).to(dtype) * torch.sqrt(best[0])  # signed distance to the foot
        return best[1], lateral, best[3], best[4]


def _nearest_segments(path, points: np.ndarray, spacing_m: float) -> np.ndarray:
    """Index (int32) of the segment of the centerline sample nearest to each point.

    The centerline is resampled every ``spacing_m`` (each sample labelled with its segment) and
    searched with a KD-tree: fast for the hundreds of thousands of cells of a race track. Where
    this picks a neighbour of the truly nearest segment, the three-candidate projection of the
    lookup still finds the right one.
    """
    from scipy.spatial import cKDTree

    counts = np.maximum(1, np.ceil(path.segment_length_m / spacing_m).astype(int))
    segment_of = np.repeat(np.arange(len(path)), counts)
    fraction = np.concatenate([np.arange(c) / c for c in counts])
    samples = path.xy_m[segment_of] + fraction[:, None] * (path.segment_length_m[segment_of, None] * path.segment_dir[segment_of])
    _, nearest = cKDTree(samples).query(points, k=1)
    return segment_of[nearest].astype(np.int32)


class RacingCostTorch:
    """Reference implementation of the racing cost on whole trajectories (torch, any device/dtype)."""

    def __init__(self, table: TrackTable, config: RacingCostConfig, dt_s: float) -> None:
        self.table = table
        self.config = config
        self.weights = config.vector(dt_s)
        self._tensors: dict | None = None

    def _table_tensors(self, like: torch.Tensor) -> dict:
        t = self._tensors
        if t is None or t["segments"].device != like.device or t["segments"].dtype != like.dtype:
            t = self._tensors = self.table.torch_tensors(like.device, like.dtype)
        return t

    def progress(self, xy: torch.Tensor) -> torch.Tensor:
        return self.table.lookup_torch(xy, self._table_tensors(xy))[0]

    def __call__(self, state0: torch.Tensor, states: torch.Tensor, controls: torch.Tensor,
                 u_prev: torch.Tensor) -> torch.Tensor:
        """Total cost (K,) of trajectories: ``states`` (K, T, 7) = x_1..x_T, ``controls`` (K, T, 2)."""
        w = [torch.tensor(float(v), dtype=torch.float32).to(states.dtype) for v in self.weights]
        tensors = self._table_tensors(states)
        progress, lateral, wl, wr = self.table.lookup_torch(states[..., [S.X, S.Y]], tensors)
        s0 = self.table.lookup_torch(state0[[S.X, S.Y]].unsqueeze(0), tensors)[0]
        prev = torch.cat([s0.expand(progress.shape[0], 1), progress[:, :-1]], dim=1)
        ds = progress - prev
        half = 0.5 * self.table.length_m
        ds = ds - self.table.length_m * (ds > half).to(ds.dtype) + self.table.length_m * (ds < -half).to(ds.dtype)
        out_left = lateral - (wl - w[C_HARD_MARGIN])
        out_right = -lateral - (wr - w[C_HARD_MARGIN])
        outside = (out_left > 0) | (out_right > 0)
        crashed = torch.cummax(outside.to(torch.int32), dim=1).values.to(states.dtype)
        soft = torch.clamp(lateral - (wl - w[C_SOFT_MARGIN]), min=0.0) + torch.clamp(-lateral - (wr - w[C_SOFT_MARGIN]), min=0.0)
        v = states[..., S.V]
        over = torch.clamp(v - w[C_VMAX], min=0.0)
        rev = torch.clamp(v, max=0.0)
        alat = torch.clamp(torch.abs(v * states[..., S.YAW_RATE]) - w[C_ALAT_MAX], min=0.0)
        u_before = torch.cat([u_prev.to(controls.dtype).expand(controls.shape[0], 1, 2), controls[:, :-1]], dim=1)
        du = controls - u_before
        slip = states[..., S.SLIP]
        stage = (-w[C_PROGRESS] * ds * (1.0 - crashed) + w[C_SOFT] * soft * soft + w[C_CRASH] * crashed
                 + w[C_SPEED] * over * over + w[C_REVERSE] * rev * rev + w[C_ALAT] * alat * alat
                 + w[C_STEER_RATE] * du[..., U.STEER_CMD] ** 2 + w[C_ACCEL_RATE] * du[..., U.ACCEL] ** 2
                 + w[C_SLIP] * slip * slip + w[C_LATERAL] * lateral * lateral)
        return stage.sum(dim=1)
