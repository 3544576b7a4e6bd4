"""MuJoCo plant: an Ackermann car simulated by a physics engine nobody here wrote.

The MJCF (``sim/f1tenth.xml``) is a template filled at load time from the vehicle YAML (mass,
yaw inertia, lf/lr, track width, CoG height, friction, steering limits and servo time constant,
speed limits) plus the MuJoCo-only constants of :class:`CarGeometry`; the YAML stays the single
source of truth. Contact friction (saturating at mu N: a friction circle), load transfer and
suspension, wheel inertia, rear-wheel drive with an open differential, four-wheel Ackermann
geometry and soft contacts are the engine's, not the single-track model's: exactly the
unmodelled dynamics the semi-parametric model learns.

Tyres: MuJoCo's friction is velocity-regularised (below mu N the force grows with the slip
velocity). Each control period the plant sets each tyre's friction damping to
``C_alpha / max(v, v_blend_high)`` (scaled by the tyre's effective mass and a calibrated gain),
with ``C_alpha = C_S * mu * F_z`` from the YAML as in the single-track model, so that in the
linear range the lateral force is ``C_alpha * slip angle`` (``CarGeometry.tyre_slip=False``
keeps MuJoCo's stiff default friction: a nearly kinematic car).

Input ``u = (steer_cmd_rad, accel_mps2)`` (models/layout.py):

* steering: the command (clipped to the steering range) is the reference of a position servo on a
  virtual rack joint; joint damping ``b``, gain ``b / tau`` and force range ``+-b * rate_max`` make
  it a first-order servo with time constant ``steer_time_constant_s`` that saturates at
  ``steer_rate_max_radps``. The two front knuckles follow the rack through Ackermann couplings.
* acceleration: the CommonRoad constraints (power limit above ``v_switch``, speed bounds) are
  applied to the command at the start of each integration chunk; the rear differential then gets
  a torque feed-forward ``(m + sum J_wheel / r^2) a r`` plus a speed loop whose reference (the
  actuator's integrator state, in wheel rad/s) ramps at ``a / r`` - i.e. it tracks ``v + a t``.
  When braking, the feed-forward torque is shared with the front axle in proportion to the axle
  loads (four-wheel brakes; the speed loop stays on the rear).
  The reference is kept within ``drive_windup_band_mps`` of the car's speed (anti-windup), so
  wheel spin or lock-up under a command beyond the tyres' grip stays bounded.

Output: the shared 7-state read from the chassis (whose frame is the car's centre of gravity):
CoG position, bicycle-equivalent steering angle from the two knuckle joints (inverse Ackermann,
averaged), signed CoG speed, continuously unwrapped yaw, yaw rate, slip ``atan2(vy_b, vx_b)``
(0 at standstill). Odometry latency and noise follow :class:`PlantConfig` (base class). The
physics step is ``CarGeometry.timestep_s``; ``PlantConfig.rate_hz`` does not apply here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from string import Template

import mujoco
import numpy as np

from mbrl_control import MbrlError, share_dir
from mbrl_control.config import VehicleParams
from mbrl_control.control.base import safe_stop_command
from mbrl_control.models.actuation import drive_acceleration
from mbrl_control.models.bicycle import GRAVITY_MPS2
from mbrl_control.models.layout import CONTROL_DIM, S, U
from mbrl_control.models.odometry import odometry_to_state, quaternion_to_yaw
from mbrl_control.ops import numpy_ops
from mbrl_control.sim.plant import Plant, PlantConfig

MJCF_TEMPLATE = "f1tenth.xml"
KNUCKLE_INERTIA_KGM2 = 1e-6  # principal inertias of a knuckle (a small point-like mass)
RACK_INERTIA_KGM2 = 1e-7  # the virtual steering rack
WHEELS = ("fl", "fr", "rl", "rr")
ROLLING_CALIBRATION_SPEED_MPS = 2.0  # at build, the car rolls freely this fast ...
ROLLING_CALIBRATION_S = 0.2  # ... this long, to measure the tyres' effective rolling radius


@dataclass(frozen=True)
class CarGeometry:
    """MuJoCo-only constants of the car (not single-track parameters, hence not in the vehicle YAML)."""

    timestep_s: float = 0.001  # physics step; contact and servo stiffness are tuned for it
    wheel_radius_m: float = 0.05  # F1TENTH (Traxxas) wheel
    wheel_mass_kg: float = 0.1
    knuckle_mass_kg: float = 0.02
    rack_mass_kg: float = 0.001
    wheel_damping_nms: float = 1e-4  # bearing losses
    steer_damping_nms: float = 0.5  # servo damping b: gain = b / tau, torque limit = b * rate_max
    steer_armature_kgm2: float = 1e-4
    knuckle_armature_kgm2: float = 1e-5
    drive_time_constant_s: float = 0.1  # speed loop (corrects the feed-forward): gain = m / tau at the ground
    drive_torque_margin: float = 1.2  # motor torque limit = margin * m * a_max * r
    drive_windup_band_mps: float = 0.2  # speed-loop reference stays this close to the car's speed
    suspension_frequency_hz: float = 4.0  # heave natural frequency of the sprung mass
    suspension_damping_ratio: float = 0.6
    suspension_travel_m: float = 0.04  # +- from the nominal (loaded) position
    impratio: float = 10.0  # friction-to-normal impedance ratio (less creep of the soft friction)
    tyre_slip: bool = True  # tyre friction damping from the YAML's cornering stiffness (False: MuJoCo's stiff default)
    tyre_damping_gain: float = 4.5  # friction damping per (C_alpha / v) and effective mass; calibrated, see docs/mujoco.md
    contact_solref: tuple[float, float] = (0.02, 1.0)
    contact_solimp: tuple[float, float, float] = (0.9, 0.95, 0.001)
    coupling_solref: tuple[float, float] = (0.004, 1.0)  # Ackermann joint equalities
    settle_s: float = 0.5  # at build: let the car settle on its tyres once, to start resets at rest height
    bound_tolerance_m: float = 0.03  # track bounds drawn as a polyline simplified to this tolerance


# --------------------------------------------------------------------------- Ackermann geometry


def ackermann_wheel_angles(steer_rad: np.ndarray, wheelbase_m: float, track_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) front wheel angles of exact Ackermann steering for a bicycle-equivalent angle.

    Left turn (positive angle): the left wheel is the inner one and turns more.
    """
    t = np.tan(np.asarray(steer_rad, dtype=np.float64))
    half = 0.5 * track_m
    left = np.arctan2(wheelbase_m * t, wheelbase_m - half * t)
    right = np.arctan2(wheelbase_m * t, wheelbase_m + half * t)
    return left, right


