"""The MuJoCo Ackermann car: MJCF filled from the vehicle YAML, Ackermann geometry, actuators, the
plant interface (state conventions, latency, noise, determinism), and agreement with the
single-track model at low speed and small steering (acceptance 2, tolerance justified below)."""

from __future__ import annotations

import math
import re

import mujoco
import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.models import DynamicSingleTrack, S, U
from mbrl_control.models.bicycle import KinematicBicycle
from mbrl_control.sim import make_plant
from mbrl_control.sim.mujoco_plant import (
    CarGeometry,
    MujocoPlant,
    ackermann_polycoef,
    ackermann_wheel_angles,
    bicycle_steer_from_wheels,
    build_mjcf,
    constrained_accel,
    mjcf_template_path,
    simplify_polyline,
)
from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at
from mbrl_control.track import resolve_track

DT_S = 0.02


@pytest.fixture(scope="module")
def plant(params):
    return MujocoPlant(params)


def drive(plant, commands: np.ndarray) -> np.ndarray:
    """Measurements after each control period of ``commands`` (N, 2)."""
    return np.array([plant.advance(u, DT_S) for u in commands])


def car_yaw_inertia_about_cog(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[float, np.ndarray]:
    """(yaw inertia of all car bodies about the chassis frame's vertical axis, CoM of the car in that frame)."""
    chassis = model.body("chassis").id
    origin = data.xpos[chassis]
    bodies = [b for b in range(1, model.nbody) if model.body_rootid[b] == chassis]
    izz, moment, mass = 0.0, np.zeros(3), 0.0
    for b in bodies:
        rot = data.ximat[b].reshape(3, 3)
        inertia = rot @ np.diag(model.body_inertia[b]) @ rot.T
        rel = data.xipos[b] - origin
        izz += inertia[2, 2] + model.body_mass[b] * (rel[0] ** 2 + rel[1] ** 2)
        moment += model.body_mass[b] * rel
        mass += model.body_mass[b]
    return izz, moment / mass


# ------------------------------------------------------------------ MJCF from the vehicle YAML


@pytest.mark.parametrize("changes", [{}, {"mass_kg": 5.0, "lf_m": 0.2, "width_m": 0.27, "yaw_inertia_kgm2": 0.08}])
def test_mjcf_takes_mass_inertia_and_geometry_from_the_vehicle_yaml(params, changes):
    vehicle = params.replace(**changes)
    model = mujoco.MjModel.from_xml_string(build_mjcf(vehicle))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)  # qpos0: chassis at the origin, yaw 0, wheels straight
    chassis = model.body("chassis").id
    assert model.body_subtreemass[chassis] == pytest.approx(vehicle.mass_kg, rel=1e-9)
    izz, com = car_yaw_inertia_about_cog(model, data)
    assert izz == pytest.approx(vehicle.yaw_inertia_kgm2, rel=1e-6)
    np.testing.assert_allclose(com, 0.0, atol=1e-9)  # the chassis frame is the car's centre of gravity
    assert data.xpos[chassis][2] == pytest.approx(vehicle.cg_height_m)
    front = [data.xpos[model.body(f"wheel_f{s}").id] for s in "lr"]
    rear = [data.xpos[model.body(f"wheel_r{s}").id] for s in "lr"]
    assert front[0][0] - rear[0][0] == pytest.approx(vehicle.wheelbase_m)
    assert front[0][0] == pytest.approx(vehicle.lf_m) and rear[1][0] == pytest.approx(-vehicle.lr_m)
    assert front[0][1] - front[1][1] == pytest.approx(vehicle.width_m)
    for geom in ("wheel_fl", "wheel_rr", "ground"):
        assert model.geom(geom).friction[0] == pytest.approx(vehicle.friction_coeff)
    np.testing.assert_allclose(model.jnt_range[model.joint("steer").id], [vehicle.steer_min_rad, vehicle.steer_max_rad])
    np.testing.assert_allclose(model.actuator("steer_servo").ctrlrange, [vehicle.steer_min_rad, vehicle.steer_max_rad])


