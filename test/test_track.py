"""Tracks: loading, arclength and curvature against closed forms, projection against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_control import MbrlError
from mbrl_control.track import ClosedPath, load_raceline, load_track, resolve_track

TRACK_NAMES = ["Austin", "Budapest", "Monza", "Silverstone", "Sochi", "Spielberg"]


def brute_force_projection(xy, points):
    """Distance to every segment of the closed polyline; the nearest wins."""
    a = xy
    b = np.roll(xy, -1, axis=0)
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=1)
    s0 = np.concatenate(([0.0], np.cumsum(seg_len)[:-1]))
    out = []
    for p in points:
        t = np.clip(np.einsum("nd,nd->n", p - a, ab) / seg_len**2, 0.0, 1.0)
        foot = a + t[:, None] * ab
        d = np.linalg.norm(p - foot, axis=1)
        i = int(np.argmin(d))
        cross = ab[i, 0] * (p[1] - a[i, 1]) - ab[i, 1] * (p[0] - a[i, 0])
        out.append((s0[i] + t[i] * seg_len[i], np.sign(cross) * d[i], d[i]))
    return np.array(out)


@pytest.mark.parametrize("name", TRACK_NAMES)
def test_projection_matches_brute_force(shared_tracks, name):
    track = load_track(shared_tracks / f"{name}_centerline.csv")
    rng = np.random.default_rng(len(name))
    c = track.centerline
    s = rng.uniform(0, c.length_m, 400)
    base = c.point_at(s)
    points = base + rng.normal(0, 1.2, base.shape)
    proj = track.project(points)
    ref = brute_force_projection(c.xy_m, points)
    dist = np.hypot(*(points - c.point_at(proj.progress_m)).T)
    np.testing.assert_allclose(dist, ref[:, 2], atol=1e-9)  # the same (minimal) distance
    np.testing.assert_allclose(np.abs(proj.lateral_m), ref[:, 2], atol=1e-9)
    same_place = np.abs(np.remainder(proj.progress_m - ref[:, 0] + c.length_m / 2, c.length_m) - c.length_m / 2) < 1e-6
    assert same_place.mean() > 0.99  # ties between equidistant segments may pick either
    np.testing.assert_allclose(proj.lateral_m[same_place], ref[same_place, 1], atol=1e-9)


def test_circle_arclength_curvature_and_lateral_sign():
    r = 5.0
    theta = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    path = ClosedPath(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
    assert abs(path.length_m - 2 * np.pi * r) < 1e-4
    np.testing.assert_allclose(path.curvature_1pm, 1.0 / r, rtol=1e-5)
    proj = path.project(np.array([[4.0, 0.0], [6.0, 0.0]]))  # counter-clockwise: inside is left
    np.testing.assert_allclose(proj.lateral_m, [1.0, -1.0], atol=1e-5)


def test_inside_bounds_and_start_pose(shared_tracks):
    track = load_track(shared_tracks / "Spielberg_centerline.csv")
    c = track.centerline
    normal = np.stack([-c.segment_dir[:, 1], c.segment_dir[:, 0]], axis=1)
    mid = c.xy_m + 0.5 * (np.roll(c.xy_m, -1, axis=0) - c.xy_m)
    assert track.inside(mid + 1.0 * normal).all()
    assert track.inside(mid - 1.0 * normal).all()
    for side in (1.3, -1.3):  # outside, wherever the offset point still projects onto its own segment
        points = mid + side * normal
        own = track.project(points).segment == np.arange(len(c))
        assert own.mean() > 0.9
        assert not track.inside(points[own]).any()
    x, y, yaw = track.start_pose()
    assert (x, y) == (0.0, 0.0) and abs(yaw - c.segment_heading_rad[0]) < 1e-12


def test_raceline_reference_lap_time(shared_tracks):
    raceline = load_raceline(shared_tracks / "Austin_raceline.csv")
    assert abs(raceline.reference_lap_time_s - 59.0) < 0.1  # README: 59.0 s
    assert resolve_track("Austin").reference_lap_time_s == pytest.approx(raceline.reference_lap_time_s)


def test_default_track_ships_with_the_project():
    track = resolve_track("default")
    assert track.raceline is None and 40 < track.length_m < 100
    assert np.max(np.abs(track.centerline.curvature_1pm)) < 1.0


def test_bad_track_files(tmp_path):
    with pytest.raises(MbrlError, match="track file not found"):
        load_track(tmp_path / "missing.csv")
    bad = tmp_path / "bad_centerline.csv"
    bad.write_text("# x_m, y_m, w_tr_right_m, w_tr_left_m\n0, 0, 1, 1\n1, zero, 1, 1\n")
    with pytest.raises(MbrlError, match=r"bad_centerline.csv:3: not a number"):
        load_track(bad)
    bad.write_text("0, 0, 1\n")
    with pytest.raises(MbrlError, match="expected 4"):
        load_track(bad)
    with pytest.raises(MbrlError, match="unknown track 'Atlantis'"):
        resolve_track("Atlantis")
