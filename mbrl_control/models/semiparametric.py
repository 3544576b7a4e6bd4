"""Semi-parametric dynamics: identified physics plus a learned residual on the velocity states.

``s' = physics_step(s, u) + E @ residual(features(s, u))`` where ``physics_step`` is one step of
``dt_s`` of a :class:`~mbrl_control.models.bicycle.SingleTrackBase` model with identified
parameters (its own integrator / substeps) and ``E`` scatters the correction of
``(V, YAW_RATE, SLIP)`` into the state. The residual is the ensemble mean, or one member per batch
element (trajectory sampling per member, as in PETS); :meth:`ensemble_spread` exposes the
members' disagreement to the planners.

Model files (``save`` / ``load``) are ``torch.save`` dicts of tensors and plain values, read back
with ``weights_only=True`` (no code runs on load) and validated field by field, so a damaged or
mismatched file is one clear :class:`~mbrl_control.MbrlError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_control import MbrlError, share_dir
from mbrl_control.config import VehicleParams, validate_vehicle_params
from mbrl_control.models.base import DynamicsModel
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle, SingleTrackBase
from mbrl_control.models.guards import check_model_archive
from mbrl_control.models.layout import STATE_DIM, VELOCITY_STATES
from mbrl_control.models.residual import OUTPUT_DIM, ResidualEnsemble, residual_features

FILE_FORMAT = "mbrl_control.semiparametric"
FILE_VERSION = 1
PHYSICS = {"dynamic": DynamicSingleTrack, "kinematic": KinematicBicycle}
DEFAULT_MODEL_FILE = "semiparametric.pt"
"""Looked up in the share dir's ``models/`` for the spec ``semiparametric``."""


def physics_kind(model: SingleTrackBase) -> str:
    for name, cls in PHYSICS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"unsupported physics model {type(model).__name__}")