def test_template_holds_placeholders_not_vehicle_numbers(params):
    text = mjcf_template_path().read_text()
    for name in ("lf_m", "lr_m", "half_track_m", "chassis_mass_kg", "friction_coeff", "steer_kp", "polycoef_left"):
        assert "${" + name + "}" in text
    assert str(params.mass_kg) not in text and str(params.lf_m) not in text
    filled = build_mjcf(params)
    assert "${" not in filled
    with pytest.raises(MbrlError, match="placeholder"):
        build_mjcf(params, template=text.replace("${lf_m}", "${no_such_value}"))


def test_tiny_yaw_inertia_is_a_clear_error(params):
    with pytest.raises(MbrlError, match="yaw inertia"):
        build_mjcf(params.replace(yaw_inertia_kgm2=0.005))


# ------------------------------------------------------------------ Ackermann geometry


def test_ackermann_closed_form_properties(params):
    steer = np.linspace(-0.4, 0.4, 41)
    left, right = ackermann_wheel_angles(steer, params.wheelbase_m, params.width_m)
    turning = steer != 0
    # Both wheels steer about the same centre on the rear axle line: cot(outer) - cot(inner) = track / wheelbase.
    cot_l, cot_r = 1 / np.tan(left[turning]), 1 / np.tan(right[turning])
    np.testing.assert_allclose(cot_r - cot_l, params.width_m / params.wheelbase_m, rtol=1e-9)
    assert np.all(np.abs(left[steer > 0]) > np.abs(right[steer > 0]))  # inner (left) wheel turns more
    back = [bicycle_steer_from_wheels(a, b, params.wheelbase_m, params.width_m) for a, b in zip(left, right)]
    np.testing.assert_allclose(back, steer, atol=1e-12)


def test_quartic_coupling_fits_ackermann(params):
    poly_l, poly_r = ackermann_polycoef(params, params.width_m)
    steer = np.linspace(params.steer_min_rad, params.steer_max_rad, 101)
    left, right = ackermann_wheel_angles(steer, params.wheelbase_m, params.width_m)
    assert poly_l[0] == poly_r[0] == 0.0
    np.testing.assert_allclose(np.polyval(poly_l[::-1], steer), left, atol=1e-3)
    np.testing.assert_allclose(np.polyval(poly_r[::-1], steer), right, atol=1e-3)


def test_simulated_knuckles_follow_ackermann(params, plant):
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 1.0, params))
    drive(plant, np.tile([0.3, 0.0], (40, 1)))
    left, right = (plant.data.qpos[a] for a in plant._q_knuckle)
    exact_l, exact_r = ackermann_wheel_angles(plant.state[S.STEER], params.wheelbase_m, params.width_m)
    assert left == pytest.approx(float(exact_l), abs=3e-3) and right == pytest.approx(float(exact_r), abs=3e-3)
    assert plant.state[S.STEER] == pytest.approx(0.3, abs=5e-3)


# ------------------------------------------------------------------ actuators


def test_steering_servo_matches_model_and_honours_rate_limit(params, plant):
    """Step commands: MuJoCo's damped, force-limited servo vs the torch model's tanh servo."""
    start = initial_state_at(0.0, 0.0, 0.0, 2.0, params)
    reference = SingleTrackPlant(params)
    commands = np.array([[0.4, 0.0]] * 20 + [[-0.1, 0.0]] * 20 + [[0.0, 0.0]] * 10)
    for p in (plant, reference):
        p.reset(start)
    mj = np.concatenate([[0.0], drive(plant, commands)[:, S.STEER]])
    ref = np.concatenate([[0.0], drive(reference, commands)[:, S.STEER]])
    assert np.max(np.abs(mj - ref)) < 0.03  # clamp vs tanh saturation: same first-order shape
    assert np.max(np.abs(np.diff(mj))) / DT_S <= 1.02 * params.steer_rate_max_radps
    assert mj[20] == pytest.approx(0.4, abs=5e-3)


def test_steering_command_beyond_range_is_clipped(params, plant):
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 1.0, params))
    z = drive(plant, np.tile([1.5, 0.0], (30, 1)))
    assert z[:, S.STEER].max() <= params.steer_max_rad + 2e-3


def test_constrained_accel_equals_torch_model(params):
    model = DynamicSingleTrack(params, dtype=torch.float64)
    v = np.array([-5.5, -5.0, -1.0, 0.0, 3.0, 7.319, 10.0, 19.9, 20.0, 21.0])
    for a_cmd in (-12.0, -3.0, 0.0, 2.0, 9.51, 15.0):
        expected = model.accel(torch.tensor(v), torch.full((len(v),), a_cmd, dtype=torch.float64)).numpy()
        got = [constrained_accel(float(x), a_cmd, params) for x in v]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ agreement with the single-track model


