"""Telemetry from CSV files described by a column-map YAML (``config/telemetry/*.yaml``).

A real car's recording is rarely a rosbag2 of our layout: DART's is a CSV with motion-capture
pose and raw throttle / steering commands. The column map names, for one CSV layout, the time
column, the pose columns (with units), the raw command channels (name, column, unit, range), an
optional enable (dead-man) column that zeroes the commands it gates, an optional column marking
rows that carry commands, the segmentation rules and the velocity filter. See
``config/telemetry/dart.yaml`` and ``docs/real_data.md``.

:func:`read_csv_telemetry` returns a :class:`Telemetry`: gap-free segments on a uniform grid with
the state ``[x, y, yaw, vx, vy, w]`` of the recorded reference point (or of a point moved from it
by ``reference_offset_m``), the commands held over each step, and the segment ids. The conventions
are those of ``../shared/realdata/metric.py``: pose linearly interpolated onto the grid, yaw
unwrapped within a segment, velocities by Savitzky-Golay differentiation (span ``span_s``, cubic
when the window has at least 9 samples) rotated into the body frame; a segment ends at a gap over
``max_gap_samples`` samples and at a pose step implying more than ``max_speed_mps`` or
``max_yaw_rate_radps`` (motion-capture glitches); runs shorter than ``min_run_samples`` between
such breaks are dropped and their neighbours re-joined when the join is clean.

Every problem with the map or the CSV is an :class:`~mbrl_control.MbrlError` (one line).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import load_yaml

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
LENGTH_UNITS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3}
ANGLE_UNITS = {"rad": 1.0, "deg": math.pi / 180.0}
COMMAND_UNITS = {"1", "%", "rad", "deg", "m/s", "m/s^2", "N", "kPa", "rpm", "us"}
"""Units a raw command channel may declare (kept as recorded: the model's actuator maps them)."""

MIN_SPEED_MPS = 0.3
"""Speed from which the car counts as driving (metric.py's window threshold)."""


@dataclass(frozen=True)
class CommandChannel:
    name: str
    column: str
    unit: str
    low: float
    high: float
    enabled_by: str | None = None


@dataclass(frozen=True)
class ColumnMap:
    """A validated column map (see the module docstring)."""

    path: str
    name: str
    time_column: str
    time_scale: float
    pose_columns: tuple[str, str, str]
    pose_scales: tuple[float, float, float]
    commands: tuple[CommandChannel, ...]
    enable_column: str | None = None
    enable_threshold: float = 0.5
    valid_column: str | None = None
    reference_point: str = "recorded"
    max_gap_samples: float = 2.5
    max_speed_mps: float = 10.0
    max_yaw_rate_radps: float = 30.0
    min_run_samples: int = 5
    span_s: float = 0.2

    @property
    def command_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.commands)

    def columns(self) -> list[str]:
        cols = [self.time_column, *self.pose_columns, *(c.column for c in self.commands)]
        cols += [c for c in (self.enable_column, self.valid_column) if c is not None]
        return cols


@dataclass
class Telemetry:
    """A recording on a uniform grid, split into gap-free segments (arrays share the first axis)."""

    name: str
    dt: float
    t: np.ndarray            # (M,) s, file clock
    state: np.ndarray        # (M, 6) [x, y, yaw, vx, vy, w] of the reference point
    cmd: np.ndarray          # (M, m) raw commands, held over [t_k, t_k + dt)
    seg: np.ndarray          # (M,) segment id, increasing
    command_names: tuple[str, ...]
    reference_point: str
    raw_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict:
        return {"name": self.name, "format": "csv", "ref_point": self.reference_point, "dt": self.dt,
                "cmd_names": list(self.command_names)}

    def segment_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        start = np.r_[0, np.flatnonzero(np.diff(self.seg)) + 1].astype(int)
        return start, np.r_[start[1:], len(self.seg)].astype(int)

    def windows(self, horizon_s: float = 1.0, stride_s: float = 0.1, min_speed: float = MIN_SPEED_MPS):
        """(start indices, H): a start every ``stride_s`` of each segment whose speed is at least
        ``min_speed`` and whose next ``horizon_s`` lies in the same segment."""
        H = int(round(horizon_s / self.dt))
        stride = max(1, int(round(stride_s / self.dt)))
        speed = np.hypot(self.state[:, 3], self.state[:, 4])
        out = [np.zeros(0, int)]
        for s, e in zip(*self.segment_bounds()):
            k = np.arange(s, e - H, stride)
            out.append(k[speed[k] >= min_speed])
        return np.concatenate(out).astype(int), H

    def past_commands(self, starts: np.ndarray, P: int) -> np.ndarray:
        """(N, P, m) commands before each start, the segment's first row repeated before it."""
        first = self.segment_bounds()[0]
        seg_first = first[np.searchsorted(first, starts, side="right") - 1]
        idx = np.maximum(starts[:, None] + np.arange(-P, 0)[None, :], seg_first[:, None])
        return self.cmd[idx]

    def first_seconds_of_driving(self, seconds: float, lead_s: float = 1.0) -> "Telemetry":
        """The part from ``lead_s`` before the first sample at driving speed to ``seconds`` after it."""
        speed = np.hypot(self.state[:, 3], self.state[:, 4])
        moving = np.flatnonzero(speed >= MIN_SPEED_MPS)
        if len(moving) == 0:
            raise MbrlError(f"{self.name}: the car never moves (speed never reaches {MIN_SPEED_MPS} m/s)")
        t0 = self.t[moving[0]]
        keep = (self.t >= t0 - lead_s) & (self.t <= t0 + seconds)
        return self.select(keep)

    def select(self, keep: np.ndarray) -> "Telemetry":
        return Telemetry(self.name, self.dt, self.t[keep], self.state[keep], self.cmd[keep], self.seg[keep],
                         self.command_names, self.reference_point, self.raw_seconds, list(self.notes))