def velocity_scatter(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(3, 7) matrix ``E`` with ``correction @ E`` placing (V, YAW_RATE, SLIP) corrections in a state."""
    scatter = torch.zeros(OUTPUT_DIM, STATE_DIM, dtype=dtype)
    for j, idx in enumerate(VELOCITY_STATES):
        scatter[j, idx] = 1.0
    return scatter


class SemiParametricModel(DynamicsModel):
    """Physics (identified :class:`SingleTrackBase`) + :class:`ResidualEnsemble` correction of the velocity states."""

    def __init__(self, physics: SingleTrackBase, residual: ResidualEnsemble, metrics: dict[str, Any] | None = None) -> None:
        super().__init__(physics.dt_s, physics.integrator, physics.substeps)
        physics_kind(physics)
        self.physics = physics
        self.residual = residual
        self.metrics = dict(metrics or {})
        dtype = next(physics.buffers()).dtype
        self.register_buffer("scatter", velocity_scatter(dtype), persistent=False)
        self.to(dtype)

    @property
    def params(self) -> VehicleParams:
        """The identified vehicle parameters of the physics part."""
        return self.physics.params

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return self.physics.derivative(state, control)

    def physics_step(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """One step of ``dt_s`` of the physics alone (this model's integrator and substeps)."""
        return DynamicsModel.forward(self, state, control)

    def forward(self, state: torch.Tensor, control: torch.Tensor, member: torch.Tensor | None = None) -> torch.Tensor:
        """Next state: physics step plus the residual mean (``member=None``) or the given member per element."""
        correction = self.residual(residual_features(state, control), member)
        return self.physics_step(state, control) + correction @ self.scatter

    def ensemble_spread(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """Std of the members' corrections (..., 3) of (V, YAW_RATE, SLIP): model disagreement."""
        return self.residual.spread(residual_features(state, control))

    def rollout(self, state0: torch.Tensor, controls: torch.Tensor, member: torch.Tensor | None = None) -> torch.Tensor:
        states = []
        state = state0
        for t in range(controls.shape[-2]):
            state = self(state, controls[..., t, :], member)
            states.append(state)
        return torch.stack(states, dim=-2)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Everything a file holds: plain values and float64 CPU tensors."""
        return {
            "format": FILE_FORMAT, "version": FILE_VERSION, "physics": physics_kind(self.physics),
            "vehicle": self.params.as_dict(), "dt_s": self.dt_s, "integrator": self.integrator,
            "substeps": self.substeps, "residual_config": self.residual.config(),
            "residual_state": {k: v.detach().cpu().double().clone() for k, v in self.residual.state_dict().items()},
            "metrics": {k: v for k, v in self.metrics.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }

    def save(self, path: str | Path) -> Path:
        """Write the model atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(self.to_dict(), fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", dtype: torch.dtype = torch.float32) -> "SemiParametricModel":
        """Rebuild and validate a model from :meth:`to_dict` output; any problem is an MbrlError naming ``source``."""
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise MbrlError(f"{source}: not a semi-parametric model file")
        if data.get("version") != FILE_VERSION:
            raise MbrlError(f"{source}: unsupported model file version {data.get('version')!r}")
        kind = data.get("physics")
        if kind not in PHYSICS:
            raise MbrlError(f"{source}: unknown physics model {kind!r}")
        vehicle = data.get("vehicle")
        if not isinstance(vehicle, dict):
            raise MbrlError(f"{source}: missing vehicle parameters")
        params = validate_vehicle_params(vehicle, source=source)
        try:
            physics = PHYSICS[kind](params, dt_s=float(data["dt_s"]), integrator=data["integrator"],
                                    substeps=int(data["substeps"]), dtype=torch.float64)
            config = data["residual_config"]
            residual = ResidualEnsemble(members=int(config["members"]), hidden=tuple(config["hidden"]),
                                        min_logvar=float(config["min_logvar"]), max_logvar=float(config["max_logvar"]),
                                        dtype=torch.float64)
            _check_state_shapes(residual, data["residual_state"], source)
            residual.load_state_dict(data["residual_state"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MbrlError(f"{source}: bad model contents ({first})") from None
        if not residual.is_finite():
            raise MbrlError(f"{source}: residual weights are not finite")
        if not (bool(torch.all(residual.in_std > 0)) and bool(torch.all(residual.out_std > 0))):
            raise MbrlError(f"{source}: residual normalisation has non-positive standard deviations")
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        return cls(physics, residual, metrics).to(dtype)

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "SemiParametricModel":
        """Read a model file; a missing, damaged or mismatched file is an MbrlError."""
        path = Path(path)
        if not path.is_file():
            raise MbrlError(f"model file not found: {path}")
        check_model_archive(path)  # memory budget and torch's zip layout, before torch.load allocates
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for damaged files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MbrlError(f"{path}: cannot read model file ({first[:160]})") from None
        return cls.from_dict(data, source=str(path), dtype=dtype)


def physics_only(params: VehicleParams, dt_s: float, kind: str = "dynamic", members: int = 5,
                 hidden: tuple[int, ...] = (32, 32), substeps: int = 1, dtype: torch.dtype = torch.float32) -> SemiParametricModel:
    """A semi-parametric model whose residual is exactly zero (the physics alone, same interface)."""
    physics = PHYSICS[kind](params, dt_s=dt_s, integrator="rk4", substeps=substeps, dtype=torch.float64)
    return SemiParametricModel(physics, ResidualEnsemble(members, hidden, dtype=torch.float64).zero_()).to(dtype)


def _check_state_shapes(residual: ResidualEnsemble, state: Any, source: str) -> None:
    """Every tensor the ensemble expects, with the expected shape, and nothing else (one clear line)."""
    if not isinstance(state, dict):
        raise MbrlError(f"{source}: residual weights are missing")
    expected = residual.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise MbrlError(f"{source}: residual tensors {'missing: ' + ', '.join(missing) if missing else 'unexpected: ' + ', '.join(extra)}")
    for name, ref in expected.items():
        value = state[name]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise MbrlError(f"{source}: residual tensor '{name}' has shape {got}, expected {tuple(ref.shape)} (size mismatch)")


def load_model_spec(spec: str, params: VehicleParams, dt_s: float, dtype: torch.dtype = torch.float32) -> SemiParametricModel:
    """``semiparametric`` (``models/semiparametric.pt`` if present, else nominal dynamics + zero residual) or a FILE.

    A file's residual was trained for steps of its own ``dt_s``; a different control period is an error.
    """
    if spec == "semiparametric":
        default = share_dir() / "models" / DEFAULT_MODEL_FILE
        if not default.is_file():
            return physics_only(params, dt_s, dtype=dtype)
        spec = str(default)
    model = SemiParametricModel.load(spec, dtype=dtype)
    if not np.isclose(model.dt_s, dt_s, rtol=1e-6, atol=1e-9):
        raise MbrlError(f"{spec}: model was fitted for steps of {model.dt_s} s, the control period is {dt_s} s")
    return model
