"""Residual training: what the identified physics leaves unexplained, learned by an MLP ensemble.

1. Targets: ``s_{k+1}[V, YAW_RATE, SLIP] - physics(s_k, u_k)[V, YAW_RATE, SLIP]`` on the valid
   transitions; inputs and targets are normalised (mean / std, std floored).
2. One-step phase: mini-batch Adam on the Gaussian negative log-likelihood (mean + bounded
   log-variance) of every member, each drawing from its own bootstrap resample (PETS-style diversity).
3. Multi-step phase: the same loss plus the error of ``multistep_horizon``-step rollouts of the
   semi-parametric model (physics + each member's correction), back-propagated through time.
4. Early stopping on held-out data (one-step error of the ensemble mean, then the multi-step error);
   the best weights are kept.
5. The residual is kept only if it lowers the held-out 1 s open-loop position RMSE of the
   physics alone; otherwise it is zeroed (the model is then the identified physics).

Deterministic for a seed (own torch generator, fixed step counts, no wall-clock budget).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_control.models.bicycle import SingleTrackBase
from mbrl_control.models.layout import STATE_DIM, VELOCITY_STATES, S
from mbrl_control.models.metrics import open_loop_errors
from mbrl_control.models.residual import ResidualEnsemble, residual_features
from mbrl_control.models.semiparametric import SemiParametricModel, velocity_scatter
from mbrl_control.sysid.config import ResidualConfig
from mbrl_control.sysid.dataset import Dataset
from mbrl_control.sysid.threads import single_threaded

LOG = logging.getLogger("mbrl_control.sysid")

TARGET_STD_FLOORS = np.array([1e-4, 1e-4, 1e-5])
"""Smallest output std of (V, YAW_RATE, SLIP) corrections: a near-perfect physics model gives
targets at round-off level, which must not be blown up to unit variance."""
FEATURE_STD_FLOORS = np.array([0.01, 0.1, 0.05, 0.005, 0.01, 0.1])
"""Smallest input std per feature (steer rad, v m/s, yaw rate rad/s, slip rad, steer cmd rad, accel
m/s^2): a feature that hardly varied in the data must not be scaled up to where any new value
saturates the tanh units."""
MULTISTEP_STATES = (S.YAW, *VELOCITY_STATES)


@dataclass
class TrainReport:
    samples: int
    steps: int
    multistep_steps: int
    val_onestep_physics: float  # held-out one-step RMSE (normalised) of physics alone / with the residual
    val_onestep_residual: float
    rmse_physics_m: float  # held-out 1 s open-loop position RMSE, physics alone / with the residual
    rmse_residual_m: float
    kept: bool
    time_s: float


TRAIN_DTYPE = torch.float32
"""Training runs in float32 (2-3x faster on CPU); targets are formed in float64 first."""


def _tensors(dataset: Dataset, physics: SingleTrackBase) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 6), targets (N, 3)) of the valid transitions, float64."""
    idx = np.flatnonzero(dataset.valid)
    s = torch.as_tensor(dataset.states[idx], dtype=torch.float64)
    u = torch.as_tensor(dataset.controls[idx], dtype=torch.float64)
    s_next = torch.as_tensor(dataset.states[idx + 1], dtype=torch.float64)
    with torch.no_grad():
        pred = copy.deepcopy(physics).to(torch.float64)(s, u)
    vel = list(VELOCITY_STATES)
    return residual_features(s, u), s_next[:, vel] - pred[:, vel]


