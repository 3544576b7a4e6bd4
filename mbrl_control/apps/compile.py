"""``mbrl-control compile``: generate and compile every kernel a run needs, once, into the on-disk caches.

Generated code (the iLQR derivatives, the kernels derived from the model definitions) is not
checked in, and Numba compiles on first use: a fresh checkout or any edit of the package pays
that at the first control step, or in every parallel test worker at once. This command pays it
up front, calling each kernel once on tiny inputs: MPPI with the dynamic and kinematic models,
each with and without a residual; iLQR likewise; the bicycle-track benchmark's MPPI and iLQR; the
sysid steering scan; the command interface's dead-time prediction. Later processes load the results from the caches
(``~/.cache/mbrl_control``; see :func:`mbrl_control.kernels.select_cache_dir` and
:func:`mbrl_control.kernels.codegen.generated_root`).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

CONTROL_DT_S = 0.02
"""Control period of the warmed controllers (any value compiles the same kernels)."""
SMALL_OPTIONS = {"mppi": {"samples": 64, "horizon": 10}, "ilqr": {"horizon": 10, "max_iter": 1}}
"""Tiny problem sizes: sizes are run-time values, so these compile exactly what a full run uses."""
MODEL_KINDS = ("dynamic", "kinematic")


def _controller_item(controller: str, kind: str, residual: bool, params, track) -> Callable[[], None]:
    """Build ``controller`` on a ``kind`` model (a zero residual ensemble if ``residual``); step once, read the plan."""
    def run() -> None:
        from mbrl_control.control.factory import make_controller
        from mbrl_control.models.factory import make_model
        from mbrl_control.models.layout import STATE_DIM, S
        from mbrl_control.models.semiparametric import physics_only

        model = (physics_only(params, CONTROL_DT_S, kind=kind) if residual
                 else make_model(kind, params, CONTROL_DT_S))
        ctrl = make_controller(controller, params, CONTROL_DT_S, track, model, SMALL_OPTIONS[controller])
        x, y, yaw = track.start_pose()
        state = np.zeros(STATE_DIM)
        state[[S.X, S.Y, S.YAW, S.V]] = x, y, yaw, 2.0
        ctrl.step(state)
        ctrl.planned_xy()

    return run


def _bicycle_track_mppi() -> None:
    """The bicycle-track benchmark's fused MPPI kernel (tuned variant: smoothing and a null sample)."""
    from mbrl_control.benchmarks.bicycle_track import X0, BicycleTrackSettings, make_bicycle_mppi

    make_bicycle_mppi("numba", BicycleTrackSettings.tuned(64))(X0)


def _bicycle_track_ilqr() -> None:
    """The bicycle-track benchmark's iLQR solve (its own problem type: a specialisation of its own)."""
    from mbrl_control.apps.ilqr_bench import bicycle_track_ilqr
    from mbrl_control.benchmarks.bicycle_track import X0

    controller, _ = bicycle_track_ilqr(horizon=10, max_iter=1)
    controller(X0)


def _steering_scan(params) -> Callable[[], None]:
    def run() -> None:
        from mbrl_control.sysid.dataset import estimate_steering

        estimate_steering(np.zeros(4), CONTROL_DT_S, params)

    return run


def _dead_time_prediction(params) -> Callable[[], None]:
    def run() -> None:
        from mbrl_control.control.command_interface import ActuationConfig, CommandInterface

        CommandInterface(ActuationConfig(), params, CONTROL_DT_S)  # compiles its dead-time kernel

    return run


def _ilqr_derivatives() -> None:
    from mbrl_control.kernels.casadi_codegen import ilqr_derivatives

    ilqr_derivatives()


def warm_items() -> list[tuple[str, Callable[[], None]]]:
    """(name, action) of everything :func:`warm_caches` runs, in order, on the default vehicle and track."""
    from mbrl_control import share_dir
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.track import load_track

    params = load_vehicle_params()
    track = load_track(share_dir() / "sim" / "default_centerline.csv")
    items: list[tuple[str, Callable[[], None]]] = [("ilqr derivatives (generate)", _ilqr_derivatives)]
    for controller in ("mppi", "ilqr"):
        for kind in MODEL_KINDS:
            for residual in (False, True):
                name = f"{controller} {kind}{' + residual' if residual else ''}"
                items.append((name, _controller_item(controller, kind, residual, params, track)))
    items += [("bicycle-track mppi", _bicycle_track_mppi), ("bicycle-track ilqr", _bicycle_track_ilqr),
              ("sysid steering scan", _steering_scan(params)), ("dead-time prediction", _dead_time_prediction(params))]
    return items


def warm_caches(progress: Callable[[str], None] | None = print) -> dict[str, float]:
    """Generate and compile every kernel once (see the module docstring); seconds per item, in order."""
    seconds: dict[str, float] = {}
    for name, action in warm_items():
        start = time.perf_counter()
        action()
        seconds[name] = time.perf_counter() - start
        if progress is not None:
            progress(f"{name:<32s} {seconds[name]:8.2f} s")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the command always warms everything."""


def main(args: argparse.Namespace) -> int:
    """Warm every cache; one line per item with its seconds, the total at the end."""
    start = time.perf_counter()
    import mbrl_control.kernels as kernels
    from mbrl_control.kernels.codegen import generated_root

    print(f"numba cache: {kernels.CACHE_DIR_IN_USE or 'NUMBA_CACHE_DIR / Numba default'}; "
          f"generated code: {generated_root()}")
    warm_caches(progress=print)
    print(f"{'total':<32s} {time.perf_counter() - start:8.2f} s")
    return 0
