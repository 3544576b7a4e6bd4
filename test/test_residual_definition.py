"""The residual MLP's one definition (models/residual_definition.py) and everything tied to it:
its torch, CasADi and NumPy forms agree; the hand-specialised Numba executors (MPPI's
``mlp_lanes`` / ``mlp_thread``, iLQR's closed-form ``residual_eval``) match it in value, and
iLQR's Jacobian and multiplier-weighted Hessian match torch autograd of the definition."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest
import torch
from numba import njit

from mbrl_control import ops
from mbrl_control.kernels import numba_ops
from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS
from mbrl_control.kernels.residual_mlp import LANES, MAX_HIDDEN, OUTPUTS, mlp_lanes, mlp_thread, pack_residual
from mbrl_control.models import residual_definition as rd
from mbrl_control.models.layout import RESIDUAL_INPUT_STATES
from mbrl_control.models.residual import FEATURE_DIM, ResidualEnsemble
from mbrl_control.ops import casadi_ops, numpy_ops, torch_ops

FEATURE_SCALE = np.array([0.2, 3.0, 1.0, 0.1, 0.2, 4.0])


def _ensemble(members=3, hidden=(8, 5), seed=3, dtype=torch.float64) -> ResidualEnsemble:
    ens = ResidualEnsemble(members, hidden, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # corrections large enough to matter
        for w in ens.weights:
            w.mul_(2.0)
    ens.set_normalisation(rng.normal(size=6) * 0.1 * FEATURE_SCALE, rng.uniform(0.5, 2.0, 6) * FEATURE_SCALE,
                          rng.normal(size=3) * 0.01, rng.uniform(0.01, 0.1, 3))
    return ens


def _numpy_net(ens: ResidualEnsemble):
    """The definition's record in float64 NumPy (of the float32 export: what the kernels read)."""
    w = ens.export()
    f = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return rd.network([f(a) for a in w.weights], [f(a) for a in w.biases], f(w.in_mean), f(w.in_std),
                      f(w.out_mean), f(w.out_std), w.min_logvar, w.max_logvar)


def test_every_backend_defines_the_vocabulary():
    for backend in (torch_ops, casadi_ops, numpy_ops, numba_ops):
        assert all(callable(getattr(backend, name, None)) for name in ops.VOCABULARY), backend.__name__
    for backend in (torch_ops, casadi_ops, numpy_ops):
        assert all(callable(getattr(backend, name, None)) for name in ops.NETWORK_VOCABULARY), backend.__name__


def test_torch_casadi_and_numpy_forms_of_the_definition_agree():
    ens = _ensemble()
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(7, FEATURE_DIM)) * FEATURE_SCALE * 2
    with torch.no_grad():
        t_means = ens.member_means(torch.as_tensor(feats)).numpy()  # (E, B, 3)
        t_mean = ens(torch.as_tensor(feats)).numpy()
        t_mu, t_lv = (a.numpy() for a in ens.normalised_outputs(torch.as_tensor(feats)))
    np.testing.assert_allclose(t_mean, t_means.mean(0), rtol=1e-12, atol=1e-14)
    # NumPy float64 form
    to_np = lambda t: t.detach().numpy()  # noqa: E731
    np_net = rd.network([to_np(w) for w in ens.weights], [to_np(b) for b in ens.biases], to_np(ens.in_mean),
                        to_np(ens.in_std), to_np(ens.out_mean), to_np(ens.out_std), float(ens.min_logvar),
                        float(ens.max_logvar))
    np.testing.assert_allclose(rd.member_means(numpy_ops, np_net, feats[None]), t_means, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rd.ensemble_mean(numpy_ops, np_net, feats[None]), t_mean, rtol=1e-12, atol=1e-14)
    mu, lv = rd.member_outputs(numpy_ops, np_net, feats[None])
    np.testing.assert_allclose(mu, t_mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lv, t_lv, rtol=1e-12, atol=1e-12)
    # CasADi form (one column of features, members as columns), symbolic then evaluated
    f = ca.SX.sym("f", FEATURE_DIM)
    ca_net = rd.network(np_net.weights, np_net.biases, *(ca.DM(a) for a in np_net[2:6]), np_net.min_logvar,
                        np_net.max_logvar)
    mu_s, lv_s = rd.member_outputs(casadi_ops, ca_net, f)
    fun = ca.Function("r", [f], [rd.ensemble_mean(casadi_ops, ca_net, f), mu_s, lv_s])
    for b in range(len(feats)):
        mean_b, mu_b, lv_b = (np.asarray(v) for v in fun(feats[b]))
        np.testing.assert_allclose(mean_b.ravel(), t_mean[b], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mu_b.T, t_mu[:, b], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lv_b.T, t_lv[:, b], rtol=1e-12, atol=1e-12)


@njit(**CPU_KERNEL_OPTIONS)
def _thread_outputs(feat, params, layout, member, out):
    h_a = np.zeros(MAX_HIDDEN, dtype=np.float32)
    h_b = np.zeros(MAX_HIDDEN, dtype=np.float32)
    for k in range(feat.shape[0]):
        r = mlp_thread(feat[k], h_a, h_b, params, layout, member)
        for j in range(OUTPUTS):
            out[k, j] = r[j]


