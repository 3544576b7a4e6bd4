"""The race-track context: O(1) queries of progress, lateral offset and half widths at a point.

A context supplies the features cost terms read (``ctx.progress``, ``ctx.lateral``, ...). The
track is queried through :class:`TrackTable`: a grid over the track's bounding box whose cells
hold the index of the nearest centerline segment. A query reads one cell and projects on that
segment and its two neighbours (the projection of :meth:`Track.project`: progress of the foot
point, lateral = signed distance to it; exact whenever the nearest segment is among the three),
so it costs the same for every point: O(1). Progress is not wrapped to [0, L) (costs only use
wrapped differences). The Numba/CUDA lookup (:mod:`mbrl_control.kernels.racing`) reads the same
tables; :meth:`TrackTable.lookup_torch` is its torch twin.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_control.track import Track

TRACK_FEATURES = ("progress", "lateral", "width_left", "width_right", "track_length")
"""Context features of a race track at a point (metres); ``track_length`` is the lap length."""

# fields of a padded segment row (see TrackTable.segments)
SEG_AX, SEG_AY, SEG_DX, SEG_DY, SEG_S0, SEG_LEN, SEG_WL, SEG_WL_SLOPE, SEG_WR, SEG_WR_SLOPE = range(10)
SEG_FIELDS = 10


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