def run_both(params, plant, start, commands):
    reference = SingleTrackPlant(params)
    kinematic = SingleTrackPlant(params, kinematic=True)
    out = []
    for p in (plant, reference, kinematic):
        p.reset(start)
        out.append(drive(p, commands))
    return out


def test_straight_line_speed_and_position_agree(params, plant):
    """Accelerate 2 m/s^2 for 1 s, hold, brake: longitudinal tracking within 3 cm / 0.05 m/s."""
    commands = np.array([[0.0, 2.0]] * 50 + [[0.0, 0.0]] * 50 + [[0.0, -3.0]] * 25)
    mj, st, _ = run_both(params, plant, initial_state_at(0.0, 0.0, 0.0, 0.5, params), commands)
    assert np.max(np.abs(mj[:, S.V] - st[:, S.V])) < 0.05
    assert np.max(np.hypot(mj[:, S.X] - st[:, S.X], mj[:, S.Y] - st[:, S.Y])) < 0.03
    assert np.max(np.abs(mj[:, S.YAW])) < 2e-3


@pytest.mark.parametrize("speed_mps, steer_rad, pos_tol_m, yaw_tol_rad", [
    (2.0, 0.1, 0.1, 0.02),  # acceptance 2: low speed, small steering
    (2.0, 0.05, 0.1, 0.02),
    (4.0, 0.1, 0.25, 0.05),
    (6.0, 0.05, 0.25, 0.05),
])
def test_small_steering_agrees_with_single_track(params, plant, speed_mps, steer_rad, pos_tol_m, yaw_tol_rad):
    """Acceptance 2: constant speed, steering ramped by the servo to ``steer_rad``, 3 s.

    Tolerance: the tyres' friction damping is set from the YAML's cornering stiffness, so in the
    linear tyre range the MuJoCo car should follow the single-track model; what remains is the
    engine's (four wheels with Ackermann geometry, suspension, soft contacts, speed loop). The
    repo's two reference models disagree by ``gap = |kinematic - single-track|`` (0.34 m /
    0.07 rad at 2 m/s, 2.5 m / 0.46 rad at 4 m/s after 3 s). The MuJoCo car must be at least ~3x
    closer to the single-track model than the kinematic model is (0.3 gap + 2 cm / 0.3 gap +
    0.01 rad) and within the absolute bounds (0.1 m / 0.02 rad at 2 m/s over 6 m travelled;
    0.25 m / 0.05 rad at 4-6 m/s over 12-18 m). Speed within 0.1 m/s, steering within 0.01 rad,
    steady yaw rate within 3 %.
    """
    commands = np.array([[steer_rad, 0.0]] * 150)
    mj, st, kin = run_both(params, plant, initial_state_at(0.0, 0.0, 0.0, speed_mps, params), commands)
    pos_err = np.hypot(mj[:, S.X] - st[:, S.X], mj[:, S.Y] - st[:, S.Y])
    pos_gap = np.hypot(kin[:, S.X] - st[:, S.X], kin[:, S.Y] - st[:, S.Y])
    yaw_err = np.abs(mj[:, S.YAW] - st[:, S.YAW])
    yaw_gap = np.abs(kin[:, S.YAW] - st[:, S.YAW])
    assert np.all(pos_err <= 0.3 * pos_gap + 0.02)
    assert np.all(yaw_err <= 0.3 * yaw_gap + 0.01)
    assert pos_err.max() < pos_tol_m and yaw_err.max() < yaw_tol_rad
    assert np.max(np.abs(mj[:, S.V] - st[:, S.V])) < 0.1
    assert np.max(np.abs(mj[:, S.STEER] - st[:, S.STEER])) < 0.01
    assert mj[-1, S.YAW_RATE] == pytest.approx(st[-1, S.YAW_RATE], rel=0.03)


