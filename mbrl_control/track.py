"""Race tracks: centerline / raceline loading, arclength parametrisation, batched projection.

File formats are those of ``f1tenth_racetracks`` (see ``../shared/tracks/README.md``):
``<Name>_centerline.csv`` (``x_m, y_m, w_tr_right_m, w_tr_left_m``, comma separated, an open
list of points of a closed loop) and ``<Name>_raceline.csv`` (``s_m; x_m; y_m; psi_rad;
kappa_radpm; vx_mps; ax_mps2``, semicolon separated, first point repeated at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from mbrl_control import MbrlError, share_dir

DEFAULT_TRACK = "default"


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class Projection:
    """Nearest point on a closed polyline, for a batch of query points (all arrays share the batch shape)."""

    progress_m: np.ndarray  # arclength of the nearest point, in [0, length)
    lateral_m: np.ndarray  # signed distance, positive to the left of the direction of travel
    heading_rad: np.ndarray  # direction of travel at the nearest point
    segment: np.ndarray  # index of the segment [i, i+1] holding the nearest point


class ClosedPath:
    """A closed polyline with arclength parametrisation and batched nearest-point projection."""

    def __init__(self, xy_m: np.ndarray) -> None:
        xy = np.asarray(xy_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 4:
            raise ValueError("a closed path needs at least 4 points of (x, y)")
        if np.hypot(*(xy[0] - xy[-1])) < 1e-9:
            xy = xy[:-1]  # drop a repeated closing point
        self.xy_m = xy
        seg = np.roll(xy, -1, axis=0) - xy
        self.segment_length_m = np.hypot(seg[:, 0], seg[:, 1])
        if np.any(self.segment_length_m <= 0):
            raise ValueError("a closed path has repeated consecutive points")
        self.segment_dir = seg / self.segment_length_m[:, None]
        self.s_m = np.concatenate(([0.0], np.cumsum(self.segment_length_m)[:-1]))
        self.length_m = float(self.segment_length_m.sum())
        self.segment_heading_rad = np.arctan2(self.segment_dir[:, 1], self.segment_dir[:, 0])
        turn = wrap_angle(self.segment_heading_rad - np.roll(self.segment_heading_rad, 1))
        ds = 0.5 * (self.segment_length_m + np.roll(self.segment_length_m, 1))
        self.curvature_1pm = turn / ds  # at the vertices, positive turning left
        self._tree = cKDTree(xy)

    def __len__(self) -> int:
        return len(self.xy_m)

    def project(self, points_xy: np.ndarray, candidates: int = 6) -> Projection:
        """Project points (..., 2) on the path: the best of the segments around the nearest vertices."""
        pts = np.asarray(points_xy, dtype=np.float64)
        batch = pts.shape[:-1]
        flat = pts.reshape(-1, 2)
        k = min(candidates, len(self))
        _, idx = self._tree.query(flat, k=k)
        idx = idx.reshape(len(flat), k)
        n = len(self)
        segs = np.concatenate([idx, (idx - 1) % n], axis=1)  # segments starting at or ending at each vertex
        start = self.xy_m[segs]
        direction = self.segment_dir[segs]
        rel = flat[:, None, :] - start
        along = np.clip(np.einsum("bkd,bkd->bk", rel, direction), 0.0, self.segment_length_m[segs])
        foot = start + along[..., None] * direction
        dist2 = np.sum((flat[:, None, :] - foot) ** 2, axis=-1)
        best = np.argmin(dist2, axis=1)
        rows = np.arange(len(flat))
        seg_best = segs[rows, best]
        along_best = along[rows, best]
        d = direction[rows, best]
        r = rel[rows, best]
        cross = d[:, 0] * r[:, 1] - d[:, 1] * r[:, 0]
        lateral = np.where(cross >= 0, 1.0, -1.0) * np.sqrt(dist2[rows, best])  # signed distance to the foot point
        progress = (self.s_m[seg_best] + along_best) % self.length_m
        return Projection(
            progress_m=progress.reshape(batch),
            lateral_m=lateral.reshape(batch),
            heading_rad=self.segment_heading_rad[seg_best].reshape(batch),
            segment=seg_best.reshape(batch),
        )

    def interpolate(self, s_m: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Periodic linear interpolation of per-vertex ``values`` at arclength ``s_m``."""
        s_closed = np.append(self.s_m, self.length_m)
        v_closed = np.concatenate([values, values[:1]], axis=0)
        return np.interp(np.mod(s_m, self.length_m), s_closed, v_closed)

    def point_at(self, s_m: np.ndarray) -> np.ndarray:
        """Points (..., 2) on the path at arclength ``s_m``."""
        s = np.asarray(s_m, dtype=np.float64)
        return np.stack([self.interpolate(s, self.xy_m[:, 0]), self.interpolate(s, self.xy_m[:, 1])], axis=-1)


