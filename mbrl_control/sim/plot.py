"""The run picture: driven path coloured by speed, errors and speed over distance, model error, latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mbrl_control.models.layout import S  # noqa: E402
from mbrl_control.track import Track  # noqa: E402


def plot_run(path: Path, track: Track, log, model_error: tuple[np.ndarray, np.ndarray], summary: dict, period_ms: float) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    ax = axes[0, 0]
    right, left = track.bounds_xy()
    for bound in (right, left):
        closed = np.vstack([bound, bound[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color="0.35", lw=0.8)
    if len(log.state):
        sc = ax.scatter(log.state[:, S.X], log.state[:, S.Y], c=log.state[:, S.V], s=2, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="speed [m/s]")
        out = ~log.inside.astype(bool)
        if out.any():
            ax.scatter(log.state[out, S.X], log.state[out, S.Y], s=8, color="red", label="outside bounds")
            ax.legend(loc="upper right")
    laps = ", ".join(f"{x:.2f}" for x in summary["lap_times_s"]) or "none"
    ax.set_title(f"{summary['track']}: {summary['controller']} on {summary['plant']} plant\nlaps [s]: {laps}")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")

    ax = axes[0, 1]
    if len(log.progress_m):
        distance = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(log.state[:, [S.X, S.Y]], axis=0), axis=1))))
        ax.plot(distance, log.lateral_m, color="tab:blue", lw=0.8)
        ax.set_ylabel("lateral offset from centerline [m]", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(distance, log.state[:, S.V], color="tab:orange", lw=0.8)
        ax2.set_ylabel("speed [m/s]", color="tab:orange")
    ax.set_xlabel("distance driven [m]")
    ax.set_title("lateral offset and speed")

    ax = axes[1, 0]
    t, err = model_error
    if len(t):
        ax.plot(t, err, ".", ms=3)
        ax.set_yscale("log")
    rmse = summary.get("model_rmse", {})
    ax.set_title(f"controller model: 1 s open-loop position error (RMSE {_fmt(rmse.get('initial'))} -> {_fmt(rmse.get('final'))} m)")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("error [m]")

    ax = axes[1, 1]
    if len(log.latency_ms):
        ax.hist(log.latency_ms, bins=60, color="tab:green")
    ax.axvline(period_ms, color="red", ls="--", label=f"deadline {period_ms:.0f} ms")
    lat = summary["step_latency_ms"]
    ax.set_title(f"control step latency: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    ax.set_xlabel("ms")
    ax.legend()
    fig.tight_layout()
    save_figure_atomically(fig, path, dpi=110)


def save_figure_atomically(fig, path, **kwargs) -> None:
    """``fig.savefig`` into a temporary file next to ``path``, then ``os.replace`` (never a partial image);
    the figure is closed afterwards, whatever happened."""
    try:
        _save_atomically(fig, path, **kwargs)
    finally:
        plt.close(fig)


def _save_atomically(fig, path, **kwargs) -> None:
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, **kwargs)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
