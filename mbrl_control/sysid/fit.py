"""One complete model fit: parametric identification, then the residual on what the physics leaves.

Used by ``mbrl-control fit`` (offline, from a bag) and by the online refit worker.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.models.semiparametric import PHYSICS, SemiParametricModel
from mbrl_control.sysid.config import KINEMATIC_PARAMS, FitConfig
from mbrl_control.sysid.dataset import Dataset, with_steering
from mbrl_control.sysid.identify import IdentifyResult, identify
from mbrl_control.sysid.train import TrainReport, evaluation_rmse, train_residual
from mbrl_control.sysid.threads import single_threaded

LOG = logging.getLogger("mbrl_control.sysid")


@dataclass
class FitResult:
    model: SemiParametricModel
    physics: str  # dynamic | kinematic
    identified: IdentifyResult
    training: TrainReport
    fit_s: float  # wall-clock seconds of identification + residual training
    fit_cpu_s: float = float("nan")  # CPU seconds of this process for the same (load-independent, 1 thread)

    def metrics(self) -> dict[str, float | int | bool | str]:
        """Plain numbers describing the fit (stored in the model file and the reports)."""
        out: dict[str, float | int | bool | str] = {f"param_{k}": v for k, v in self.identified.report().items()}
        out["physics"] = self.physics
        out.update(fit_s=round(self.fit_s, 4), fit_cpu_s=round(self.fit_cpu_s, 4), identify_s=round(self.identified.time_s, 4),
                   train_s=round(self.training.time_s, 4), identify_rms_initial=self.identified.rms_initial,
                   identify_rms_final=self.identified.rms_final, residual_kept=self.training.kept,
                   val_rmse_physics_m=self.training.rmse_physics_m, val_rmse_residual_m=self.training.rmse_residual_m,
                   samples=self.training.samples)
        return out


def _identify_kind(kind: str, dataset: Dataset, prior: VehicleParams, config: FitConfig,
                   initial: VehicleParams | None) -> tuple[str, IdentifyResult, Dataset, float]:
    """(kind, identification, dataset with that servo's steering, held-out 1 s RMSE of the physics alone)."""
    cfg = config.identify
    names = tuple(n for n in cfg.params if kind == "dynamic" or n in KINEMATIC_PARAMS)
    ident = identify(dataset.split(config.validation_fraction)[0], prior, dataclasses.replace(cfg, physics=kind, params=names),
                     initial)
    if not dataset.steer_measured:  # the residual sees the steering of the identified servo
        dataset = with_steering(dataset, ident.params, cfg.substeps)
    physics = PHYSICS[kind](ident.params, dt_s=dataset.dt_s, integrator="rk4", substeps=cfg.substeps, dtype=torch.float64)
    score = evaluation_rmse(physics, dataset.split(config.validation_fraction)[1])
    return kind, ident, dataset, score if math.isfinite(score) else math.inf


@single_threaded
def fit_model(dataset: Dataset, prior: VehicleParams, config: FitConfig | None = None,
              initial: VehicleParams | None = None, dtype: torch.dtype = torch.float32) -> FitResult:
    """Identify ``config.identify.params`` of ``prior`` on ``dataset`` and train the residual.

    The last ``validation_fraction`` of ``dataset`` is held out for early stopping and for the check
    that the residual helps, and, with ``identify.physics: auto``, to choose the physics: the dynamic
    single-track model and the kinematic bicycle are both identified, the one with the lower
    held-out 1 s position RMSE is kept (a plant with very stiff tyres, like the MuJoCo car, is
    better described by the kinematic model). Without a measured steering angle the residual is trained on the steering
    the identified servo model gives (the identification estimates it for each candidate itself).
    ``initial`` (e.g. the current model's parameters) warm-starts the identification.
    """
    config = config or FitConfig()
    tic, cpu = time.perf_counter(), time.process_time()
    ident_cfg = config.identify
    train, val = dataset.split(config.validation_fraction)
    if train.transitions < 2 * ident_cfg.horizon_steps:
        raise MbrlError(f"system identification: {train.transitions} valid transitions are too few")
    kinds = ("dynamic", "kinematic") if ident_cfg.physics == "auto" else (ident_cfg.physics,)
    candidates = [_identify_kind(kind, dataset, prior, config, initial) for kind in kinds]
    kind, ident, dataset, scores = min(candidates, key=lambda c: c[3])
    if len(candidates) > 1:
        LOG.info("physics: %s (held-out 1 s RMSE %s)", kind, ", ".join(f"{c[0]} {c[3]:.4g} m" for c in candidates))
    train, val = dataset.split(config.validation_fraction)
    physics = PHYSICS[kind](ident.params, dt_s=dataset.dt_s, integrator="rk4", substeps=ident_cfg.substeps,
                            dtype=torch.float64)
    model, report = train_residual(physics, train, val, config.residual, dtype)
    result = FitResult(model, kind, ident, report, time.perf_counter() - tic, time.process_time() - cpu)
    model.metrics.update(result.metrics())
    LOG.info("fit: %.2f s wall, %.2f s CPU (identification %.2f s, residual %.2f s)", result.fit_s, result.fit_cpu_s,
             ident.time_s, report.time_s)
    return result
