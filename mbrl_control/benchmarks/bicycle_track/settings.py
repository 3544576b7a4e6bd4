"""MPPI settings on bicycle-track (the canonical and the tuned variant); :func:`.mppi.solver_config`
maps them onto the generic solver's :class:`~mbrl_control.control.mppi_solver.SolverConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from mbrl_control.models.bicycle_track_spec import HORIZON, LAMBDA, SIGMA


@dataclass(frozen=True)
class BicycleTrackSettings:
    """MPPI settings on bicycle-track. The canonical variant of PROBLEM.md has the defaults of the
    first block; ``smoothing_window``/``null_samples``/``noise_alpha`` are this project's additions."""

    samples: int = 2000
    horizon: int = HORIZON
    sigma_accel: float = float(SIGMA[0])
    sigma_steer: float = float(SIGMA[1])
    lam: float = LAMBDA
    smoothing_window: int = 0  # Savitzky-Golay window over the horizon (0: off)
    smoothing_order: int = 2
    null_samples: int = 0  # samples that keep the nominal sequence unperturbed
    noise_alpha: float = 0.0  # AR(1) coloured noise along the horizon (0: white)

    @staticmethod
    def canonical(samples: int, horizon: int = HORIZON) -> "BicycleTrackSettings":
        """PROBLEM.md's canonical variant, the one peers are compared on."""
        return BicycleTrackSettings(samples=samples, horizon=horizon)

    @staticmethod
    def tuned(samples: int, horizon: int = HORIZON) -> "BicycleTrackSettings":
        """The project's default variant: canonical + smoothing of the nominal sequence + one null sample."""
        return BicycleTrackSettings(samples=samples, horizon=horizon, smoothing_window=9, null_samples=1)
