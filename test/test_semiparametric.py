"""SemiParametricModel: composition, member selection, files (round trip and every kind of bad file), factory."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.models.bicycle import DynamicSingleTrack
from mbrl_control.models.factory import make_model
from mbrl_control.models.layout import STATE_DIM, VELOCITY_STATES, S
from mbrl_control.models.residual import ResidualEnsemble, residual_features
from mbrl_control.models.semiparametric import SemiParametricModel, load_model_spec, physics_only


def _states(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    s = np.zeros((n, STATE_DIM))
    s[:, S.X], s[:, S.Y], s[:, S.YAW] = rng.normal(size=(3, n))
    s[:, S.V] = rng.uniform(1.5, 7.0, n)
    s[:, S.STEER] = rng.uniform(-0.2, 0.2, n)
    s[:, S.YAW_RATE] = rng.normal(scale=0.5, size=n)
    s[:, S.SLIP] = rng.normal(scale=0.05, size=n)
    u = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-3, 3, n)], axis=1)
    return torch.as_tensor(s), torch.as_tensor(u)


@pytest.fixture()
def model(params) -> SemiParametricModel:
    physics = DynamicSingleTrack(params.replace(cornering_stiffness_front=4.0, drag_coeff_per_m=0.02), dt_s=0.02)
    ens = ResidualEnsemble(members=3, hidden=(8, 8), seed=3, dtype=torch.float64)
    ens.set_normalisation(np.zeros(6), np.ones(6), np.array([0.01, -0.02, 0.001]), np.array([0.05, 0.1, 0.01]))
    return SemiParametricModel(physics, ens).to(torch.float64)


def test_forward_is_physics_plus_velocity_correction(model, params) -> None:
    s, u = _states()
    reference_physics = DynamicSingleTrack(model.params, dt_s=0.02, dtype=torch.float64)
    expected = reference_physics(s, u).clone()
    correction = model.residual.member_means(residual_features(s, u)).mean(0)
    for j, idx in enumerate(VELOCITY_STATES):
        expected[:, idx] += correction[:, j]
    torch.testing.assert_close(model(s, u), expected)
    # pose, steering untouched by the residual
    diff = model(s, u) - reference_physics(s, u)
    assert torch.count_nonzero(diff[:, [S.X, S.Y, S.STEER, S.YAW]]) == 0


def test_members_and_spread(model) -> None:
    s, u = _states(4)
    s2, u2 = s[:, None, :].expand(4, 5, STATE_DIM), u[:, None, :].expand(4, 5, 2)
    member = torch.tensor([0, 1, 2, 1])[:, None]  # one member per row of a (4, 5) batch
    out = model(s2, u2, member)
    for e in range(3):
        rows = (member[:, 0] == e)
        torch.testing.assert_close(out[rows], model(s2, u2, torch.tensor(e))[rows])
    spread = model.ensemble_spread(s, u)
    assert spread.shape == (4, 3) and torch.all(spread > 0)
    traj = model.rollout(s, u[:, None, :].expand(4, 7, 2), member=torch.tensor(1))
    assert traj.shape == (4, 7, STATE_DIM)
    torch.testing.assert_close(traj[:, 0], model(s, u, torch.tensor(1)))


def test_physics_only_equals_the_physics_model(params) -> None:
    m = physics_only(params, 0.02, dtype=torch.float64)
    s, u = _states()
    torch.testing.assert_close(m(s, u), DynamicSingleTrack(params, dt_s=0.02, dtype=torch.float64)(s, u), rtol=0, atol=0)
    assert m(s.float(), u.float()).dtype == torch.float64  # model keeps its dtype
    m32 = physics_only(params, 0.02)
    assert m32(s.float(), u.float()).dtype == torch.float32


def test_gradients_flow_to_controls(model) -> None:
    s, u = _states(3)
    u = u.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: model(s, z), (u,))


def test_save_load_round_trip_and_factory(model, params, tmp_path) -> None:
    path = model.save(tmp_path / "m.pt")
    loaded = SemiParametricModel.load(path, dtype=torch.float64)
    s, u = _states()
    torch.testing.assert_close(loaded(s, u), model(s, u))
    assert loaded.params == model.params
    via_factory = make_model(str(path), params, 0.02)
    assert isinstance(via_factory, SemiParametricModel) and next(via_factory.buffers()).dtype == torch.float32
    with pytest.raises(MbrlError, match="fitted for steps of 0.02"):
        make_model(str(path), params, 0.05)
    default = load_model_spec("semiparametric", params, 0.02)
    torch.testing.assert_close(default(s.float(), u.float()), DynamicSingleTrack(params, 0.02, dtype=torch.float32)(s.float(), u.float()))
    copy.deepcopy(loaded)  # the runner deep-copies models


def _save_dict(data, path) -> str:
    torch.save(data, path)
    return str(path)


def test_bad_files_are_one_line_errors(model, tmp_path) -> None:
    good = model.to_dict()
    cases = {
        "missing": tmp_path / "nope.pt",
        "garbage": tmp_path / "garbage.pt",
        "truncated": tmp_path / "truncated.pt",
        "not a model": _save_dict({"format": "something"}, tmp_path / "other.pt"),
        "wrong shapes": _save_dict({**good, "residual_state": {**good["residual_state"],
                                                                "weights.0": torch.zeros(3, 8, 5, dtype=torch.float64)}},
                                   tmp_path / "shapes.pt"),
        "missing tensor": _save_dict({**good, "residual_state": {k: v for k, v in good["residual_state"].items() if k != "biases.1"}},
                                     tmp_path / "missing_tensor.pt"),
        "non-finite": _save_dict({**good, "residual_state": {**good["residual_state"],
                                                              "biases.0": torch.full((3, 8), float("nan"), dtype=torch.float64)}},
                                 tmp_path / "nan.pt"),
        "zero std": _save_dict({**good, "residual_state": {**good["residual_state"], "in_std": torch.zeros(6, dtype=torch.float64)}},
                               tmp_path / "std.pt"),
        "bad vehicle": _save_dict({**good, "vehicle": {**good["vehicle"], "mass_kg": -1.0}}, tmp_path / "vehicle.pt"),
        "bad physics": _save_dict({**good, "physics": "quantum"}, tmp_path / "physics.pt"),
    }
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 this is not a torch file" * 10)
    full = (tmp_path / "full.pt")
    model.save(full)
    (tmp_path / "truncated.pt").write_bytes(full.read_bytes()[:200])
    for name, path in cases.items():
        with pytest.raises(MbrlError) as info:
            SemiParametricModel.load(path)
        assert "\n" not in str(info.value), name