def _entry(section: dict, key: str, where: str, units: dict[str, float]) -> tuple[str, float]:
    item = section.get(key)
    if not isinstance(item, dict) or not isinstance(item.get("column"), str):
        raise MbrlError(f"{where}: '{key}' needs a 'column' name")
    unit = str(item.get("unit", next(iter(units))))
    if unit not in units:
        raise MbrlError(f"{where}: '{key}' has unknown unit '{unit}' (known: {', '.join(units)})")
    return item["column"], units[unit]


def _number(value, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MbrlError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise MbrlError(f"{where}: expected a finite number, got {value!r}")
    return out


def load_column_map(path: str | Path) -> ColumnMap:
    """Read and validate a column-map YAML (a top-level ``telemetry`` mapping or the mapping itself)."""
    path = Path(path)
    data = load_yaml(path)
    sec = data.get("telemetry", data)
    where = str(path)
    if not isinstance(sec, dict):
        raise MbrlError(f"{where}: 'telemetry' must be a mapping")
    if sec.get("format", "csv") != "csv":
        raise MbrlError(f"{where}: format '{sec.get('format')}' is not supported (known: csv)")
    time_col, time_scale = _entry(sec, "time", where, TIME_UNITS)
    pose = sec.get("pose")
    if not isinstance(pose, dict):
        raise MbrlError(f"{where}: 'pose' must map x, y, yaw to columns")
    px, sx = _entry(pose, "x", f"{where}: pose", LENGTH_UNITS)
    py, sy = _entry(pose, "y", f"{where}: pose", LENGTH_UNITS)
    pyaw, syaw = _entry(pose, "yaw", f"{where}: pose", ANGLE_UNITS)
    cmds = sec.get("commands")
    if not isinstance(cmds, list) or not cmds:
        raise MbrlError(f"{where}: 'commands' must be a non-empty list of channels")
    channels = []
    for i, c in enumerate(cmds):
        w = f"{where}: commands[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("column"), str):
            raise MbrlError(f"{w}: needs 'name' and 'column'")
        unit = str(c.get("unit", "1"))
        if unit not in COMMAND_UNITS:
            raise MbrlError(f"{w}: unknown unit '{unit}' (known: {', '.join(sorted(COMMAND_UNITS))})")
        rng = c.get("range", [-math.inf, math.inf])
        if not isinstance(rng, list) or len(rng) != 2:
            raise MbrlError(f"{w}: 'range' must be [low, high]")
        low, high = float(rng[0]), float(rng[1])
        if not low < high:
            raise MbrlError(f"{w}: 'range' must have low < high")
        enabled_by = c.get("enabled_by")
        if enabled_by not in (None, "enable"):
            raise MbrlError(f"{w}: 'enabled_by' may only be 'enable'")
        channels.append(CommandChannel(c["name"], c["column"], unit, low, high, enabled_by))
    if len({c.name for c in channels}) != len(channels):
        raise MbrlError(f"{where}: command names must be unique")
    enable = sec.get("enable")
    enable_col, enable_thr = None, 0.5
    if enable is not None:
        if not isinstance(enable, dict) or not isinstance(enable.get("column"), str):
            raise MbrlError(f"{where}: 'enable' needs a 'column'")
        enable_col, enable_thr = enable["column"], _number(enable.get("threshold", 0.5), f"{where}: enable.threshold")
    if any(c.enabled_by for c in channels) and enable_col is None:
        raise MbrlError(f"{where}: a command is 'enabled_by: enable' but there is no 'enable' column")
    valid = sec.get("valid")
    valid_col = None
    if valid is not None:
        if not isinstance(valid, dict) or not isinstance(valid.get("column"), str):
            raise MbrlError(f"{where}: 'valid' needs a 'column'")
        valid_col = valid["column"]
    segs = sec.get("segments", {}) or {}
    filt = sec.get("velocity_filter", {}) or {}
    if not isinstance(segs, dict) or not isinstance(filt, dict):
        raise MbrlError(f"{where}: 'segments' and 'velocity_filter' must be mappings")
    known = {"max_gap_samples", "max_speed_mps", "max_yaw_rate_radps", "min_run_samples"}
    if set(segs) - known:
        raise MbrlError(f"{where}: segments: unknown key(s) {sorted(set(segs) - known)}")
    nums = {k: _number(v, f"{where}: segments.{k}") for k, v in segs.items()}
    if any(v <= 0 for v in nums.values()):
        raise MbrlError(f"{where}: segments: values must be positive")
    span = _number(filt.get("span_s", 0.2), f"{where}: velocity_filter.span_s")
    if span <= 0:
        raise MbrlError(f"{where}: velocity_filter.span_s must be positive")
    return ColumnMap(where, str(sec.get("name", path.stem)), time_col, time_scale, (px, py, pyaw), (sx, sy, syaw),
                     tuple(channels), enable_col, enable_thr, valid_col, str(sec.get("reference_point", "recorded")),
                     nums.get("max_gap_samples", 2.5), nums.get("max_speed_mps", 10.0),
                     nums.get("max_yaw_rate_radps", 30.0), int(nums.get("min_run_samples", 5)), span)


def _read_columns(path: Path, wanted: list[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise MbrlError(f"{path}: telemetry file not found")
    try:
        with open(path, newline="") as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise MbrlError(f"{path}: cannot read the CSV header: {exc}") from None
    names = [h.strip() for h in next(csv.reader([header.lstrip("#").strip()]), [])]
    missing = [c for c in dict.fromkeys(wanted) if c not in names]
    if missing:
        raise MbrlError(f"{path}: column(s) {missing} named by the column map are not in the CSV header")
    idx = [names.index(c) for c in dict.fromkeys(wanted)]
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=idx, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise MbrlError(f"{path}: malformed CSV: {msg}") from None
    return {c: data[:, j] for j, c in enumerate(dict.fromkeys(wanted))}


def _refuse_non_finite(path: Path, col: dict[str, np.ndarray]) -> None:
    """NaN or inf in a column the map uses: refused, naming the first such row (1-based, after the
    header) and column. Dropping the rows silently would join the samples either side of them."""
    bad = {c: np.flatnonzero(~np.isfinite(v)) for c, v in col.items()}
    bad = {c: rows for c, rows in bad.items() if len(rows)}
    if bad:
        column, rows = min(bad.items(), key=lambda item: item[1][0])
        count = len(np.unique(np.concatenate(list(bad.values()))))
        raise MbrlError(f"{path}: {count} row(s) with NaN/inf, the first at data row {rows[0] + 1} in column "
                        f"'{column}'; remove those rows (a gap in time splits the recording there)")


def _sg_window(dt: float, span_s: float) -> tuple[int, int]:
    n = int(np.floor(span_s / dt + 1e-9)) + 1
    n += 1 - n % 2
    n = max(n, 5)
    return n, (3 if n >= 9 else 2)


def _breaks(t, x, y, yaw, ok, dt, cmap: ColumnMap) -> np.ndarray:
    dtt = np.diff(t)
    step = np.hypot(np.diff(x), np.diff(y))
    dyaw = np.abs(np.angle(np.exp(1j * np.diff(yaw))))
    span = np.maximum(dtt, dt)
    glitch = (step > cmap.max_speed_mps * span) | (dyaw > cmap.max_yaw_rate_radps * span)
    gap = (dtt > cmap.max_gap_samples * dt) | (dtt <= 0)
    return glitch | gap | (ok[1:] != ok[:-1])


def read_csv_telemetry(path: str | Path, cmap: ColumnMap | str | Path,
                       reference_offset_m: tuple[float, float] = (0.0, 0.0)) -> Telemetry:
    """Read a CSV recording with its column map (see the module docstring).

    ``reference_offset_m`` (forward, left) moves the reported point from the recorded reference
    point in the body frame (e.g. to the centre of mass); (0, 0) keeps the recorded point.
    """
    from scipy.signal import savgol_filter

    path = Path(path)
    if not isinstance(cmap, ColumnMap):
        cmap = load_column_map(cmap)
    col = _read_columns(path, cmap.columns())
    t = col[cmap.time_column] * cmap.time_scale
    x, y, yaw = (col[c] * s for c, s in zip(cmap.pose_columns, cmap.pose_scales))
    enable = col[cmap.enable_column] > cmap.enable_threshold if cmap.enable_column else np.ones(len(t), bool)
    cmd = np.stack([np.where(enable, col[c.column], 0.0) if c.enabled_by else col[c.column] for c in cmap.commands],
                   axis=1)
    ok = col[cmap.valid_column] != 0.0 if cmap.valid_column else np.ones(len(t), bool)
    _refuse_non_finite(path, col)
    notes = []
    if len(t) < 10:
        raise MbrlError(f"{path}: too short ({len(t)} usable rows)")
    if np.any(np.diff(t) < 0):
        raise MbrlError(f"{path}: time column '{cmap.time_column}' is not monotonic")
    for j, c in enumerate(cmap.commands):
        if np.any((cmd[:, j] < c.low - 1e-9) | (cmd[:, j] > c.high + 1e-9)):
            raise MbrlError(f"{path}: command '{c.name}' leaves its range [{c.low:g}, {c.high:g}]")
    dt = float(np.round(np.median(np.diff(t)), 3))
    if not dt > 0:
        raise MbrlError(f"{path}: time column '{cmap.time_column}' has repeated values (median step 0)")
    raw_seconds = float(t[-1] - t[0])
    keep = np.ones(len(t), bool)
    for _ in range(10):  # drop short runs between breaks (glitches), re-evaluating the joins
        idx = np.flatnonzero(keep)
        br = _breaks(t[idx], x[idx], y[idx], yaw[idx], ok[idx], dt, cmap)
        starts = np.r_[0, np.flatnonzero(br) + 1]
        ends = np.r_[starts[1:], len(idx)]
        short = [(s, e) for s, e in zip(starts, ends) if e - s < cmap.min_run_samples]
        if not short:
            break
        for s, e in short:
            keep[idx[s:e]] = False
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} samples dropped as glitches/short runs")
    idx = np.flatnonzero(keep)
    t, x, y, yaw, cmd, ok = t[idx], x[idx], y[idx], yaw[idx], cmd[idx], ok[idx]
    br = _breaks(t, x, y, yaw, ok, dt, cmap)
    starts = np.r_[0, np.flatnonzero(br) + 1]
    ends = np.r_[starts[1:], len(t)]
    win, order = _sg_window(dt, cmap.span_s)
    out_t, out_s, out_u, out_seg = [], [], [], []
    fx, fy = reference_offset_m
    for s, e in zip(starts, ends):
        if not ok[s]:
            continue
        ts = t[s:e]
        n = int(np.floor((ts[-1] - ts[0]) / dt + 1e-6)) + 1
        if n < max(win, 2):
            continue
        tg = ts[0] + dt * np.arange(n)
        yawg = np.interp(tg, ts, np.unwrap(yaw[s:e]))
        c, sn = np.cos(yawg), np.sin(yawg)
        xg = np.interp(tg, ts, x[s:e]) + c * fx - sn * fy
        yg = np.interp(tg, ts, y[s:e]) + sn * fx + c * fy
        j = np.clip(np.searchsorted(ts, tg + 1e-9, side="right") - 1, 0, len(ts) - 1)
        dx, dy, dyaw = (savgol_filter(v, win, order, deriv=1, delta=dt, mode="interp") for v in (xg, yg, yawg))
        out_t.append(tg)
        out_s.append(np.stack([xg, yg, yawg, c * dx + sn * dy, -sn * dx + c * dy, dyaw], axis=1))
        out_u.append(cmd[s:e][j])
        out_seg.append(np.full(n, len(out_seg)))
    if not out_t:
        raise MbrlError(f"{path}: no usable segment (too short, or every part broken by gaps or glitches)")
    ref = cmap.reference_point if reference_offset_m == (0.0, 0.0) else f"{cmap.reference_point}+offset"
    return Telemetry(path.name, dt, np.concatenate(out_t), np.concatenate(out_s), np.concatenate(out_u),
                     np.concatenate(out_seg), cmap.command_names, ref, raw_seconds, notes)