def _nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood (up to a constant), averaged."""
    return 0.5 * ((mean - target) ** 2 * torch.exp(-logvar) + logvar).mean()


class _Adam:
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as ``torch.optim.Adam``.

    A few lines of our own instead of ``torch.optim``: its first use imports torch._dynamo
    (about 2 s), which would dominate a 1 s refit in a fresh worker process.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


class _Trainer:
    """State of one training run: data, ensemble, optimiser, random generator."""

    def __init__(self, physics: SingleTrackBase, train: Dataset, val: Dataset, config: ResidualConfig) -> None:
        self.config = config
        self.physics = copy.deepcopy(physics).to(TRAIN_DTYPE)
        self.gen = torch.Generator().manual_seed(int(config.seed))
        x, y = _tensors(train, physics)
        vx, vy = _tensors(val, physics)
        self.ensemble = ResidualEnsemble(config.members, tuple(config.hidden), config.min_logvar, config.max_logvar,
                                         seed=config.seed, dtype=TRAIN_DTYPE)
        self.ensemble.set_normalisation(x.mean(0).numpy(), np.maximum(x.std(0).numpy(), FEATURE_STD_FLOORS), y.mean(0).numpy(),
                                        np.maximum(y.std(0).numpy(), TARGET_STD_FLOORS))
        out_mean, out_std = self.ensemble.out_mean.double(), self.ensemble.out_std.double()
        self.x, self.yn = x.to(TRAIN_DTYPE), ((y - out_mean) / out_std).to(TRAIN_DTYPE)
        self.vx, self.vyn = vx.to(TRAIN_DTYPE), ((vy - out_mean) / out_std).to(TRAIN_DTYPE)
        n = len(self.x)
        if config.bootstrap and config.members > 1:
            self.boot = torch.randint(0, n, (config.members, n), generator=self.gen)
        else:
            self.boot = torch.arange(n).expand(config.members, n)
        self.opt = _Adam(self.ensemble.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def onestep_loss(self) -> torch.Tensor:
        """NLL of a mini-batch drawn, per member, from that member's bootstrap resample."""
        n = self.boot.shape[1]
        pick = torch.randint(0, n, (self.config.members, min(self.config.batch_size, n)), generator=self.gen)
        idx = torch.gather(self.boot, 1, pick)
        mean, logvar = self.ensemble.member_outputs(self.x[idx])
        return _nll(mean, logvar, self.yn[idx])

    @torch.no_grad()
    def val_onestep(self, zero: bool = False) -> float:
        """Held-out one-step RMSE of the ensemble mean, normalised (``zero``: of no correction)."""
        if len(self.vx) == 0:
            return float("nan")
        pred = torch.zeros_like(self.vyn) if zero else self.ensemble.member_outputs(self.vx[None])[0].mean(0)
        return float(torch.sqrt(torch.mean((pred - self.vyn) ** 2)))

    def run_phase(self, steps: int, loss_fn, val_fn) -> int:
        """Adam steps with early stopping on ``val_fn``; restores the best weights; returns steps taken."""
        cfg = self.config
        best, best_state, bad, done = val_fn(), copy.deepcopy(self.ensemble.state_dict()), 0, 0
        for step in range(1, steps + 1):
            self.opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            self.opt.step()
            done = step
            if step % cfg.eval_every == 0 or step == steps:
                score = val_fn()
                if np.isfinite(score) and (not np.isfinite(best) or score < best):
                    best, best_state, bad = score, copy.deepcopy(self.ensemble.state_dict()), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
        if np.isfinite(best):
            self.ensemble.load_state_dict(best_state)
        return done


class _MultiStep:
    """Windows and the BPTT loss of the multi-step phase."""

    def __init__(self, trainer: _Trainer, dataset: Dataset, windows: int, horizon: int, seed_offset: int) -> None:
        starts = dataset.window_starts(horizon)
        if len(starts) > windows:
            gen = torch.Generator().manual_seed(int(trainer.config.seed) + seed_offset)
            starts = np.sort(starts[torch.randperm(len(starts), generator=gen)[:windows].numpy()])
        self.count = len(starts)
        self.trainer = trainer
        if self.count == 0:
            return
        s0, u, y = dataset.windows(starts, horizon)
        self.s0 = torch.as_tensor(s0, dtype=TRAIN_DTYPE)
        self.u = torch.as_tensor(u, dtype=TRAIN_DTYPE)
        dims = list(MULTISTEP_STATES)
        self.y = torch.as_tensor(y[..., dims], dtype=TRAIN_DTYPE)
        steps = np.diff(np.concatenate([s0[:, None, :], y], axis=1), axis=1).reshape(-1, STATE_DIM)[:, dims]
        self.inv_scale = torch.as_tensor(1.0 / np.maximum(np.sqrt(np.mean(steps**2, axis=0)), 1e-4), dtype=TRAIN_DTYPE)
        self.scatter = velocity_scatter(TRAIN_DTYPE)

    def loss(self, ensemble_mean: bool = False) -> torch.Tensor:
        """Mean squared scaled error of per-member rollouts (or of the ensemble-mean model)."""
        ens = self.trainer.ensemble
        physics = self.trainer.physics
        members = 1 if ensemble_mean else ens.members
        state = self.s0.expand(members, *self.s0.shape)
        dims = list(MULTISTEP_STATES)
        total = 0.0
        for j in range(self.u.shape[1]):
            u = self.u[:, j]
            feats = residual_features(state, u)
            if ensemble_mean:
                corr = ens(feats[0])[None]
            else:
                mean, _ = ens.member_outputs(feats)
                corr = ens.out_mean + ens.out_std * mean
            state = physics(state, u) + corr @ self.scatter
            total = total + torch.mean(((state[..., dims] - self.y[:, j]) * self.inv_scale) ** 2)
        return total / self.u.shape[1]