def test_without_tyre_slip_the_engine_friction_is_near_kinematic(params):
    """The tyre damping is what makes the car slip: MuJoCo's default (stiff) friction tracks the kinematic model."""
    stiff = MujocoPlant(params, geometry=CarGeometry(tyre_slip=False))
    commands = np.array([[0.1, 0.0]] * 150)
    mj, st, kin = run_both(params, stiff, initial_state_at(0.0, 0.0, 0.0, 4.0, params), commands)
    to_kin = np.hypot(mj[-1, S.X] - kin[-1, S.X], mj[-1, S.Y] - kin[-1, S.Y])
    to_st = np.hypot(mj[-1, S.X] - st[-1, S.X], mj[-1, S.Y] - st[-1, S.Y])
    assert to_kin < 0.2 * to_st


def test_tyres_saturate_at_the_friction_limit(params, plant):
    """Steering slowly to full lock at 6 m/s: lateral acceleration tops out near mu g (friction
    circle), where the single-track model's linear tyres keep going."""
    commands = np.column_stack([np.minimum(0.4, 0.002 * np.arange(250)), np.zeros(250)])
    mj, st, _ = run_both(params, plant, initial_state_at(0.0, 0.0, 0.0, 6.0, params), commands)
    mu_g = params.friction_coeff * 9.81
    lateral_mj = np.abs(mj[:, S.V] * mj[:, S.YAW_RATE])
    assert 0.85 * mu_g < lateral_mj.max() < 1.15 * mu_g
    assert np.abs(st[:, S.V] * st[:, S.YAW_RATE]).max() > 1.3 * mu_g


def test_slow_speed_matches_kinematic_limit(params, plant):
    """Below the kinematic blend speed the single-track model is the kinematic bicycle; MuJoCo too (2 %)."""
    commands = np.array([[0.3, 0.0]] * 150)
    mj, st, kin = run_both(params, plant, initial_state_at(0.0, 0.0, 0.0, 0.45, params), commands)
    np.testing.assert_allclose(st[:, [S.X, S.Y, S.YAW]], kin[:, [S.X, S.Y, S.YAW]], atol=1e-9)
    travelled = 0.45 * DT_S * len(commands)
    assert np.max(np.hypot(mj[:, S.X] - st[:, S.X], mj[:, S.Y] - st[:, S.Y])) < 0.02 * travelled + 0.01
    assert np.max(np.abs(mj[:, S.YAW] - st[:, S.YAW])) < 0.02


# ------------------------------------------------------------------ the plant interface


def test_reset_then_state_round_trip(params, plant):
    start = np.zeros(7)
    start[[S.X, S.Y, S.YAW]] = (3.0, -2.0, 2.5)
    start[S.STEER], start[S.V] = 0.1, 3.0
    start[S.YAW_RATE], start[S.SLIP] = 0.4, 0.05
    plant.reset(start)
    np.testing.assert_allclose(plant.state, start, atol=2e-3)
    assert plant.time_s == 0.0


def test_state_conventions_yaw_unwrapped_slip_and_reverse(params, plant):
    plant.reset(initial_state_at(0.0, 0.0, 3.0, 2.0, params))  # yaw near +pi: wrapping would show at once
    z = drive(plant, np.tile([0.4, 0.0], (200, 1)))  # 4 s of a tight left circle: yaw passes 3 + 2 pi
    assert z[-1, S.YAW] > 3.0 + 2.0 * math.pi
    assert np.all(np.diff(z[:, S.YAW]) > 0) and np.max(np.diff(z[:, S.YAW])) < 0.2
    d = plant.data
    rot = d.xmat[plant._chassis].reshape(3, 3)
    vx_b, vy_b = (rot.T @ d.qvel[plant._v_free : plant._v_free + 3])[:2]
    assert z[-1, S.SLIP] == pytest.approx(math.atan2(vy_b, vx_b), abs=1e-3)
    assert z[-1, S.V] == pytest.approx(math.hypot(vx_b, vy_b), abs=1e-3)
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 0.0, params))
    z = drive(plant, np.tile([0.0, 0.0], (10, 1)))
    assert np.all(np.abs(z[:, S.SLIP]) == 0.0) and np.all(np.abs(z[:, S.V]) < 1e-3)
    z = drive(plant, np.tile([0.0, -1.0], (50, 1)))  # reverse
    assert z[-1, S.V] == pytest.approx(-1.0, abs=0.05) and z[-1, S.X] < -0.4
    assert abs(z[-1, S.SLIP]) < 0.01


