"""Train the learned residual of a fitted real-car model by multi-step (open-loop) prediction error.

After the physics and actuators are identified (:mod:`.real_fit`), the residual ensemble
(:mod:`mbrl_control.models.commanded_residual`: body accelerations from pose-invariant features)
is trained on what they leave unexplained:

1. the recordings are split in time: ``validation_fraction`` of each, in interleaved blocks, is held out;
2. each Adam step, every member rolls out ``batch_windows`` windows of ``horizon_s`` (drawn from its
   own bootstrap resample of the training windows) through the physics plus its own correction,
   back-propagating the weighted error of position, yaw and body velocities every ``sample_s``;
3. every ``eval_every`` steps the ensemble-mean model (the fitted predictor itself) is scored on
   the held-out windows (``validation_horizon_s`` long); the best weights are kept, and training stops after ``patience`` checks
   without improvement;
4. the residual is kept only if it lowers the held-out cost of the physics alone.

``kind="history"`` trains the history residual of :mod:`mbrl_control.models.commanded_residual`
(the same inputs plus each window's past-command means and start speed and yaw rate, held along
the rollout): it transfers to recordings it was not trained on where the instantaneous one does not.

The correction starts at exactly zero (the physics). Deterministic for a seed (own generators, a
fixed number of steps, no wall-clock budget).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from mbrl_control.models.commanded_residual import (FEATURES, HISTORY_CONTEXT, HistoryResidualPredictor,
                                                    MemberCorrection, features, history_context, new_ensemble)
from mbrl_control.models.predictor import CommandedCarPredictor, euler_step, rollout_start, to_centre_of_mass, to_reference_point
from mbrl_control.ops import numpy_ops, torch_ops
from mbrl_control.sysid.real_fit import WindowBatch, as_telemetry_list, window_batch
from mbrl_control.sysid.threads import single_threaded
from mbrl_control.sysid.train import _Adam

log = logging.getLogger("mbrl_control.sysid")

ACCEL_STD_FLOORS = np.array([0.05, 0.05, 0.2])
"""Smallest output scale of the (vx, vy, w) accelerations [m/s^2, m/s^2, rad/s^2]."""
FEATURE_STD_FLOORS = np.array([0.05, 0.02, 0.1, 0.01, 0.01, 0.01, 0.05])
"""Smallest input scale per feature (see :data:`~mbrl_control.models.commanded_residual.FEATURES`)."""
CONTEXT_STD_FLOORS = np.array([0.01, 0.01, 0.01, 0.01, 0.05, 0.05])
"""Smallest input scale of the history context (see :data:`~mbrl_control.models.commanded_residual.HISTORY_CONTEXT`)."""
RESIDUAL_KINDS = ("instantaneous", "history")
"""``ResidualFitConfig.kind``: inputs of this instant only, or with the history context."""


@dataclass(frozen=True)
class ResidualFitConfig:
    output_scale: float = 0.1         # output std = this x the std of the measured body accelerations
    members: int = 5
    hidden: tuple[int, ...] = (32, 32)
    horizon_s: float = 0.5            # open-loop length of a training window
    validation_horizon_s: float = 1.0 # ... of a held-out window (the metric's)
    stride_s: float = 0.1             # a window starts every this many seconds (training and validation)
    sample_s: float = 0.1             # errors compared every this many seconds along a window
    batch_windows: int = 64           # windows per member per Adam step
    steps: int = 300                  # Adam steps (at most)
    eval_every: int = 25              # held-out check every this many steps
    patience: int = 4                 # checks without improvement before stopping
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2  # held out of every recording, in interleaved blocks:
    validation_block_s: float = 10.0  # the last this many seconds of every validation_block_s / validation_fraction
    max_validation_windows: int = 400
    weights: tuple[float, ...] = (1.0, 1.0, 0.3, 0.3, 0.3, 0.1)  # x, y [m], yaw [rad], vx, vy [m/s], w [rad/s]
    select_on_validation: bool = True  # False: keep the last weights whatever the held-out score (tests, studies)
    kind: str = "instantaneous"       # or "history": + past-command means and start speed, yaw rate (module docstring)
    seed: int = 0


@dataclass
class ResidualFitReport:
    train_windows: int
    validation_windows: int
    steps: int
    best_step: int
    val_cost_physics: float           # held-out weighted multi-step cost, physics alone / with the residual
    val_cost_residual: float
    val_pos_1s_physics_m: float       # held-out position RMSE at the end of the windows
    val_pos_1s_residual_m: float
    kept: bool
    train_s: float
    kind: str = "instantaneous"       # what the residual reads (ResidualFitConfig.kind)


def split_in_time(tel, validation_fraction: float, block_s: float = 10.0) -> tuple:
    """(training part, held-out part) of one telemetry: of every ``block_s / validation_fraction``
    seconds, the last ``block_s`` are held out (interleaved blocks, so that both parts see the whole
    recording, e.g. the battery's whole discharge); a block boundary starts a new segment."""
    period_s = block_s / validation_fraction
    phase = np.floor((tel.t - tel.t[0]) / block_s).astype(int)
    held = (tel.t - tel.t[0]) % period_s >= period_s - block_s
    blocked = dataclasses.replace(tel, seg=tel.seg * (int(phase.max()) + 1) + phase)
    return blocked.select(~held), blocked.select(held)


@dataclass
class _Prepared:
    """Training windows as tensors: the centre-of-mass start states with actuator states (8 x (N,)),
    the commands as the actuators get them (N, H), the measured states (N, S, 6), the weights."""

    state: tuple
    throttle: torch.Tensor
    steering: torch.Tensor
    meas: torch.Tensor
    cols: np.ndarray
    substeps: int
    substep_s: float
    context: torch.Tensor             # (N, C) history context of each window


def _prepare(p: SimpleNamespace, batch: WindowBatch) -> _Prepared:
    start = rollout_start(p, batch.s0, batch.u, batch.past, batch.dt)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    return _Prepared(tuple(t(a) for a in start.state), t(start.throttle), t(start.steering), t(batch.meas),
                     batch.cols, start.substeps, start.substep_s, t(history_context(batch.s0, batch.past, batch.dt)))


def _normalisation(p: SimpleNamespace, batch: WindowBatch, output_scale: float,
                   kind: str = "instantaneous") -> tuple[np.ndarray, ...]:
    """(in_mean, in_std, out_mean, out_std): feature statistics at the window starts (with the
    history context for ``kind="history"``); the output scale is ``output_scale`` x that of the
    measured body accelerations (differences along the windows)."""
    start = rollout_start(p, batch.s0, batch.u, batch.past, batch.dt)
    x = SimpleNamespace(**dict(zip(("x", "y", "yaw", "vx", "vy", "w", "steer", "duty"), start.state)))
    u = SimpleNamespace(throttle=start.throttle[:, 0], steering=start.steering[:, 0])
    f = np.stack(np.broadcast_arrays(*features(x, u)), axis=-1)
    floors = FEATURE_STD_FLOORS
    if kind == "history":
        f = np.concatenate([f, history_context(batch.s0, batch.past, batch.dt)], axis=-1)
        floors = np.r_[FEATURE_STD_FLOORS, CONTEXT_STD_FLOORS]
    body = np.stack(to_centre_of_mass(numpy_ops, np.moveaxis(batch.meas, -1, 0), p)[3:], axis=-1)  # (N, S, 3)
    accel = np.diff(body, axis=1).reshape(-1, 3) / (batch.dt * np.diff(batch.cols).mean())
    return (f.mean(0), np.maximum(f.std(0), floors), np.zeros(3),
            np.maximum(output_scale * accel.std(0), ACCEL_STD_FLOORS))


def _member_cost(ensemble, p: SimpleNamespace, data: _Prepared, idx: torch.Tensor, weights: torch.Tensor,
                 kind: str = "instantaneous") -> torch.Tensor:
    """Mean weighted squared error of each member's rollout of its windows ``idx`` (E, B)."""
    correction = MemberCorrection(ensemble, data.context[idx] if kind == "history" else None)
    xs = tuple(s[idx] for s in data.state)
    thr, steer, meas = data.throttle[idx], data.steering[idx], data.meas[idx]
    start = SimpleNamespace(substeps=data.substeps, substep_s=data.substep_s)
    total, k = 0.0, 0
    for j in range(thr.shape[-1]):
        xs = euler_step(torch_ops, xs, thr[..., j], steer[..., j], p, start, correction)
        if k < len(data.cols) and j == data.cols[k]:
            ref = torch.stack(to_reference_point(torch_ops, xs, p), dim=-1)
            total = total + torch.mean(((ref - meas[..., k, :]) * weights) ** 2)
            k += 1
    return total / len(data.cols)


def _cost_of(pred: np.ndarray, batch: WindowBatch, weights: np.ndarray) -> tuple[float, float]:
    """(weighted multi-step cost, position RMSE at the last compared step) of predictions (N, H, 6)."""
    err = pred[:, batch.cols] - batch.meas
    pos = np.hypot(err[:, -1, 0], err[:, -1, 1])
    return float(np.mean((err * weights) ** 2)), float(np.sqrt(np.mean(pos ** 2)))


def _score(predictor: CommandedCarPredictor, batch: WindowBatch, weights: np.ndarray) -> tuple[float, float]:
    pred = predictor.predict(batch.s0, batch.u, dt=batch.dt, past_commands=batch.past)
    return _cost_of(pred, batch, weights)


HISTORY_FIT = ResidualFitConfig(kind="history", hidden=(16, 16), weight_decay=1e-3)
"""The history residual's configuration (leave-one-file-out, docs/real_data.md): smaller networks and
10 x the weight decay of the instantaneous residual's defaults, which fit the training recordings more
and transfer less to a new one."""


def with_residual(base: CommandedCarPredictor, ensemble, kind: str = "instantaneous") -> CommandedCarPredictor:
    """``base`` (physics and actuators) plus the residual ``ensemble`` of ``kind`` (ensemble mean)."""
    cls = HistoryResidualPredictor if kind == "history" else CommandedCarPredictor
    return cls(base.params, base.command_names, base.info, ensemble)


PAST_COMMANDS_S = 1.0
"""Seconds of past commands every window gets, in training as in prediction: what metric.py's predictor
contract gives (P = H = 1 s), so that the history context's 1 s means are 1 s means in training too."""


def _windows(tels, config: ResidualFitConfig, horizon_s: float, limit: int | None, seed_offset: int) -> WindowBatch:
    batch = window_batch(tels, horizon_s, config.stride_s, config.sample_s, past_s=max(horizon_s, PAST_COMMANDS_S))
    if limit is not None and len(batch) > limit:
        rng = np.random.default_rng(config.seed + seed_offset)
        batch = batch.take(np.sort(rng.choice(len(batch), limit, replace=False)))
    return batch


@single_threaded
def fit_residual(tel, physics: CommandedCarPredictor, config: ResidualFitConfig = ResidualFitConfig(),
                 progress: bool = False) -> tuple[CommandedCarPredictor, ResidualFitReport]:
    """``physics`` plus a residual trained on ``tel`` (one telemetry or a list); see the module docstring."""
    tic = time.perf_counter()
    if config.kind not in RESIDUAL_KINDS:
        raise ValueError(f"residual kind must be one of {RESIDUAL_KINDS}, got {config.kind!r}")
    parts = [split_in_time(t, config.validation_fraction, config.validation_block_s) for t in as_telemetry_list(tel)]
    train = _windows([a for a, _ in parts], config, config.horizon_s, None, 0)
    val = _windows([b for _, b in parts], config, config.validation_horizon_s, config.max_validation_windows, 1)
    base = physics.without_residual()
    p = SimpleNamespace(**base.params)
    w_np = np.asarray(config.weights, dtype=np.float64)
    phys_cost, phys_pos = _score(base, val, w_np) if len(val) else (float("nan"), float("nan"))
    if len(train) < 10 or len(val) < 5:
        log.info("residual: too few windows (%d training, %d held out); physics only", len(train), len(val))
        return base, ResidualFitReport(len(train), len(val), 0, 0, phys_cost, phys_cost, phys_pos, phys_pos, False,
                                       time.perf_counter() - tic, config.kind)
    n_in = len(FEATURES) + (len(HISTORY_CONTEXT) if config.kind == "history" else 0)
    ensemble = new_ensemble(config.members, config.hidden, config.seed, feature_dim=n_in)
    ensemble.set_normalisation(*_normalisation(p, train, config.output_scale, config.kind))
    log.info("residual: output scale %s", np.round(ensemble.out_std.numpy(), 4))
    data = _prepare(p, train)
    gen = torch.Generator().manual_seed(int(config.seed))
    boot = torch.randint(0, len(train), (config.members, len(train)), generator=gen)
    # the cost relative to the physics' own on the training windows: gradients of order one against the weight decay
    weights = torch.as_tensor(w_np / np.sqrt(_score(base, train.take(np.arange(0, len(train), 10)), w_np)[0]))
    opt = _Adam([*ensemble.weights, *ensemble.biases], lr=config.learning_rate, weight_decay=config.weight_decay)
    best = (phys_cost, phys_pos, 0, copy.deepcopy(ensemble.state_dict()))
    bad, step, train_cost = 0, 0, []
    for step in range(1, config.steps + 1):
        pick = torch.randint(0, len(train), (config.members, min(config.batch_windows, len(train))), generator=gen)
        opt.zero_grad()
        loss = _member_cost(ensemble, p, data, torch.gather(boot, 1, pick), weights, config.kind)
        loss.backward()
        opt.step()
        train_cost.append(float(loss.detach()))
        if step % config.eval_every and step != config.steps:
            continue
        cost, pos = _score(with_residual(base, ensemble, config.kind), val, w_np)
        if progress:
            log.info("residual: step %d, training cost %.5f, held-out cost %.5f (physics %.5f), 1 s position %.4f m "
                     "(physics %.4f m)", step, np.mean(train_cost), cost, phys_cost, pos, phys_pos)
        train_cost = []
        if np.isfinite(cost) and (cost < best[0] or not config.select_on_validation):
            best, bad = (cost, pos, step, copy.deepcopy(ensemble.state_dict())), 0
        else:
            bad += 1
            if bad >= config.patience and config.select_on_validation:
                break
    kept = best[2] > 0
    ensemble.load_state_dict(best[3])
    model = with_residual(base, ensemble, config.kind) if kept else base
    report = ResidualFitReport(len(train), len(val), step, best[2], phys_cost, best[0], phys_pos, best[1], kept,
                               time.perf_counter() - tic, config.kind)
    log.info("residual: %d training / %d held-out windows, %d steps (best %d), held-out 1 s position %.4f -> %.4f m, "
             "%s (%.1f s)", report.train_windows, report.validation_windows, step, best[2], phys_pos, best[1],
             "kept" if kept else "dropped", report.train_s)
    return model, report