@pytest.mark.parametrize("hidden", [(32, 32), (5,), (12, 20, 7)])
def test_numba_executors_match_the_definition(hidden):
    """MPPI's packed kernels (normalisation folded into the layers, padded row groups, float32,
    polynomial tanh) against the definition in float64 on the same float32 weights."""
    ens = _ensemble(members=3, hidden=hidden, seed=5, dtype=torch.float32)
    net = _numpy_net(ens)
    pack = pack_residual(ens.export())
    rng = np.random.default_rng(1)
    feat = (rng.normal(size=(LANES, FEATURE_DIM)) * FEATURE_SCALE * 2).astype(np.float32)
    ref = rd.member_means(numpy_ops, net, feat.astype(np.float64)[None])  # (E, LANES, 3)
    scale = np.abs(ref).max()
    assert scale > 1e-2  # a correction that matters
    for member in range(ens.members):
        lanes = np.zeros(OUTPUTS * LANES, dtype=np.float32)
        mlp_lanes(np.ascontiguousarray(feat.T).reshape(-1), lanes, pack.params, pack.layout, member)
        threads = np.zeros((LANES, OUTPUTS), dtype=np.float32)
        _thread_outputs(feat, pack.params, pack.layout, member, threads)
        np.testing.assert_allclose(lanes.reshape(OUTPUTS, LANES).T, ref[member], rtol=0, atol=2e-6 * max(scale, 1))
        np.testing.assert_allclose(threads, ref[member], rtol=0, atol=2e-6 * max(scale, 1))


def _ilqr_problem(ens: ResidualEnsemble):
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.ilqr import ILQRConfig, model_description, track_spline
    from mbrl_control.kernels import ilqr_vehicle as kv
    from mbrl_control.models.bicycle import DynamicSingleTrack
    from mbrl_control.models.semiparametric import SemiParametricModel
    from mbrl_control.track import Track

    params = load_vehicle_params()
    model = SemiParametricModel(DynamicSingleTrack(params, dt_s=0.02, dtype=torch.float64), ens).double()
    kind, pvec, dt, sub, rk4, res = model_description(model)
    a = np.linspace(0, 2 * np.pi, 100, endpoint=False)
    track = Track("circle", np.stack([20 * np.cos(a), 20 * np.sin(a)], axis=1), np.full(100, 1.1), np.full(100, 1.1))
    cfg = ILQRConfig()
    spline = track_spline(track, cfg.cost_config())
    return kv, kv.make_vehicle_problem(kind, pvec, dt, sub, rk4, 4, cfg.weight_vector(params, dt), spline, res)


def test_ilqr_closed_form_residual_derivatives_match_autograd_of_the_definition():
    ens = _ensemble(members=3, hidden=(8, 5), seed=7)
    kv, prob = _ilqr_problem(ens)
    net = ens.network()
    features_index = list(RESIDUAL_INPUT_STATES) + [7, 8]  # w = (x, u)

    def correction(w):  # the definition (torch ops) as a function of w = (x, u)
        return rd.ensemble_mean(torch_ops, net, w[features_index][None, None])[0]

    rng = np.random.default_rng(3)
    for _ in range(5):
        x = np.array([*rng.normal(size=2), rng.uniform(-0.35, 0.35), rng.uniform(0.5, 10), rng.uniform(-3, 3),
                      rng.normal() * 0.5, rng.normal() * 0.05])
        u = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-8, 8)])
        lam = rng.normal(size=3)
        w = torch.tensor(np.concatenate([x, u]))
        value = correction(w).detach().numpy()
        jac_ref = torch.autograd.functional.jacobian(correction, w).numpy()
        hess_ref = torch.autograd.functional.hessian(lambda v: correction(v) @ torch.as_tensor(lam), w).numpy()
        assert np.abs(jac_ref).max() > 1e-3 and np.abs(hess_ref).max() > 1e-4  # not trivially zero
        for order in (0, 1, 2):
            out, jac, hess = np.zeros(3), np.zeros((3, 9)), np.zeros((9, 9))
            kv.residual_eval(prob, x, u, order, out, jac, lam, hess)
            np.testing.assert_allclose(out, value, rtol=1e-12, atol=1e-14)
            if order >= 1:  # order 1: reverse sweep; order 2: forward tangents
                np.testing.assert_allclose(jac, jac_ref, rtol=1e-10, atol=1e-13)
            if order == 2:
                np.testing.assert_allclose(hess, hess_ref, rtol=1e-9, atol=1e-12)
        # and against central finite differences of the definition (independent of autograd)
        eps = 1e-6
        fd = np.stack([(correction(w + eps * e) - correction(w - eps * e)).detach().numpy() / (2 * eps)
                       for e in torch.eye(9, dtype=torch.float64)], axis=1)
        np.testing.assert_allclose(jac_ref, fd, rtol=1e-5, atol=1e-8)


def test_nmpc_casadi_step_with_residual_equals_the_torch_model():
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.nmpc import casadi_model_step
    from mbrl_control.models.bicycle import DynamicSingleTrack
    from mbrl_control.models.semiparametric import SemiParametricModel

    physics = DynamicSingleTrack(load_vehicle_params(), dt_s=0.02, dtype=torch.float64)
    model = SemiParametricModel(physics, _ensemble(members=4, hidden=(16, 8), seed=2)).double()
    step = casadi_model_step(model)
    rng = np.random.default_rng(8)
    for v in (0.3, 3.0, 9.0):
        x = np.array([1.0, -2.0, rng.uniform(-0.3, 0.3), v, 0.4, rng.normal() * 0.3, rng.normal() * 0.05])
        u = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-9, 9)])
        with torch.no_grad():
            ref = model(torch.tensor(x), torch.tensor(u)).numpy()
            assert np.abs(ref - physics(torch.tensor(x), torch.tensor(u)).numpy()).max() > 1e-3  # residual matters
        np.testing.assert_allclose(np.asarray(step(x, u)).ravel(), ref, rtol=1e-12, atol=1e-12)
