"""The generated MPPI kernels against the torch backend: the car problem in every configuration the
racing controller builds (dynamic / kinematic, RK4 / Euler, with and without a 2x32 residual), and a
model with an odd number of controls (the noise pairs of the generalised stream)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mbrl_control.config import load_vehicle_params
from mbrl_control.control.mppi import MPPIConfig, kernel_model, racing_problem, racing_sampling
from mbrl_control.control.mppi_solver import (NumbaBackend, PredictionModel, SamplingSettings, SolverConfig,
                                              TorchBackend, normal_noise_torch)
from mbrl_control.kernels.noise import normal_pairs_torch
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
from mbrl_control.models.motion_model import MotionModel, Quantity
from mbrl_control.models.residual import ResidualEnsemble
from mbrl_control.models.semiparametric import SemiParametricModel
from mbrl_control.problem.cost_term import CostTerm, Weight
from mbrl_control.problem.definition import ControlProblem, CostSpec
from mbrl_control.problem.track_context import TrackTable
from mbrl_control.sim.plant import initial_state_at
from mbrl_control.track import resolve_track

PARAMS = load_vehicle_params()
DT = 0.02


@pytest.fixture(scope="module")
def track_table():
    track = resolve_track("default")
    return track, TrackTable(track, 0.2)


def _model(kind: str, integrator: str, substeps: int, residual: bool):
    cls = DynamicSingleTrack if kind == "dynamic" else KinematicBicycle
    physics = cls(PARAMS, dt_s=DT, integrator=integrator, substeps=substeps, dtype=torch.float32)
    if not residual:
        return physics
    ens = ResidualEnsemble(2, (32, 32), seed=1)
    with torch.no_grad():  # a residual large enough to matter over the horizon
        ens.weights[-1].mul_(3.0)
    ens.set_normalisation([0.0, 3.0, 0.0, 0.0, 0.0, 0.0], [0.2, 2.0, 1.0, 0.1, 0.2, 3.0], [0.0, 0.0, 0.0],
                          [0.05, 0.1, 0.01])
    return SemiParametricModel(physics, ens).float()


@pytest.mark.parametrize("residual", [False, True], ids=["physics", "residual2x32"])
@pytest.mark.parametrize("integrator,substeps", [("rk4", 1), ("euler", 2)])
@pytest.mark.parametrize("kind", ["dynamic", "kinematic"])
def test_generated_kernel_agrees_with_the_torch_backend(track_table, kind, integrator, substeps, residual):
    track, table = track_table
    model = _model(kind, integrator, substeps, residual)
    cfg = MPPIConfig(samples=300, horizon=30, noise_alpha=0.6, temperature=2.0)
    problem, sampling = racing_problem(model, table, cfg.cost_config()), racing_sampling(cfg, PARAMS)
    numba_backend = NumbaBackend(problem, sampling, kernel_model(model))
    torch_backend = TorchBackend(problem, sampling, kernel_model(model))
    x, y, yaw = track.start_pose()
    x0 = initial_state_at(x, y, yaw, 5.0, PARAMS).astype(np.float32)
    u_prev = np.array([0.02, 1.0], dtype=np.float32)
    U_a = np.tile(np.array([[0.05, 2.0]], dtype=np.float32), (cfg.horizon, 1))
    U_b = U_a.copy()
    best_a, ess_a = numba_backend.iterate(x0, u_prev, U_a, key=4711)
    best_b, ess_b = torch_backend.iterate(x0, u_prev, U_b, key=4711)
    assert best_a == pytest.approx(best_b, rel=1e-4, abs=1e-3)
    assert ess_a == pytest.approx(ess_b, rel=1e-3)
    assert 1.0 < ess_a < cfg.samples
    assert np.linalg.norm(U_a - U_b) <= 1e-4 * np.linalg.norm(U_b)
    states = numba_backend.nominal_states(x0, U_a)
    with torch.no_grad():
        member = torch.zeros((), dtype=torch.long)
        args = (member,) if residual else ()
        ref = model.rollout(torch.tensor(x0), torch.tensor(U_a), *args).numpy()
    assert np.max(np.abs(states - ref)) < 1e-3  # the serial rollout (plan, candidates): member 0


@dataclass(frozen=True)
class OmniParams:
    speed_max_mps: float = 2.0
    yaw_rate_max_radps: float = 1.5


class Omni(MotionModel):
    """A holonomic robot with three commanded velocities: the noise of an odd number of controls."""

    name = "omni"
    states = (Quantity("x", "m"), Quantity("y", "m"), Quantity("yaw", "rad"))
    controls = (Quantity("vx", "m/s"), Quantity("vy", "m/s"), Quantity("yaw_rate", "rad/s"))
    param_names = ("speed_max_mps", "yaw_rate_max_radps")

    @staticmethod
    def derivative(m, x, u, p):
        s, c = m.sin_cos(x.yaw)
        return c * u.vx - s * u.vy, s * u.vx + c * u.vy, u.yaw_rate

    @classmethod
    def control_bounds(cls, params):
        top = np.array([params.speed_max_mps, params.speed_max_mps, params.yaw_rate_max_radps])
        return -top, top

    @classmethod
    def safe_stop(cls, state, params):
        return np.zeros(3)


class PoseCost(CostTerm):
    """Squared distance to a pose, plus squared control changes (reads ``u_prev``)."""

    name = "pose"
    weights = (Weight("x", "m", 1.0), Weight("y", "m", -1.0), Weight("yaw", "rad", 0.5), Weight("rate", "1", 0.1))
    requires_states = ("x", "y", "yaw")

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        dx, dy, dyaw = x.x - w.x, x.y - w.y, x.yaw - w.yaw
        du = (u.vx - u_prev.vx) ** 2 + (u.vy - u_prev.vy) ** 2 + (u.yaw_rate - u_prev.yaw_rate) ** 2
        return dx * dx + dy * dy + dyaw * dyaw + w.rate * du, ()


def test_three_controls_draw_the_generalised_noise_stream_and_agree_with_torch():
    noise = normal_noise_torch(77, 5, 4, 3, "cpu")  # pair j of step t is counter t * 2 + j
    pairs = normal_pairs_torch(77, 5, 8)
    torch.testing.assert_close(noise[:, 2, :2], pairs[:, 4])
    torch.testing.assert_close(noise[:, 2, 2], pairs[:, 5, 0])
    problem = ControlProblem(Omni, (CostSpec(PoseCost, PoseCost.weight_vector()),), dt_s=0.1)
    config = SolverConfig(samples=100, horizon=12, sigma=(0.5, 0.5, 0.4), temperature=0.3, noise_alpha=0.3)
    sampling = SamplingSettings(config, *Omni.control_bounds(OmniParams()))
    x0 = np.zeros(3, dtype=np.float32)
    u_prev = np.zeros(3, dtype=np.float32)
    results = []
    for cls in (NumbaBackend, TorchBackend):
        U = np.zeros((12, 3), dtype=np.float32)
        results.append((*cls(problem, sampling, PredictionModel(OmniParams())).iterate(x0, u_prev, U, 5), U))
    (best_a, ess_a, U_a), (best_b, ess_b, U_b) = results
    assert best_a == pytest.approx(best_b, rel=1e-4, abs=1e-4) and ess_a == pytest.approx(ess_b, rel=1e-3)
    assert np.linalg.norm(U_a - U_b) <= 1e-4 * np.linalg.norm(U_b) and U_a[0, 0] > 0.0 > U_a[0, 1]
