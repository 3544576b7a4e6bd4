"""ResidualEnsemble: shapes, member selection, bounded log-variance, export vs an independent numpy MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control.models.layout import CONTROL_DIM, RESIDUAL_INPUT_STATES, STATE_DIM, S, U
from mbrl_control.models.residual import FEATURE_DIM, RESIDUAL_FEATURES, ResidualEnsemble, residual_features


def _ensemble(members: int = 4, hidden=(8, 5), seed: int = 1, dtype=torch.float64) -> ResidualEnsemble:
    ens = ResidualEnsemble(members, hidden, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    ens.set_normalisation(rng.normal(size=6), rng.uniform(0.5, 2, 6), rng.normal(size=3) * 0.1, rng.uniform(0.01, 0.1, 3))
    return ens


def _reference_mlp(ens: ResidualEnsemble, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Member means and log-variances with plain numpy loops (one member, one layer at a time)."""
    means, logvars = [], []
    lo, hi = float(ens.min_logvar), float(ens.max_logvar)
    softplus = lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)  # noqa: E731
    for e in range(ens.members):
        h = (x - ens.in_mean.numpy()) / ens.in_std.numpy()
        for i, (w, b) in enumerate(zip(ens.weights, ens.biases)):
            h = h @ w[e].detach().numpy().T + b[e].detach().numpy()
            if i < len(ens.weights) - 1:
                h = np.tanh(h)
        means.append(ens.out_mean.numpy() + ens.out_std.numpy() * h[:, :3])
        lv = hi - softplus(hi - h[:, 3:])
        logvars.append(lo + softplus(lv - lo))
    return np.stack(means), np.stack(logvars)


def test_features_follow_the_layout() -> None:
    assert RESIDUAL_FEATURES == ("steer", "v", "yaw_rate", "slip", "steer_cmd", "accel")
    s = torch.arange(STATE_DIM, dtype=torch.float64).expand(3, STATE_DIM)
    u = torch.tensor([10.0, 20.0], dtype=torch.float64)  # broadcast over the batch
    f = residual_features(s, u)
    assert f.shape == (3, FEATURE_DIM)
    assert f[0, :4].tolist() == [float(i) for i in RESIDUAL_INPUT_STATES]
    assert f[0, 4].item() == 10.0 and f[0, 5].item() == 20.0
    assert RESIDUAL_INPUT_STATES == (S.STEER, S.V, S.YAW_RATE, S.SLIP) and (U.STEER_CMD, U.ACCEL) == (0, 1)


def test_forward_matches_numpy_reference_and_export() -> None:
    ens = _ensemble()
    x = np.random.default_rng(0).normal(size=(17, FEATURE_DIM)) * 2
    means, logvars = _reference_mlp(ens, x)
    xt = torch.as_tensor(x)
    got = ens.member_means(xt).detach().numpy()
    np.testing.assert_allclose(got, means, rtol=1e-12, atol=1e-12)
    _, lv = ens.normalised_outputs(xt)
    np.testing.assert_allclose(lv.detach().numpy(), logvars, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ens(xt).detach().numpy(), means.mean(0), rtol=1e-12, atol=1e-12)
    w = ens.export()
    assert w.activation == "tanh" and w.members == ens.members
    assert all(a.dtype == np.float32 for a in [*w.weights, *w.biases, w.in_mean, w.in_std, w.out_mean, w.out_std])
    assert [a.shape for a in w.weights] == [(4, 8, 6), (4, 5, 8), (4, 6, 5)]
    assert [a.shape for a in w.biases] == [(4, 8), (4, 5), (4, 6)]
    assert w.in_mean.shape == (6,) and w.in_std.shape == (6,) and w.out_mean.shape == (3,) and w.out_std.shape == (3,)
    np.testing.assert_allclose(w.mean_numpy(x), means, rtol=1e-4, atol=1e-5)  # float32 weights


def test_log_variance_is_softly_bounded() -> None:
    ens = _ensemble()
    with torch.no_grad():
        ens.weights[-1].mul_(1e3)  # drive the raw outputs far outside the bounds
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(50, FEATURE_DIM)) * 5)
    _, lv = ens.normalised_outputs(x)
    # soft bounds: exceeded at most by softplus tails, log(1 + exp(-(max - min))) ~ 6e-6 here
    assert torch.all(lv >= ens.min_logvar - 1e-4) and torch.all(lv <= ens.max_logvar + 1e-4)
    assert torch.all(torch.isfinite(lv))


def test_member_selection_broadcasts_and_matches_gather() -> None:
    ens = _ensemble(members=3)
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(5, 4, FEATURE_DIM)))
    all_members = ens.member_means(x)
    member = torch.tensor([[0], [1], [2], [1], [0]])  # per row, broadcast over the second dim
    got = ens(x, member)
    for i in range(5):
        torch.testing.assert_close(got[i], all_members[member[i, 0], i])
    torch.testing.assert_close(ens(x, torch.tensor(2)), all_members[2])
    with pytest.raises(ValueError):
        ens(x, torch.tensor(3))


def test_spread_and_zero() -> None:
    ens = _ensemble(members=3)
    x = torch.as_tensor(np.random.default_rng(3).normal(size=(6, FEATURE_DIM)))
    spread = ens.spread(x)
    torch.testing.assert_close(spread, ens.member_means(x).std(dim=0, unbiased=False))
    assert torch.all(spread > 0)
    ens.zero_()
    assert torch.count_nonzero(ens(x)) == 0 and torch.count_nonzero(ens.spread(x)) == 0
    single = ResidualEnsemble(members=1, hidden=(4,), dtype=torch.float64)
    assert torch.count_nonzero(single.spread(x)) == 0


def test_gradients_match_finite_differences() -> None:
    ens = _ensemble(members=2, hidden=(4,))
    x = torch.as_tensor(np.random.default_rng(4).normal(size=(3, FEATURE_DIM)), dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: ens(z), (x,))


def test_normalisation_rejects_bad_statistics() -> None:
    ens = ResidualEnsemble(2, (4,))
    with pytest.raises(ValueError):
        ens.set_normalisation(np.zeros(5), np.ones(6), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError):
        ens.set_normalisation(np.zeros(6), np.ones(6), np.array([0.0, np.nan, 0.0]), np.ones(3))
    ens.set_normalisation(np.zeros(6), np.zeros(6), np.zeros(3), np.zeros(3))  # floored, stays finite
    assert torch.all(ens.in_std > 0) and torch.all(ens.out_std > 0)
    with pytest.raises(ValueError):
        ResidualEnsemble(0, (4,))
    assert CONTROL_DIM == 2
