"""One complete model fit: parametric identification, then the residual on what the physics leaves.

Used by ``mbrl-control fit`` (offline, from a bag) and by the online refit worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.models.semiparametric import PHYSICS, SemiParametricModel
from mbrl_control.sysid.config import FitConfig
from mbrl_control.sysid.dataset import Dataset, with_steering
from mbrl_control.sysid.identify import IdentifyResult, identify
from mbrl_control.sysid.train import TrainReport, train_residual
from mbrl_control.sysid.threads import single_threaded

LOG = logging.getLogger("mbrl_control.sysid")


@dataclass
class FitResult:
    model: SemiParametricModel
    identified: IdentifyResult
    training: TrainReport
    fit_s: float  # wall-clock seconds of identification + residual training
    fit_cpu_s: float = float("nan")  # CPU seconds of this process for the same (load-independent, 1 thread)

    def metrics(self) -> dict[str, float | int | bool]:
        """Plain numbers describing the fit (stored in the model file and the reports)."""
        out: dict[str, float | int | bool] = {f"param_{k}": v for k, v in self.identified.report().items()}
        out.update(fit_s=round(self.fit_s, 4), fit_cpu_s=round(self.fit_cpu_s, 4), identify_s=round(self.identified.time_s, 4),
                   train_s=round(self.training.time_s, 4), identify_rms_initial=self.identified.rms_initial,
                   identify_rms_final=self.identified.rms_final, residual_kept=self.training.kept,
                   val_rmse_physics_m=self.training.rmse_physics_m, val_rmse_residual_m=self.training.rmse_residual_m,
                   samples=self.training.samples)
        return out


@single_threaded
def fit_model(dataset: Dataset, prior: VehicleParams, config: FitConfig | None = None,
              initial: VehicleParams | None = None, dtype: torch.dtype = torch.float32) -> FitResult:
    """Identify ``config.identify.params`` of ``prior`` on ``dataset`` and train the residual.

    The last ``validation_fraction`` of ``dataset`` is held out for early stopping and for the check
    that the residual helps. Without a measured steering angle the residual is trained on the steering
    the identified servo model gives (the identification estimates it for each candidate itself).
    ``initial`` (e.g. the current model's parameters) warm-starts the identification.
    """
    config = config or FitConfig()
    tic, cpu = time.perf_counter(), time.process_time()
    ident_cfg = config.identify
    train, val = dataset.split(config.validation_fraction)
    if train.transitions < 2 * ident_cfg.horizon_steps:
        raise MbrlError(f"system identification: {train.transitions} valid transitions are too few")
    ident = identify(train, prior, ident_cfg, initial)
    if not dataset.steer_measured:  # the residual sees the steering of the identified servo
        dataset = with_steering(dataset, ident.params, ident_cfg.substeps)
        train, val = dataset.split(config.validation_fraction)
    physics = PHYSICS[ident_cfg.physics](ident.params, dt_s=dataset.dt_s, integrator="rk4",
                                         substeps=ident_cfg.substeps, dtype=torch.float64)
    model, report = train_residual(physics, train, val, config.residual, dtype)
    result = FitResult(model, ident, report, time.perf_counter() - tic, time.process_time() - cpu)
    model.metrics.update(result.metrics())
    LOG.info("fit: %.2f s wall, %.2f s CPU (identification %.2f s, residual %.2f s)", result.fit_s, result.fit_cpu_s,
             ident.time_s, report.time_s)
    return result
