"""Kernel building blocks against independent references (NumPy float64, the torch models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from mbrl_control.config import load_vehicle_params
from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS, atan32, log_unit, sin_cos, tan32, tanh32
from mbrl_control.kernels.bundles import model_data
from mbrl_control.kernels.mppi_generated import mppi_kernels
from mbrl_control.kernels.noise import normal_pair, normal_pairs_numpy, normal_pairs_torch, stream_key
from mbrl_control.kernels.residual_mlp import MAX_HIDDEN, member_of_sample, mlp_lanes, pack_residual
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
from mbrl_control.models.residual import ResidualEnsemble, residual_features
from mbrl_control.models.semiparametric import SemiParametricModel
from mbrl_control.problem.definition import ControlProblem, NoContext

PARAMS = load_vehicle_params()


@njit(**CPU_KERNEL_OPTIONS)
def _elementary(x, out):
    for i in range(x.size):
        s, c = sin_cos(x[i])
        out[0, i] = s
        out[1, i] = c
        out[2, i] = tanh32(x[i])


@njit(**CPU_KERNEL_OPTIONS)
def _tan_atan(x, out):
    for i in range(x.size):
        out[0, i] = tan32(x[i])
        out[1, i] = atan32(x[i])


@njit(**CPU_KERNEL_OPTIONS)
def _log(u, out):
    for i in range(u.size):
        out[i] = log_unit(u[i])


@njit(**CPU_KERNEL_OPTIONS)
def _noise(key, samples, horizon, out):
    for k in range(samples):
        for t in range(horizon):
            a, b = normal_pair(key, k, t)
            out[k, t, 0] = a
            out[k, t, 1] = b


def _generated(cls, integrator="rk4", substeps=1, residual=None):
    """The generated kernels of the model of torch class ``cls`` (no cost, no context) and its model bundle."""
    problem = ControlProblem(cls.definition, (), NoContext(), 0.02, integrator, substeps)
    args = () if residual is None else (residual,)
    return mppi_kernels(problem).cpu, model_data(cls.definition.param_vector(PARAMS), integrator, 0.02, substeps, *args)


def test_elementary_functions_match_numpy_to_float32_precision():
    x = np.linspace(-60.0, 60.0, 200_001).astype(np.float32)
    out = np.zeros((3, x.size), dtype=np.float32)
    _elementary(x, out)
    xd = x.astype(np.float64)
    assert np.max(np.abs(out[0] - np.sin(xd))) < 2e-7
    assert np.max(np.abs(out[1] - np.cos(xd))) < 2e-7
    tanh = np.tanh(xd)
    assert np.max(np.abs(out[2] - tanh) / np.maximum(np.abs(tanh), 1e-30)) < 5e-7
    u = np.float32(2.0) ** -np.linspace(0.0, 30.0, 10_001).astype(np.float32)
    logs = np.zeros_like(u)
    _log(u, logs)
    assert np.max(np.abs(logs - np.log(u.astype(np.float64)))) < 3e-6  # |log| <= 21: a few ulp


def test_tan_and_atan_match_numpy_to_float32_precision():
    x = np.concatenate([np.linspace(-1.4, 1.4, 100_001), np.geomspace(1e-6, 1e8, 20_001),
                        -np.geomspace(1e-6, 1e8, 20_001), [0.0]]).astype(np.float32)
    out = np.zeros((2, x.size), dtype=np.float32)
    _tan_atan(x, out)
    xd = x.astype(np.float64)
    atan = np.arctan(xd)
    assert np.max(np.abs(out[1] - atan) / np.maximum(np.abs(atan), 1e-30)) < 3e-7  # a few ulp, all octants
    assert np.all(out[1][x == 0.0] == 0.0)
    near = np.abs(xd) <= 1.4  # tan: relative error, away from the poles
    tan = np.tan(xd[near])
    assert np.max(np.abs(out[0][near] - tan) / np.maximum(np.abs(tan), 1e-30)) < 5e-7


def test_counter_noise_is_identical_across_kernel_numpy_and_torch_and_gaussian():
    key = stream_key(seed=3, call_index=7)
    kernel = np.zeros((300, 40, 2), dtype=np.float32)
    _noise(np.uint64(key), 300, 40, kernel)
    reference = normal_pairs_numpy(key, 300, 40)
    torch_noise = normal_pairs_torch(key, 300, 40).numpy()
    assert np.max(np.abs(kernel - reference)) < 2e-5  # same uniforms; float32 transform
    assert np.max(np.abs(torch_noise - reference)) < 2e-5
    big = normal_pairs_numpy(stream_key(0, 0), 4000, 50).reshape(-1)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1.0) < 0.01
    assert abs(np.mean(big**4) - 3.0) < 0.05  # Gaussian kurtosis
    other = normal_pairs_numpy(stream_key(0, 1), 4000, 50).reshape(-1)
    assert abs(np.corrcoef(big, other)[0, 1]) < 0.01  # successive calls are independent


@pytest.mark.parametrize("cls,kind", [(DynamicSingleTrack, "dynamic"), (KinematicBicycle, "kinematic")])
def test_rk4_kernel_matches_torch_model(cls, kind):
    rng = np.random.default_rng(0)
    n = 5000
    states = np.stack([rng.uniform(-50, 50, n), rng.uniform(-50, 50, n), rng.uniform(-0.45, 0.45, n),
                       rng.uniform(-2, 12, n), rng.uniform(-20, 20, n), rng.uniform(-4, 4, n),
                       rng.uniform(-0.4, 0.4, n)], axis=1).astype(np.float32)
    controls = np.stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-12, 12, n)], axis=1).astype(np.float32)
    out = np.zeros_like(states)
    kernels, model = _generated(cls)
    kernels.model_steps(states, controls, model, out)
    model64 = cls(PARAMS, dt_s=0.02, dtype=torch.float64)
    model32 = cls(PARAMS, dt_s=0.02, dtype=torch.float32)
    ref = model64(torch.tensor(states, dtype=torch.float64), torch.tensor(controls, dtype=torch.float64)).numpy()
    torch32 = model32(torch.tensor(states), torch.tensor(controls)).numpy()
    scale = np.maximum(np.abs(ref), 1.0)
    kernel_err = np.max(np.abs(out - ref) / scale)
    torch_err = np.max(np.abs(torch32 - ref) / scale)
    assert kernel_err < 5e-6
    assert kernel_err < 4 * torch_err + 1e-7  # as close to float64 as torch's own float32 evaluation


@pytest.mark.parametrize("integrator,substeps", [("rk4", 1), ("euler", 4), ("rk4", 2)])
def test_tableau_rollout_matches_torch_rollout(integrator, substeps):
    model = DynamicSingleTrack(PARAMS, dt_s=0.02, integrator=integrator, substeps=substeps, dtype=torch.float64)
    rng = np.random.default_rng(1)
    x0 = np.array([1.0, -2.0, 0.05, 4.0, 0.3, 0.4, 0.02], dtype=np.float32)
    controls = np.stack([rng.uniform(-0.4, 0.4, 40), rng.uniform(-5, 5, 40)], axis=1).astype(np.float32)
    out = np.zeros((40, 7), dtype=np.float32)
    kernels, bundle = _generated(DynamicSingleTrack, integrator, substeps)
    kernels.nominal_rollout(x0, controls, bundle, out)
    ref = model.rollout(torch.tensor(x0, dtype=torch.float64), torch.tensor(controls, dtype=torch.float64)).numpy()
    assert np.max(np.abs(out - ref)) < 2e-4  # 40 float32 steps


def _residual(hidden=(32, 32), members=3, seed=0) -> ResidualEnsemble:
    ens = ResidualEnsemble(members, hidden, seed=seed)
    ens.set_normalisation(in_mean=[0.0, 4.0, 0.1, 0.0, 0.0, 1.0], in_std=[0.2, 3.0, 1.0, 0.1, 0.2, 4.0],
                          out_mean=[0.01, -0.02, 0.003], out_std=[0.05, 0.2, 0.01])
    return ens


@pytest.mark.parametrize("hidden", [(32, 32), (16,), (8, 12, 5)])
def test_packed_residual_lanes_match_the_ensemble(hidden):
    ens = _residual(hidden)
    pack = pack_residual(ens.export())
    rng = np.random.default_rng(2)
    feat = rng.normal(0, 1, (32, 6)).astype(np.float32) * np.array([0.2, 3, 1, 0.1, 0.2, 4], np.float32)
    for member in range(ens.members):
        out = np.zeros(3 * 32, dtype=np.float32)
        mlp_lanes(np.ascontiguousarray(feat.T).reshape(-1), out, pack.params, pack.layout, member)
        with torch.no_grad():
            ref = ens.member_means(torch.tensor(feat, dtype=torch.float32))[member].numpy()
        assert np.max(np.abs(out.reshape(3, 32).T - ref)) < 1e-5


def test_residual_pack_rejects_what_kernels_cannot_run():
    with pytest.raises(ValueError, match="wider"):
        pack_residual(ResidualEnsemble(2, (MAX_HIDDEN + 1,)).export())
    weights = ResidualEnsemble(2, (8,)).export()
    weights.activation = "relu"
    with pytest.raises(ValueError, match="tanh"):
        pack_residual(weights)
    assert list(member_of_sample(70, 2)) == [0] * 32 + [1] * 32 + [0] * 6


def test_semiparametric_nominal_rollout_matches_member_zero():
    physics = DynamicSingleTrack(PARAMS, dt_s=0.02, dtype=torch.float64)
    model = SemiParametricModel(physics, _residual((16, 16), members=2).double()).double()
    from mbrl_control.control.mppi import kernel_model

    desc = kernel_model(model)
    x0 = np.array([0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0], dtype=np.float32)
    controls = np.tile(np.array([[0.1, 1.0]], dtype=np.float32), (25, 1))
    out = np.zeros((25, 7), dtype=np.float32)
    kernels, bundle = _generated(DynamicSingleTrack, residual=desc.residual)
    kernels.nominal_rollout(x0, controls, bundle, out)
    member = torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        ref = model.rollout(torch.tensor(x0, dtype=torch.float64), torch.tensor(controls, dtype=torch.float64), member).numpy()
    assert np.max(np.abs(out - ref)) < 1e-4
    features = residual_features(torch.tensor(x0, dtype=torch.float64), torch.tensor(controls[0], dtype=torch.float64))
    assert features.shape == (6,)
