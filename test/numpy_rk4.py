"""An independent float64 RK4 of a motion-model definition's NumPy evaluation (tests' reference plant)."""

from __future__ import annotations

import numpy as np

from mbrl_control.models.motion_model import numpy_derivative


def rk4_step(model, params, x: np.ndarray, u: np.ndarray, dt: float, substeps: int) -> np.ndarray:
    """``x`` after ``dt`` seconds under constant ``u``: ``substeps`` classic RK4 steps."""
    h = dt / substeps
    for _ in range(substeps):
        f = lambda z: numpy_derivative(model, z, u, params)  # noqa: E731
        k1 = f(x)
        k2 = f(x + 0.5 * h * k1)
        k3 = f(x + 0.5 * h * k2)
        k4 = f(x + h * k3)
        x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