def bicycle_steer_from_wheels(left_rad: float, right_rad: float, wheelbase_m: float, track_m: float) -> float:
    """The bicycle-equivalent steering angle: inverse Ackermann of each wheel, averaged."""
    half = 0.5 * track_m
    tl, tr = math.tan(left_rad), math.tan(right_rad)
    from_left = math.atan2(wheelbase_m * tl, wheelbase_m + half * tl)
    from_right = math.atan2(wheelbase_m * tr, wheelbase_m - half * tr)
    return 0.5 * (from_left + from_right)


def ackermann_polycoef(params: VehicleParams, track_m: float, margin_rad: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Quartic coefficients ``a0..a4`` (MuJoCo joint equality order) of each wheel angle over the steering range."""
    lo, hi = params.steer_min_rad - margin_rad, params.steer_max_rad + margin_rad
    steer = np.linspace(lo, hi, 201)
    left, right = ackermann_wheel_angles(steer, params.wheelbase_m, track_m)
    basis = np.vander(steer, 5, increasing=True)
    basis[:, 0] = 0.0  # a0 = 0: straight rack, straight wheels
    coef_l = np.linalg.lstsq(basis[:, 1:], left, rcond=None)[0]
    coef_r = np.linalg.lstsq(basis[:, 1:], right, rcond=None)[0]
    return np.concatenate(([0.0], coef_l)), np.concatenate(([0.0], coef_r))


# --------------------------------------------------------------------------- MJCF generation


def _vec(*values: float) -> str:
    return " ".join(f"{v:.9g}" for v in values)


@dataclass(frozen=True)
class MassLayout:
    """Masses and inertia of the chassis body so that the whole car matches the vehicle YAML."""

    chassis_mass_kg: float
    chassis_com_m: np.ndarray  # in the chassis frame (= the car's CoG)
    chassis_inertia_kgm2: np.ndarray  # diagonal, about the chassis body's own CoM
    equivalent_box_m: np.ndarray  # (x, y, z) extent of the uniform box with that inertia (visual)


def mass_layout(params: VehicleParams, geom: CarGeometry) -> MassLayout:
    """Put the chassis mass where the total mass, CoG (frame origin) and yaw inertia come out as in the YAML."""
    r, half = geom.wheel_radius_m, 0.5 * params.width_m
    z_w = r - params.cg_height_m
    wheel_izz = 0.4 * geom.wheel_mass_kg * r * r  # solid sphere
    parts = [(geom.rack_mass_kg, np.zeros(3), RACK_INERTIA_KGM2)]
    for x in (params.lf_m, -params.lr_m):
        for y in (half, -half):
            parts.append((geom.wheel_mass_kg, np.array([x, y, z_w]), wheel_izz))
    for y in (half, -half):
        parts.append((geom.knuckle_mass_kg, np.array([params.lf_m, y, z_w]), KNUCKLE_INERTIA_KGM2))
    parts_mass = sum(m for m, _, _ in parts)
    chassis_mass = params.mass_kg - parts_mass
    if chassis_mass <= 0.2 * params.mass_kg:
        raise MbrlError(f"mujoco car: wheels and knuckles ({parts_mass:.3f} kg) leave too little chassis mass")
    moment = sum(m * p for m, p, _ in parts)
    com = -moment / chassis_mass
    parts_izz = sum(m * (p[0] ** 2 + p[1] ** 2) + izz for m, p, izz in parts)
    chassis_izz = params.yaw_inertia_kgm2 - parts_izz - chassis_mass * (com[0] ** 2 + com[1] ** 2)
    if chassis_izz <= 0:
        raise MbrlError(f"mujoco car: yaw inertia {params.yaw_inertia_kgm2} kg m^2 is below that of wheels and knuckles")
    # A uniform box with the YAML's length:width aspect, height 2h and exactly this yaw inertia.
    aspect = params.width_m / params.length_m
    a = math.sqrt(12.0 * chassis_izz / (chassis_mass * (1.0 + aspect * aspect)))
    b, c = aspect * a, 2.0 * params.cg_height_m
    k = chassis_mass / 12.0
    inertia = np.array([k * (b * b + c * c), k * (a * a + c * c), chassis_izz])
    return MassLayout(chassis_mass, com, inertia, np.array([a, b, c]))


def simplify_polyline(points_xy: np.ndarray, tolerance_m: float) -> np.ndarray:
    """Vertices of a closed polyline kept so that dropped ones lie within ``tolerance_m`` (greedy chord test)."""
    pts = np.asarray(points_xy, dtype=np.float64)
    keep = [0]
    anchor = 0
    n = len(pts)
    for j in range(2, n + 1):
        end = pts[j % n]
        between = pts[anchor + 1 : j]
        chord = end - pts[anchor]
        length = math.hypot(chord[0], chord[1])
        rel = between - pts[anchor]
        if length < 1e-12:
            continue
        dist = np.abs(chord[0] * rel[:, 1] - chord[1] * rel[:, 0]) / length
        if dist.max(initial=0.0) > tolerance_m:
            anchor = j - 1
            keep.append(anchor)
    return pts[keep]


def track_bound_geoms(track, tolerance_m: float, half_width_m: float = 0.03, half_height_m: float = 0.03) -> str:
    """MJCF boxes (visual only: contype = conaffinity = 0) along both track bounds."""
    lines = []
    for side, bound in zip(("right", "left"), track.bounds_xy()):
        pts = simplify_polyline(bound, tolerance_m)
        nxt = np.roll(pts, -1, axis=0)
        for i, (p, q) in enumerate(zip(pts, nxt)):
            d = q - p
            length = math.hypot(d[0], d[1])
            if length < 1e-9:
                continue
            mid = 0.5 * (p + q)
            yaw = math.atan2(d[1], d[0])
            lines.append(
                f'<geom name="bound_{side}_{i}" class="bound" pos="{_vec(mid[0], mid[1], half_height_m)}" '
                f'size="{_vec(0.5 * length + half_width_m, half_width_m, half_height_m)}" euler="0 0 {yaw:.9g}"/>'
            )
    return "\n    ".join(lines)


def suspension_values(params: VehicleParams, geom: CarGeometry) -> dict[str, str]:
    """Spring, damper and pre-load (springref) of each corner: the sprung mass rests at the nominal height."""
    unsprung_front = geom.wheel_mass_kg + geom.knuckle_mass_kg
    sprung = params.mass_kg - 2.0 * unsprung_front - 2.0 * geom.wheel_mass_kg - geom.rack_mass_kg
    omega = 2.0 * math.pi * geom.suspension_frequency_hz
    stiffness = 0.25 * sprung * omega * omega  # per corner
    damping = 2.0 * geom.suspension_damping_ratio * math.sqrt(stiffness * 0.25 * sprung)
    load_front = 0.5 * params.mass_kg * GRAVITY_MPS2 * params.lr_m / params.wheelbase_m  # per wheel, static
    load_rear = 0.5 * params.mass_kg * GRAVITY_MPS2 * params.lf_m / params.wheelbase_m
    spring_front = load_front - unsprung_front * GRAVITY_MPS2
    spring_rear = load_rear - geom.wheel_mass_kg * GRAVITY_MPS2
    if min(spring_front, spring_rear) / stiffness >= geom.suspension_travel_m:
        raise MbrlError("mujoco car: static suspension deflection exceeds its travel (raise suspension_frequency_hz)")
    return {
        "suspension_stiffness_npm": _vec(stiffness),
        "suspension_damping_nspm": _vec(damping),
        "suspension_travel_m": _vec(geom.suspension_travel_m),
        "springref_front_m": _vec(-spring_front / stiffness),
        "springref_rear_m": _vec(-spring_rear / stiffness),
    }


def drive_inertia_kg(params: VehicleParams, geom: CarGeometry) -> float:
    """Inertia the drive accelerates, as a mass: ``m + sum(J_wheel) / r^2`` (four solid-sphere wheels)."""
    return params.mass_kg + 4.0 * 0.4 * geom.wheel_mass_kg


def mjcf_values(params: VehicleParams, geom: CarGeometry) -> dict[str, str]:
    """Every placeholder of the MJCF template, from the vehicle YAML and :class:`CarGeometry`."""
    layout = mass_layout(params, geom)
    r = geom.wheel_radius_m
    poly_l, poly_r = ackermann_polycoef(params, params.width_m)
    knuckle_lo = min(np.polyval(poly_l[::-1], params.steer_min_rad), np.polyval(poly_r[::-1], params.steer_min_rad))
    knuckle_hi = max(np.polyval(poly_l[::-1], params.steer_max_rad), np.polyval(poly_r[::-1], params.steer_max_rad))
    total_inertia = drive_inertia_kg(params, geom)
    drive_gain = params.mass_kg / geom.drive_time_constant_s * r * r  # wheel rad/s -> differential torque
    half_box = 0.5 * np.array([params.length_m, params.width_m, 0.04])
    return {
        "timestep_s": _vec(geom.timestep_s),
        "impratio": _vec(geom.impratio),
        "gravity_mps2": _vec(GRAVITY_MPS2),
        "contact_solref": _vec(*geom.contact_solref),
        "contact_solimp": _vec(*geom.contact_solimp),
        "coupling_solref": _vec(*geom.coupling_solref),
        "friction_coeff": _vec(params.friction_coeff),
        "pair_friction": _vec(params.friction_coeff, params.friction_coeff, 0.005, 0.0001, 0.0001),
        "tyre_solreffriction": _vec(0.0, 0.0),  # = use solref; the plant sets direct damping at run time
        "wheel_radius_m": _vec(r),
        "wheel_mass_kg": _vec(geom.wheel_mass_kg),
        "wheel_damping_nms": _vec(geom.wheel_damping_nms),
        "wheel_z_m": _vec(r - params.cg_height_m),
        "knuckle_min_rad": _vec(knuckle_lo - 0.05),
        "knuckle_max_rad": _vec(knuckle_hi + 0.05),
        "knuckle_armature_kgm2": _vec(geom.knuckle_armature_kgm2),
        "knuckle_mass_kg": _vec(geom.knuckle_mass_kg),
        "knuckle_inertia": _vec(*[KNUCKLE_INERTIA_KGM2] * 3),
        "rack_mass_kg": _vec(geom.rack_mass_kg),
        "rack_inertia": _vec(*[RACK_INERTIA_KGM2] * 3),
        "cg_height_m": _vec(params.cg_height_m),
        "chassis_com": _vec(*layout.chassis_com_m),
        "chassis_mass_kg": _vec(layout.chassis_mass_kg),
        "chassis_inertia": _vec(*layout.chassis_inertia_kgm2),
        "body_half_size": _vec(*half_box),
        "body_pos": _vec(0.5 * (params.lf_m - params.lr_m), 0.0, 0.03),
        "lf_m": _vec(params.lf_m),
        "lr_m": _vec(params.lr_m),
        "half_track_m": _vec(0.5 * params.width_m),
        "steer_min_rad": _vec(params.steer_min_rad),
        "steer_max_rad": _vec(params.steer_max_rad),
        "steer_damping_nms": _vec(geom.steer_damping_nms),
        "steer_armature_kgm2": _vec(geom.steer_armature_kgm2),
        "steer_kp": _vec(geom.steer_damping_nms / params.steer_time_constant_s),
        "steer_force_max": _vec(geom.steer_damping_nms * params.steer_rate_max_radps),
        "polycoef_left": _vec(*poly_l),
        "polycoef_right": _vec(*poly_r),
        "drive_kv": _vec(drive_gain),
        "drive_ctrl_max": _vec(params.accel_max_mps2 / r),
        "drive_force_max": _vec(geom.drive_torque_margin * total_inertia * params.accel_max_mps2 * r),
        "wheel_speed_min_radps": _vec(params.v_min_mps / r),
        "wheel_speed_max_radps": _vec(params.v_max_mps / r),
        **suspension_values(params, geom),
    }


def mjcf_template_path() -> Path:
    return share_dir() / "sim" / MJCF_TEMPLATE


def build_mjcf(params: VehicleParams, track=None, geom: CarGeometry | None = None, template: str | None = None) -> str:
    """The car's MJCF text: the template filled from the vehicle YAML, plus track bounds when given."""
    geom = geom or CarGeometry()
    if template is None:
        path = mjcf_template_path()
        if not path.is_file():
            raise MbrlError(f"MuJoCo car template not found: {path}")
        template = path.read_text()
    values = mjcf_values(params, geom)
    values["track_geoms"] = track_bound_geoms(track, geom.bound_tolerance_m) if track is not None else ""
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise MbrlError(f"MuJoCo car template: bad or unknown placeholder {exc}") from None


# --------------------------------------------------------------------------- the plant


def constrained_accel(v_mps: float, accel_cmd_mps2: float, params: VehicleParams) -> float:
    """CommonRoad acceleration constraints for one scalar command: the achieved acceleration of the
    vehicle models' own definition (:func:`~mbrl_control.models.actuation.drive_acceleration`)."""
    return float(drive_acceleration(numpy_ops, v_mps, accel_cmd_mps2, params)[0])


def brake_front_share(v_mps: float, accel_mps2: float, params: VehicleParams) -> float:
    """Share of the wheel torque on the front axle: 0 when driving; when braking (``a v < 0``) the
    front axle's share of the load under that deceleration (an ideal brake balance)."""
    if accel_mps2 * v_mps >= 0.0:
        return 0.0
    decel = abs(accel_mps2)
    share = (GRAVITY_MPS2 * params.lr_m + decel * params.cg_height_m) / (GRAVITY_MPS2 * params.wheelbase_m)
    return min(max(share, 0.0), 1.0)


class MujocoPlant(Plant):
    """The MuJoCo Ackermann car behind the :class:`Plant` interface (headless, no global state)."""

    name = "mujoco"

    def __init__(self, params: VehicleParams, config: PlantConfig | None = None, track=None,
                 geometry: CarGeometry | None = None) -> None:
        super().__init__(params, config)
        self.geometry = geometry or CarGeometry()
        self.mjcf = build_mjcf(params, track, self.geometry)
        try:
            self.model = mujoco.MjModel.from_xml_string(self.mjcf)
        except ValueError as exc:
            raise MbrlError(f"MuJoCo could not load the car model: {exc}") from None
        self.data = mujoco.MjData(self.model)
        self._ids()
        self._drive_mass_kg = drive_inertia_kg(params, self.geometry)
        self._rest_z_m, self._rest_tilt, self._rest_susp, self._rolling_radius_m = self._settle()
        self._radius_m = 0.5 * (self._rolling_radius_m["rl"] + self._rolling_radius_m["rr"])  # driven axle
        self._yaw_ref = 0.0
        self._cached: np.ndarray | None = None
        self._sim_target_s = 0.0
        self.reset(np.zeros(len(S)))

    def _ids(self) -> None:
        m = self.model
        name = lambda kind, n: mujoco.mj_name2id(m, kind, n)  # noqa: E731
        self._chassis = name(mujoco.mjtObj.mjOBJ_BODY, "chassis")
        jadr = lambda n: int(m.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, n)])  # noqa: E731
        vadr = lambda n: int(m.jnt_dofadr[name(mujoco.mjtObj.mjOBJ_JOINT, n)])  # noqa: E731
        self._q_free, self._v_free = jadr("chassis"), vadr("chassis")
        self._q_steer = jadr("steer")
        self._q_knuckle = (jadr("steer_fl"), jadr("steer_fr"))
        self._q_susp = np.array([jadr(f"susp_{w}") for w in WHEELS])
        self._v_spin = {w: vadr(f"spin_{w}") for w in WHEELS}
        act = lambda n: name(mujoco.mjtObj.mjOBJ_ACTUATOR, n)  # noqa: E731
        self._a_steer, self._a_speed, self._a_ff = act("steer_servo"), act("drive_speed"), act("drive_feedforward")
        self._a_brake_front = act("brake_front")
        self._pairs = np.array([name(mujoco.mjtObj.mjOBJ_PAIR, f"tyre_{w}") for w in WHEELS])
        self._act_speed = int(m.actuator_actadr[self._a_speed])
        eq = lambda n: m.eq_data[name(mujoco.mjtObj.mjOBJ_EQUALITY, n)][:5].copy()  # noqa: E731
        self._poly = (eq("ackermann_fl"), eq("ackermann_fr"))

    def _settle(self) -> tuple[float, np.ndarray, np.ndarray, dict[str, float]]:
        """Drop the car once onto its tyres (at rest, wheels straight), then roll it once.

        Returns the chassis' rest height and pitch/roll, the suspension positions, and each wheel's
        effective rolling radius: the soft contact lets the tyre sink a little, so the car moves
        ``omega * r_eff`` per radian of wheel turn with ``r_eff`` slightly below the geometric
        radius; it is measured as car speed / wheel speed after rolling freely for a moment.
        """
        m, d, geom = self.model, self.data, self.geometry
        mujoco.mj_resetData(m, d)
        mujoco.mj_step(m, d, nstep=max(1, int(round(geom.settle_s / m.opt.timestep))))
        z = float(d.qpos[self._q_free + 2])
        quat = d.qpos[self._q_free + 3 : self._q_free + 7].copy()
        tilt = _quat_mul(_yaw_quat(-_quat_yaw(quat)), quat)
        suspension = d.qpos[self._q_susp].copy()
        self._tyre_inv_mass = self._tyre_inverse_mass()
        speed = ROLLING_CALIBRATION_SPEED_MPS
        d.qvel[self._v_free] = speed
        for w in WHEELS:
            d.qvel[self._v_spin[w]] = speed / d.xpos[m.body(f"wheel_{w}").id][2]
        d.act[self._act_speed] = d.qvel[self._v_spin["rl"]]
        mujoco.mj_step(m, d, nstep=max(1, int(round(ROLLING_CALIBRATION_S / m.opt.timestep))))
        radius = {w: float(d.qvel[self._v_free] / d.qvel[self._v_spin[w]]) for w in WHEELS}
        return z, tilt / np.linalg.norm(tilt), suspension, radius

    def _tyre_inverse_mass(self) -> np.ndarray:
        """Per tyre, the mean diagonal of the constraint-space inverse inertia of its friction rows (at rest)."""
        m, d = self.model, self.data
        mujoco.mj_forward(m, d)
        inv_mass = np.zeros(len(WHEELS))
        for i in range(d.ncon):
            contact = d.contact[i]
            wheel = WHEELS.index(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, contact.geom2)[len("wheel_"):])
            inv_mass[wheel] = float(np.mean(d.efc_diagA[contact.efc_address + 1 : contact.efc_address + 3]))
        if np.any(inv_mass <= 0):
            raise RuntimeError("MuJoCo car: a wheel is not touching the ground after settling")
        return inv_mass

    def _set_tyre_damping(self, v_mps: float, accel_mps2: float) -> None:
        """Friction damping of each tyre so that its lateral force is ``C_alpha * slip angle``.

        ``C_alpha = C_S * mu * F_z`` per wheel, with the single-track model's axle loads under
        ``accel_mps2``; a slip angle ``alpha = v_lateral / v`` then needs the damping
        ``C_alpha / v`` (force per slip velocity), floored at the kinematic blend speed.
        """
        if not self.geometry.tyre_slip:
            return
        p = self.params
        g, h, lwb, mu = GRAVITY_MPS2, p.cg_height_m, p.wheelbase_m, p.friction_coeff
        load_front = max(0.5 * p.mass_kg * (g * p.lr_m - accel_mps2 * h) / lwb, 0.0)
        load_rear = max(0.5 * p.mass_kg * (g * p.lf_m + accel_mps2 * h) / lwb, 0.0)
        c_front = p.cornering_stiffness_front * mu * load_front
        c_rear = p.cornering_stiffness_rear * mu * load_rear
        speed = max(abs(v_mps), p.kinematic_blend_high_mps)
        stiffness = np.array([c_front, c_front, c_rear, c_rear]) / speed
        damping = self.geometry.tyre_damping_gain * stiffness * self._tyre_inv_mass
        self.model.pair_solreffriction[self._pairs, 0] = 0.0
        self.model.pair_solreffriction[self._pairs, 1] = -np.maximum(damping, 1e-6)

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> np.ndarray:
        if self._cached is None:
            self._cached = self._read_state()
        return self._cached.copy()

    def _read_state(self) -> np.ndarray:
        d = self.data
        pos = d.xpos[self._chassis]
        rot = d.xmat[self._chassis].reshape(3, 3)
        yaw = math.atan2(rot[1, 0], rot[0, 0])
        v_world = d.qvel[self._v_free : self._v_free + 3]
        yaw_rate = float(rot[2] @ d.qvel[self._v_free + 3 : self._v_free + 6])
        c, s = math.cos(yaw), math.sin(yaw)
        vx_b = c * v_world[0] + s * v_world[1]
        vy_b = -s * v_world[0] + c * v_world[1]
        steer = bicycle_steer_from_wheels(d.qpos[self._q_knuckle[0]], d.qpos[self._q_knuckle[1]],
                                          self.params.wheelbase_m, self.params.width_m)
        return odometry_to_state(float(pos[0]), float(pos[1]), yaw, vx_b, vy_b, yaw_rate, steer, yaw_ref_rad=self._yaw_ref)

    def reset(self, state: np.ndarray) -> None:
        """Place the car at ``state`` (7,), rolling without tyre slip, servo and speed loop at rest there."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (len(S),) or not np.all(np.isfinite(state)):
            raise MbrlError(f"mujoco plant: reset state must be 7 finite numbers, got {state!r}")
        m, d, p = self.model, self.data, self.params
        mujoco.mj_resetData(m, d)
        yaw, v, slip = state[S.YAW], state[S.V], state[S.SLIP]
        steer = float(np.clip(state[S.STEER], p.steer_min_rad, p.steer_max_rad))
        q = self._q_free
        d.qpos[q : q + 3] = (state[S.X], state[S.Y], self._rest_z_m)
        quat = _quat_mul(_yaw_quat(yaw), self._rest_tilt)
        d.qpos[q + 3 : q + 7] = quat
        d.qpos[self._q_steer] = steer
        d.qpos[self._q_susp] = self._rest_susp
        for adr, poly in zip(self._q_knuckle, self._poly):
            d.qpos[adr] = np.polyval(poly[::-1], steer)
        vx_b, vy_b, yaw_rate = v * math.cos(slip), v * math.sin(slip), state[S.YAW_RATE]
        vf = self._v_free
        d.qvel[vf : vf + 3] = (v * math.cos(yaw + slip), v * math.sin(yaw + slip), 0.0)
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        d.qvel[vf + 3 : vf + 6] = rot.reshape(3, 3).T @ np.array([0.0, 0.0, yaw_rate])
        self._set_wheel_spin(vx_b, vy_b, yaw_rate, steer)
        d.act[self._act_speed] = vx_b / self._radius_m
        d.ctrl[:] = 0.0
        d.ctrl[self._a_steer] = steer
        mujoco.mj_forward(m, d)
        self._yaw_ref = float(yaw)
        self._cached = None
        self._sim_target_s = 0.0
        self._applied = np.zeros(CONTROL_DIM)
        self._pending.clear()
        self.time_s = 0.0

    def _set_wheel_spin(self, vx_b: float, vy_b: float, yaw_rate: float, steer: float) -> None:
        """Wheel speeds of rolling without slip for a planar chassis motion."""
        p = self.params
        half = 0.5 * p.width_m
        left, right = ackermann_wheel_angles(steer, p.wheelbase_m, p.width_m)
        wheels = {"fl": (p.lf_m, half, float(left)), "fr": (p.lf_m, -half, float(right)),
                  "rl": (-p.lr_m, half, 0.0), "rr": (-p.lr_m, -half, 0.0)}
        for key, (x, y, angle) in wheels.items():
            vx, vy = vx_b - yaw_rate * y, vy_b + yaw_rate * x
            self.data.qvel[self._v_spin[key]] = (vx * math.cos(angle) + vy * math.sin(angle)) / self._rolling_radius_m[key]

    # -- dynamics ----------------------------------------------------------------------------

    def _integrate(self, control: np.ndarray, duration_s: float) -> None:
        """Hold ``control`` for ``duration_s``: set servo, feed-forward and speed-loop inputs, step MuJoCo in C."""
        m, d, p = self.model, self.data, self.params
        now = self.state
        v = float(now[S.V])
        r = self._radius_m
        if not np.all(np.isfinite(control)):  # the runner guards commands; a direct caller might not
            control = safe_stop_command(now, p, max(duration_s, 1e-3))
        a = constrained_accel(v, float(control[U.ACCEL]), p)
        d.ctrl[self._a_steer] = float(np.clip(control[U.STEER_CMD], p.steer_min_rad, p.steer_max_rad))
        d.ctrl[self._a_speed] = a / r
        torque = self._drive_mass_kg * a * r
        front = brake_front_share(v, a, p) * torque
        d.ctrl[self._a_ff] = torque - front
        d.ctrl[self._a_brake_front] = front
        self._set_tyre_damping(v, a)
        vx_b = v * math.cos(float(now[S.SLIP]))
        band = self.geometry.drive_windup_band_mps / r
        d.act[self._act_speed] = float(np.clip(d.act[self._act_speed], vx_b / r - band, vx_b / r + band))
        self._apply_drag(v)
        self._sim_target_s += duration_s
        steps = int(round((self._sim_target_s - d.time) / m.opt.timestep))
        if steps > 0:
            mujoco.mj_step(m, d, nstep=steps)
            if d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0:
                raise RuntimeError(f"MuJoCo car diverged at t={d.time:.3f} s (bad accelerations); simulation state reset")
        self._cached = None
        self._yaw_ref = float(self.state[S.YAW])

    def _apply_drag(self, v_mps: float) -> None:
        """Quadratic aerodynamic drag of the YAML (``dv/dt = -drag v |v|``) as a force at the CoG."""
        vf = self._v_free
        vel = self.data.qvel[vf : vf + 2]
        force = -self.params.mass_kg * self.params.drag_coeff_per_m * abs(v_mps) * vel
        self.data.xfrc_applied[self._chassis, :2] = force


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(0.5 * yaw), 0.0, 0.0, math.sin(0.5 * yaw)])


def _quat_yaw(q: np.ndarray) -> float:
    """Yaw of a MuJoCo quaternion (w, x, y, z)."""
    w, x, y, z = q
    return quaternion_to_yaw(x, y, z, w)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out
