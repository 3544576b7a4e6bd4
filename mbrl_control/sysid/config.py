"""Configuration of system identification: dataset building, parametric fit, residual training, online refit.

Every dataclass is built with :func:`mbrl_control.config.dataclass_from_dict` (unknown keys and
wrong types are one-line :class:`~mbrl_control.MbrlError`) and checks its own ranges in
``validate``. The ``sysid`` section of a controller YAML maps onto :class:`OnlineConfig`, whose
nested sections ``dataset``, ``identify`` and ``residual`` are mappings for the classes below.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict

IDENTIFIABLE = ("friction_coeff", "cornering_stiffness_front", "cornering_stiffness_rear", "yaw_inertia_kgm2",
                "steer_time_constant_s", "drag_coeff_per_m", "accel_max_mps2", "v_switch_mps")
"""Vehicle parameters the parametric fit may estimate (geometry and mass are known)."""
KINEMATIC_PARAMS = ("steer_time_constant_s", "drag_coeff_per_m", "accel_max_mps2", "v_switch_mps")
"""The subset the kinematic bicycle depends on (no tyres, no yaw inertia)."""


def _check(section: str, ok: bool, message: str) -> None:
    if not ok:
        raise MbrlError(f"{section}: {message}")


@dataclass(frozen=True)
class DatasetConfig:
    """Resampling onto the model grid and outlier rejection."""

    max_gap_s: float = 0.1  # odometry further apart than this: the transitions across are dropped
    outlier_window: int = 5  # Hampel filter half-width (samples) on the measured states
    outlier_sigmas: float = 6.0  # a sample further than this many robust sigmas from its local median is an outlier
    command_lead_s: float = -1.0  # a command stamped up to this long after a grid time counts for it; <0: half a period

    def validate(self) -> None:
        s = "sysid.dataset"
        _check(s, self.max_gap_s > 0, "max_gap_s must be positive")
        _check(s, self.outlier_window >= 1, "outlier_window must be at least 1")
        _check(s, self.outlier_sigmas > 0, "outlier_sigmas must be positive")


@dataclass(frozen=True)
class IdentifyConfig:
    """Nonlinear least squares on multi-step predictions (scipy ``least_squares``, torch Jacobians)."""

    physics: str = "auto"  # physics identified: dynamic | kinematic | auto (both; the better on held-out data)
    params: tuple = ("cornering_stiffness_front", "cornering_stiffness_rear", "yaw_inertia_kgm2",
                     "steer_time_constant_s", "drag_coeff_per_m")
    horizon_steps: int = 10  # length of each prediction window (steps of the model)
    window_stride: int = 3  # a window starts every this many samples
    max_windows: int = 300  # at most this many windows (evenly spread) per fit
    lower_scale: float = 0.25  # bounds: prior * [lower_scale, upper_scale] (clipped to the valid ranges)
    upper_scale: float = 4.0
    zero_prior_upper: float = 0.5  # upper bound of a parameter whose prior is 0 (e.g. drag)
    max_iterations: int = 40  # least-squares iterations (function evaluations)
    prior_weight: float = 1e-3  # pull towards the starting point, relative to the data term (0: none)
    loss: str = "linear"  # scipy loss: linear | soft_l1 | huber | cauchy (robust to leftover outliers)
    substeps: int = 1  # integrator substeps of the identified model per step

    def validate(self) -> None:
        s = "sysid.identify"
        _check(s, self.physics in ("auto", "dynamic", "kinematic"), f"physics must be auto, dynamic or kinematic, got {self.physics!r}")
        bad = [p for p in self.params if p not in IDENTIFIABLE]
        _check(s, not bad, f"cannot identify {bad[0] if bad else ''!r} (choose from {', '.join(IDENTIFIABLE)})")
        _check(s, len(set(self.params)) == len(self.params), "params has duplicates")
        _check(s, self.horizon_steps >= 1 and self.window_stride >= 1 and self.max_windows >= 1, "horizon_steps, window_stride and max_windows must be >= 1")
        _check(s, 0 < self.lower_scale < 1 < self.upper_scale, "need 0 < lower_scale < 1 < upper_scale")
        _check(s, self.zero_prior_upper > 0 and self.prior_weight >= 0, "zero_prior_upper > 0 and prior_weight >= 0")
        _check(s, self.max_iterations >= 1 and self.substeps >= 1, "max_iterations and substeps must be >= 1")
        _check(s, self.loss in ("linear", "soft_l1", "huber", "cauchy"), f"unknown loss {self.loss!r}")


@dataclass(frozen=True)
class ResidualConfig:
    """The residual ensemble and its training (one-step Gaussian NLL + multi-step BPTT, early stopping)."""

    enabled: bool = True
    members: int = 5
    hidden: tuple = (32, 32)
    min_logvar: float = -10.0
    max_logvar: float = 2.0
    steps: int = 400  # Adam steps of the one-step loss (at most; early stopping)
    batch_size: int = 256  # transitions per member and step
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    multistep_steps: int = 15  # then this many steps of the combined one-step + multi-step loss (0: none)
    multistep_horizon: int = 5  # BPTT horizon (model steps)
    multistep_windows: int = 64  # windows per multi-step batch
    multistep_weight: float = 1.0
    eval_every: int = 20  # held-out check interval (steps) for early stopping
    patience: int = 6  # stop after this many checks without improvement
    bootstrap: bool = True  # each member trains on a bootstrap resample (ensemble diversity)
    min_samples: int = 100  # fewer training transitions: no residual (zero correction)
    seed: int = 0

    def validate(self) -> None:
        s = "sysid.residual"
        _check(s, self.members >= 1 and len(self.hidden) >= 1 and all(int(h) >= 1 for h in self.hidden), "members >= 1 and non-empty positive hidden sizes")
        _check(s, self.min_logvar < self.max_logvar, "min_logvar must be below max_logvar")
        _check(s, self.steps >= 1 and self.batch_size >= 1 and self.learning_rate > 0 and self.weight_decay >= 0,
               "steps >= 1, batch_size >= 1, learning_rate > 0, weight_decay >= 0")
        _check(s, self.multistep_steps >= 0 and self.multistep_horizon >= 1 and self.multistep_windows >= 1, "bad multi-step settings")
        _check(s, self.eval_every >= 1 and self.patience >= 1 and self.min_samples >= 1, "eval_every, patience, min_samples must be >= 1")


@dataclass(frozen=True)
class FitConfig:
    """One complete fit: parametric identification, then the residual on what physics leaves."""

    validation_fraction: float = 0.2  # last part of the data held out for early stopping and the residual check
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    identify: IdentifyConfig = field(default_factory=IdentifyConfig)
    residual: ResidualConfig = field(default_factory=ResidualConfig)

    def validate(self) -> None:
        _check("sysid", 0.0 < self.validation_fraction < 0.9, "validation_fraction must be in (0, 0.9)")


@dataclass(frozen=True)
class OnlineConfig:
    """The online refit loop (``sim --online-sysid``, sysid_node)."""

    buffer_s: float = 60.0  # rolling buffer length (most recent data)
    first_refit_s: float = 8.0  # first refit once this much data is in (minus holdout_s for training)
    refit_period_s: float = 10.0  # then a refit every this many seconds (sim / wall time)
    refit_backoff: float = 1.5  # period multiplied by this after a refit that was not better ...
    refit_period_max_s: float = 40.0  # ... up to this (or refit_period_s if longer); an accepted model resets it
    handover_delay_s: float = 2.0  # deterministic mode: the refit result is handed over this much later
    deterministic: bool = True  # wait for the worker at the hand-over time (offline sim); false: take it when ready
    holdout_s: float = 3.0  # latest window held out of training; the validation gate's data
    improvement: float = 0.0  # accept only when new RMSE < current RMSE * (1 - improvement) - min_gain_m
    min_gain_m: float = 0.001  # ... so that round-off level "improvements" do not cause model churn
    out_dir: str = ""  # versioned model files go to <out_dir>/ (default: a temporary folder)
    worker: str = "process"  # process (safest with the GIL on few cores) | thread | inline (tests)
    worker_nice: int = 15  # niceness added to a worker process (the controller keeps priority)
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        s = "sysid"
        _check(s, self.buffer_s > 0 and self.first_refit_s > 0 and self.refit_period_s > 0, "buffer_s, first_refit_s, refit_period_s must be positive")
        _check(s, self.handover_delay_s >= 0 and self.holdout_s > 0, "handover_delay_s >= 0 and holdout_s > 0")
        _check(s, self.refit_backoff >= 1.0, "refit_backoff must be >= 1")
        _check(s, self.holdout_s + 2.0 < self.buffer_s, "holdout_s must leave training data in the buffer")
        _check(s, 0.0 <= self.improvement < 1.0 and self.min_gain_m >= 0, "improvement must be in [0, 1), min_gain_m >= 0")
        _check(s, self.worker in ("process", "thread", "inline"), f"worker must be process, thread or inline, got {self.worker!r}")
        _check(s, 0 <= self.worker_nice <= 19, "worker_nice must be in [0, 19]")


_NESTED = {"dataset": DatasetConfig, "identify": IdentifyConfig, "residual": ResidualConfig, "fit": FitConfig}


def build_config(cls, options: Mapping[str, Any] | None, section: str):
    """A config dataclass from a (nested) mapping: nested sections become their own dataclasses."""
    if options is not None and not isinstance(options, Mapping):
        raise MbrlError(f"{section}: expected a mapping, got {options!r}")
    options = dict(options or {})
    names = {f.name for f in fields(cls)}
    for key in list(options):
        if key in _NESTED and key in names:
            value = options[key]
            if not isinstance(value, Mapping):
                raise MbrlError(f"{section}: '{key}' must be a mapping")
            options[key] = build_config(_NESTED[key], value, f"{section}.{key}")
    return dataclass_from_dict(cls, options, section)


def bounded_prior(params: VehicleParams, name: str, config: IdentifyConfig) -> tuple[float, float, float]:
    """(prior, lower, upper) of an identified parameter: prior * [lower_scale, upper_scale] within the valid range."""
    from mbrl_control.config import _RANGES

    prior = float(getattr(params, name))
    lo_valid, hi_valid = _RANGES[name]
    if prior == 0.0:
        lo, hi = 0.0, config.zero_prior_upper
    else:
        lo, hi = sorted((prior * config.lower_scale, prior * config.upper_scale))
    return prior, max(lo, lo_valid), min(hi, hi_valid)