@single_threaded
def train_residual(physics: SingleTrackBase, train: Dataset, val: Dataset, config: ResidualConfig | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[SemiParametricModel, TrainReport]:
    """The semi-parametric model ``physics + residual`` trained on ``train``, early-stopped on ``val``."""
    config = config or ResidualConfig()
    tic = time.perf_counter()
    physics = copy.deepcopy(physics).to(torch.float64)
    samples = int(train.valid.sum())
    if not config.enabled or samples < config.min_samples or int(val.valid.sum()) < 2:
        zero = ResidualEnsemble(config.members, tuple(config.hidden), config.min_logvar, config.max_logvar,
                                seed=config.seed, dtype=torch.float64).zero_()
        model = SemiParametricModel(physics, zero).to(dtype)
        rmse = evaluation_rmse(model, val)
        return model, TrainReport(samples, 0, 0, float("nan"), float("nan"), rmse, rmse, False, time.perf_counter() - tic)
    torch.manual_seed(config.seed)
    trainer = _Trainer(physics, train, val, config)
    physics_score = trainer.val_onestep(zero=True)
    steps = trainer.run_phase(config.steps, trainer.onestep_loss, trainer.val_onestep)
    ms_steps = 0
    if config.multistep_steps > 0:
        ms_train = _MultiStep(trainer, train, config.multistep_windows, config.multistep_horizon, 1)
        ms_val = _MultiStep(trainer, val, config.multistep_windows, config.multistep_horizon, 2)
        if ms_train.count and ms_val.count:
            def combined() -> torch.Tensor:
                return trainer.onestep_loss() + config.multistep_weight * ms_train.loss()

            def val_ms() -> float:
                with torch.no_grad():
                    return float(ms_val.loss(ensemble_mean=True))

            ms_steps = trainer.run_phase(config.multistep_steps, combined, val_ms)
    residual_score = trainer.val_onestep()
    model = SemiParametricModel(physics, trainer.ensemble)
    rmse_res = evaluation_rmse(model, val)
    physics_model = SemiParametricModel(physics, copy.deepcopy(trainer.ensemble).zero_())
    rmse_phys = evaluation_rmse(physics_model, val)
    kept = bool(np.isfinite(rmse_res) and (not np.isfinite(rmse_phys) or rmse_res < rmse_phys))
    if not kept:
        model = physics_model
    report = TrainReport(samples, steps, ms_steps, physics_score, residual_score, rmse_phys, rmse_res, kept,
                         time.perf_counter() - tic)
    LOG.info("residual: %d samples, %d + %d steps, held-out one-step %.3g -> %.3g, 1 s RMSE %.4g m -> %.4g m, %s (%.2f s)",
             samples, steps, ms_steps, physics_score, residual_score, rmse_phys, rmse_res,
             "kept" if kept else "dropped", report.time_s)
    return model.to(dtype), report


def evaluation_rmse(model, dataset: Dataset, horizon_s: float = 1.0, stride: int = 5) -> float:
    """``horizon_s`` open-loop position RMSE of ``model`` on the gap-free windows of ``dataset`` (NaN: none)."""
    steps = max(1, int(round(horizon_s / dataset.dt_s)))
    starts = dataset.window_starts(steps, stride)
    if len(starts) == 0:
        return float("nan")
    m = copy.copy(model)
    m.dt_s = dataset.dt_s
    _, err = open_loop_errors(m, dataset.states, dataset.controls, steps, starts=starts)
    return float(np.sqrt(np.mean(err**2)))

