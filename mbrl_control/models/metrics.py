"""Prediction-quality metrics shared by the runner, system identification and ``fit``/``replay``."""

from __future__ import annotations

import numpy as np
import torch

from mbrl_control.models.layout import S


@torch.no_grad()
def open_loop_errors(model, states: np.ndarray, controls: np.ndarray, horizon_steps: int,
                     stride: int = 1, starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Position error (m) of ``horizon_steps``-step open-loop predictions along a recording.

    ``states[k+1]`` must follow ``states[k]`` under ``controls[k]`` after one model step
    (``model.dt_s``). Every window ``[k, k + horizon_steps]`` (``k`` in ``starts``, default every
    ``stride``-th) is predicted from the recorded ``states[k]`` with the recorded controls, all
    windows batched. Returns (window start indices, final position error of each window).
    """
    states = np.asarray(states, dtype=np.float64)
    controls = np.asarray(controls, dtype=np.float64)
    n = len(states) - horizon_steps
    if n <= 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    if starts is None:
        starts = np.arange(0, n, stride)
    starts = np.asarray(starts, dtype=int)
    starts = starts[starts < n]
    dtype = next((b.dtype for b in model.buffers()), torch.float64)
    device = next((b.device for b in model.buffers()), torch.device("cpu"))
    s = torch.as_tensor(states[starts], dtype=dtype, device=device)
    for j in range(horizon_steps):
        u = torch.as_tensor(controls[starts + j], dtype=dtype, device=device)
        s = model(s, u)
    pred = s[:, [S.X, S.Y]].double().cpu().numpy()
    true = states[starts + horizon_steps][:, [S.X, S.Y]]
    err = np.linalg.norm(pred - true, axis=1)
    err[~np.isfinite(err)] = np.inf
    return starts, err


def open_loop_rmse(model, states: np.ndarray, controls: np.ndarray, horizon_s: float = 1.0, stride: int = 5) -> float:
    """RMSE (m) of the ``horizon_s`` open-loop position error over windows of a recording."""
    steps = max(1, int(round(horizon_s / model.dt_s)))
    _, err = open_loop_errors(model, states, controls, steps, stride=stride)
    if len(err) == 0:
        return float("nan")
    return float(np.sqrt(np.mean(err**2)))