def test_command_latency_delays_the_effect(params):
    plant = MujocoPlant(params, PlantConfig(command_latency_s=0.06))
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 2.0, params))
    speeds = [plant.advance(np.array([0.0, -3.0]), DT_S)[S.V] for _ in range(5)]
    assert all(abs(v - 2.0) < 5e-3 for v in speeds[:3])  # coasting (slight rolling resistance)
    assert speeds[3] < 1.98 and speeds[4] < speeds[3] - 0.04


def test_deterministic_for_a_seed_and_noise_follows_the_seed(params):
    def run(seed):
        plant = MujocoPlant(params, PlantConfig(position_noise_m=0.05, yaw_noise_rad=0.01, velocity_noise=0.05, seed=seed))
        plant.reset(initial_state_at(0.0, 0.0, 0.0, 1.0, params))
        commands = np.column_stack([0.3 * np.sin(np.arange(60) * 0.1), np.full(60, 1.5)])
        return drive(plant, commands), plant.state

    (a, true_a), (b, true_b), (c, true_c) = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(true_a, true_b)
    np.testing.assert_array_equal(true_a, true_c)  # noise is on the measurement, not the physics
    assert np.abs(a - c).max() > 0.01


def test_non_finite_command_stops_safely_and_bad_reset_is_an_error(params, plant):
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 2.0, params))
    z = drive(plant, np.tile([np.nan, np.inf], (40, 1)))
    assert np.all(np.isfinite(z)) and abs(z[-1, S.V]) < 0.05
    with pytest.raises(MbrlError, match="reset state"):
        plant.reset(np.full(7, np.nan))


# ------------------------------------------------------------------ track bounds, factory


def test_simplified_polyline_stays_within_tolerance():
    t = np.linspace(0.0, 2.0 * np.pi, 400, endpoint=False)
    circle = np.column_stack([10.0 * np.cos(t), 10.0 * np.sin(t)])
    kept = simplify_polyline(circle, 0.03)
    assert 8 < len(kept) < 100
    # every original point lies within tolerance of the simplified closed polyline
    a, b = kept, np.roll(kept, -1, axis=0)
    seg = b - a
    rel = circle[:, None, :] - a[None]
    along = np.clip(np.einsum("nkd,kd->nk", rel, seg) / np.einsum("kd,kd->k", seg, seg), 0.0, 1.0)
    dist = np.linalg.norm(rel - along[..., None] * seg[None], axis=-1).min(axis=1)
    assert dist.max() <= 0.03 + 1e-9


def test_make_plant_draws_track_bounds_as_visual_geometry(params):
    track = resolve_track("default")
    plant = make_plant("mujoco", params, PlantConfig(), track=track)
    assert isinstance(plant, MujocoPlant) and plant.name == "mujoco"
    model = plant.model
    bounds = [g for g in range(model.ngeom) if re.match(r"bound_(left|right)_\d+$", model.geom(g).name)]
    assert len(bounds) > 20
    assert all(model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0 for g in bounds)
    centres = model.geom_pos[bounds][:, :2]
    right, left = track.bounds_xy()
    polyline = np.concatenate([right, left])
    nearest = np.min(np.linalg.norm(centres[:, None] - polyline[None], axis=-1), axis=1)
    seg_half = model.geom_size[bounds][:, 0]
    assert np.all(nearest <= seg_half + 0.05)  # each box lies along a bound
    plain = make_plant("mujoco", params, PlantConfig())
    assert plain.model.ngeom == model.ngeom - len(bounds)


def test_pure_pursuit_laps_the_default_track(params):
    from mbrl_control.control.pure_pursuit import PurePursuit
    from mbrl_control.sim.runner import ClosedLoop, RunConfig

    track = resolve_track("default")
    plant = MujocoPlant(params, track=track)
    loop = ClosedLoop(track, plant, PurePursuit(params, DT_S, track), RunConfig(laps=1, max_time_s=60.0, progress=False),
                      metrics_model=KinematicBicycle(params, dt_s=DT_S))
    summary, log = loop.run()
    assert summary["laps_completed"] == 1 and summary["track_violations"] == 0
    assert not summary["collisions_or_stops"]
    assert np.all(np.isfinite(log.state))
    assert np.all(np.abs(log.control[:, U.STEER_CMD]) <= params.steer_max_rad)