@dataclass(frozen=True)
class Raceline:
    """An optimised racing line with its speed profile."""

    path: ClosedPath
    speed_mps: np.ndarray  # per vertex of ``path``
    accel_mps2: np.ndarray

    @property
    def reference_lap_time_s(self) -> float:
        """sum(ds / vx) around the loop."""
        return float(np.sum(self.path.segment_length_m / self.speed_mps))


class Track:
    """A closed race track: centerline with left/right widths, optional raceline."""

    def __init__(self, name: str, centerline_xy_m: np.ndarray, width_right_m: np.ndarray,
                 width_left_m: np.ndarray, raceline: Raceline | None = None, source: str = "") -> None:
        self.name = name
        self.source = source
        self.centerline = ClosedPath(centerline_xy_m)
        n = len(self.centerline)
        self.width_right_m = np.asarray(width_right_m, dtype=np.float64)[:n]
        self.width_left_m = np.asarray(width_left_m, dtype=np.float64)[:n]
        self.raceline = raceline

    @property
    def length_m(self) -> float:
        return self.centerline.length_m

    @property
    def reference_lap_time_s(self) -> float | None:
        return None if self.raceline is None else self.raceline.reference_lap_time_s

    def project(self, points_xy: np.ndarray) -> Projection:
        return self.centerline.project(points_xy)

    def widths_at(self, progress_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(right, left) half widths at arclength ``progress_m``."""
        return (self.centerline.interpolate(progress_m, self.width_right_m),
                self.centerline.interpolate(progress_m, self.width_left_m))

    def inside(self, points_xy: np.ndarray) -> np.ndarray:
        """True where a point lies within the track bounds."""
        proj = self.project(points_xy)
        right, left = self.widths_at(proj.progress_m)
        return (proj.lateral_m <= left) & (proj.lateral_m >= -right)

    def heading_error(self, points_xy: np.ndarray, yaw_rad: np.ndarray) -> np.ndarray:
        """Vehicle heading minus the centerline's direction at the projection, wrapped."""
        return wrap_angle(np.asarray(yaw_rad) - self.project(points_xy).heading_rad)

    def bounds_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """(right, left) bound polylines, for plots and MJCF geometry."""
        c = self.centerline
        normal = np.stack([-c.segment_dir[:, 1], c.segment_dir[:, 0]], axis=1)
        normal = normal + np.roll(normal, 1, axis=0)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return c.xy_m - normal * self.width_right_m[:, None], c.xy_m + normal * self.width_left_m[:, None]

    def start_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) at progress 0, facing the direction of travel."""
        c = self.centerline
        return float(c.xy_m[0, 0]), float(c.xy_m[0, 1]), float(c.segment_heading_rad[0])


def narrowed(track: Track, half_width_m: float) -> Track:
    """``track`` with every right and left half width set to ``half_width_m`` (centerline, name and
    raceline unchanged): any track run narrow, e.g. the shared tracks at 0.8 m to test racing near
    the bounds. The raceline is kept only where it stays inside the new bounds, else dropped (its
    reference lap time would be that of a wider track). The name gets a ``@<w>m`` suffix so runs on
    the narrowed track are not mistaken for full-width ones."""
    try:
        w = float(half_width_m)
    except (TypeError, ValueError):
        raise MbrlError(f"track half width must be a number, got {half_width_m!r}") from None
    if not (math.isfinite(w) and 0.0 < w <= MAX_WIDTH_M):
        raise MbrlError(f"track half width must be in (0, {MAX_WIDTH_M:g}] m, got {half_width_m!r}")
    c = track.centerline
    width = np.full(len(c), w)
    raceline = track.raceline
    if raceline is not None and np.max(np.abs(c.project(raceline.path.xy_m).lateral_m)) > w:
        raceline = None
    return Track(f"{track.name}@{w:g}m", c.xy_m, width, width, raceline, source=track.source)


MAX_COORDINATE_M = 1e5
"""Largest |x|, |y| of a track point (a bigger one is a unit or parsing error)."""
MAX_WIDTH_M = 100.0
MAX_CUSP_TURN_RAD = np.deg2rad(120.0)
"""Largest change of direction at one vertex; more is a spike or a reversal, not a corner."""


def self_intersection(xy_m: np.ndarray) -> tuple[int, int] | None:
    """The first pair (i, j) of non-adjacent segments of the closed polyline that cross or touch, else None.

    Candidate pairs come from a k-d tree on the segment midpoints (two segments can only meet when
    their midpoints are within the sum of their half lengths), so long tracks stay fast.
    """
    xy = np.asarray(xy_m, dtype=np.float64)
    n = len(xy)
    a, b = xy, np.roll(xy, -1, axis=0)
    length = np.hypot(*(b - a).T)
    pairs = cKDTree(0.5 * (a + b)).query_pairs(r=float(length.max()) * (1 + 1e-9) + 1e-12, output_type="ndarray")
    if len(pairs) == 0:
        return None
    i, j = pairs[:, 0], pairs[:, 1]
    adjacent = ((j - i) % n == 1) | ((i - j) % n == 1)
    i, j = i[~adjacent], j[~adjacent]
    if len(i) == 0:
        return None

    def orient(p, q, r):
        return (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])

    p1, p2, q1, q2 = a[i], b[i], a[j], b[j]
    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    hit = (d1 * d2 <= 0) & (d3 * d4 <= 0)
    # collinear, disjoint segments satisfy the sign test too: require overlapping bounding boxes
    overlap = ((np.minimum(p1, p2) <= np.maximum(q1, q2)) & (np.minimum(q1, q2) <= np.maximum(p1, p2))).all(axis=1)
    hit &= overlap
    if not hit.any():
        return None
    k = int(np.argmax(hit))
    return (int(min(i[k], j[k])), int(max(i[k], j[k])))


def check_closed_path(xy_m: np.ndarray, source: str) -> None:
    """A drivable loop: no self-intersection (bow-tie, figure 8) and no cusp (spike, reversal)."""
    xy = np.asarray(xy_m, dtype=np.float64)
    if np.hypot(*(xy[0] - xy[-1])) < 1e-9:
        xy = xy[:-1]
    seg = np.roll(xy, -1, axis=0) - xy
    if np.any(np.hypot(seg[:, 0], seg[:, 1]) <= 0):
        raise MbrlError(f"{source}: a closed path has repeated consecutive points")
    heading = np.arctan2(seg[:, 1], seg[:, 0])
    turn = np.abs(wrap_angle(heading - np.roll(heading, 1)))
    if turn.max() > MAX_CUSP_TURN_RAD:
        k = int(np.argmax(turn))
        raise MbrlError(f"{source}: the path turns by {np.rad2deg(turn[k]):.0f} deg at point {k + 1} "
                        f"({xy[k, 0]:g}, {xy[k, 1]:g}): a spike or reversal, not a corner")
    crossing = self_intersection(xy)
    if crossing is not None:
        i, j = crossing
        raise MbrlError(f"{source}: the path intersects itself (segment after point {i + 1} crosses the one after "
                        f"point {j + 1}, near ({xy[j, 0]:g}, {xy[j, 1]:g})); a track must be a simple closed loop")


def check_turning_radius(track: "Track", wheelbase_m: float, steer_max_rad: float, window_m: float = 1.0) -> None:
    """The car must be able to take the tightest bend: its minimum turning radius ``L / tan(steer_max)``
    must not exceed the bend's radius (curvature averaged over ``window_m``) plus the half width on
    the outside of the bend (the widest line the car may drive)."""
    car_radius = wheelbase_m / np.tan(min(abs(steer_max_rad), 1.5))
    c = track.centerline
    heading = np.unwrap(c.segment_heading_rad)
    total_turn = heading[-1] - heading[0] + wrap_angle(heading[0] - heading[-1])
    s_mid = c.s_m + 0.5 * c.segment_length_m
    s_ext = np.concatenate([s_mid - c.length_m, s_mid, s_mid + c.length_m])
    h_ext = np.concatenate([heading - total_turn, heading, heading + total_turn])
    turn = np.interp(c.s_m + 0.5 * window_m, s_ext, h_ext) - np.interp(c.s_m - 0.5 * window_m, s_ext, h_ext)
    curvature = turn / window_m  # signed, positive turning left
    with np.errstate(divide="ignore"):
        radius = np.where(np.abs(curvature) > 0, 1.0 / np.abs(curvature), np.inf)
    outside = np.where(curvature > 0, track.width_right_m, track.width_left_m)  # a left bend's outside is on the right
    reach = radius + outside
    k = int(np.argmin(reach))
    if reach[k] < car_radius:
        x, y = c.xy_m[k]
        raise MbrlError(f"{track.source or track.name}: the bend at ({x:g}, {y:g}) has a radius of {radius[k]:.2f} m "
                        f"(+{outside[k]:.2f} m of width), tighter than the car's minimum turning radius "
                        f"{car_radius:.2f} m (wheelbase / tan(steer_max))")


def _read_table(path: Path, delimiter: str, columns: int) -> np.ndarray:
    from mbrl_control.config import read_text_file

    rows = []
    for lineno, line in enumerate(read_text_file(path, "track file").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) != columns:
            raise MbrlError(f"{path}:{lineno}: expected {columns} '{delimiter}'-separated values, got {len(parts)}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise MbrlError(f"{path}:{lineno}: not a number in {line!r}") from None
        if not all(np.isfinite(values)):
            raise MbrlError(f"{path}:{lineno}: non-finite value in {line!r}")
        if max(abs(values[0]), abs(values[1])) > MAX_COORDINATE_M and delimiter == ",":
            raise MbrlError(f"{path}:{lineno}: coordinate beyond {MAX_COORDINATE_M:g} m in {line!r}")
        rows.append(values)
    if len(rows) < 4:
        raise MbrlError(f"{path}: a track needs at least 4 points, found {len(rows)}")
    return np.asarray(rows)


def load_raceline(path: str | Path) -> Raceline:
    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"raceline file not found: {path}")
    table = _read_table(path, ";", 7)
    if np.hypot(*(table[0, 1:3] - table[-1, 1:3])) < 1e-9:
        table = table[:-1]
    if np.any(np.abs(table[:, 1:3]) > MAX_COORDINATE_M):
        raise MbrlError(f"{path}: raceline coordinate beyond {MAX_COORDINATE_M:g} m")
    if np.any(table[:, 5] <= 0):
        raise MbrlError(f"{path}: raceline speeds must be positive")
    check_closed_path(table[:, 1:3], str(path))
    try:
        path_obj = ClosedPath(table[:, 1:3])
    except ValueError as exc:
        raise MbrlError(f"{path}: {exc}") from None
    return Raceline(path=path_obj, speed_mps=table[:, 5], accel_mps2=table[:, 6])


def load_track(path: str | Path, name: str | None = None) -> Track:
    """Load a centerline CSV; a sibling ``<Name>_raceline.csv`` is loaded too when present."""
    path = Path(path)
    if not path.is_file():
        raise MbrlError(f"track file not found: {path}")
    table = _read_table(path, ",", 4)
    if np.any(table[:, 2:] <= 0):
        raise MbrlError(f"{path}: track widths must be positive")
    if np.any(table[:, 2:] > MAX_WIDTH_M):
        raise MbrlError(f"{path}: track half-widths must be at most {MAX_WIDTH_M:g} m")
    check_closed_path(table[:, :2], str(path))
    stem = path.stem
    base = stem[: -len("_centerline")] if stem.endswith("_centerline") else stem
    raceline_file = path.with_name(f"{base}_raceline.csv")
    raceline = load_raceline(raceline_file) if raceline_file.is_file() else None
    try:
        return Track(name or base, table[:, :2], table[:, 2], table[:, 3], raceline, source=str(path))
    except ValueError as exc:
        raise MbrlError(f"{path}: {exc}") from None


def track_search_dirs() -> list[Path]:
    """Where track NAMEs resolve: the project's own ``sim/`` then ``../shared/tracks``."""
    root = share_dir()
    checkout = Path(__file__).resolve().parent.parent  # ../shared beside a source checkout, also when
    return [root / "sim", root.parent / "shared" / "tracks",  # share_dir() is an installed share folder
            checkout.parent / "shared" / "tracks", Path.cwd() / "../shared/tracks"]


def resolve_track(spec: str) -> Track:
    """A track from a CSV path or a NAME (``default``, ``Austin``, ``Spielberg``, ...)."""
    as_path = Path(spec)
    if as_path.suffix == ".csv" or as_path.is_file():
        return load_track(as_path)
    for folder in track_search_dirs():
        for candidate in (folder / f"{spec}_centerline.csv", folder / f"{spec}.csv"):
            if candidate.is_file():
                return load_track(candidate, name=spec)
    names = sorted({p.name.replace("_centerline.csv", "") for d in track_search_dirs() if d.is_dir()
                    for p in d.glob("*_centerline.csv")})
    raise MbrlError(f"unknown track '{spec}' (known: {', '.join(names) or 'none'}; or give a CSV path)")
