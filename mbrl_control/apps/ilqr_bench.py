"""``mbrl-control bench --controller ilqr``: iLQR/DDP solve times with the CasADi/IPOPT NMPC side by side.

Problems:

* ``bicycle-track`` (``../shared/bench/PROBLEM.md``, T=56): the closed loop of 200 steps from
  ``x_0``, warm-started, iLQR capped at 10 iterations; median / p95 of the solve time over
  steps 10-109 and the quality metrics over ``x_101..x_200``; the same for the NMPC.
* ``track`` (T=100 by default): the car (dynamic single-track model, RK4 at the control period)
  on a real track with the smooth racing cost: the controller's closed loop on the built-in
  plant for 300 control steps (6 s from a standing start), timing every solve after the first
  50 (wall clock, and process CPU time as ``cpu_median_ms``, which a busy machine disturbs
  less); the NMPC on the last 20 of those states as the peer (it is slow).

Each row has the DESIGN.md keys ``controller, backend, problem, samples (null), horizon,
median_ms, p95_ms, peer, peer_median_ms`` plus solver details.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from mbrl_control import MbrlError

PEER_NAME = "casadi-ipopt"


def bicycle_track_ilqr(horizon: int, ddp: bool = False, max_iter: int = 10):
    """A PROBLEM.md controller ``x -> u`` backed by the compiled iLQR (or DDP) solve, and its info list."""
    from mbrl_control.benchmarks import bicycle_track as bt
    from mbrl_control.benchmarks.bicycle_track.gradient import bicycle_track_problem
    from mbrl_control.kernels import ilqr as kern

    prob = bicycle_track_problem()
    ws = kern.make_workspace(4, 2, horizon, bt.U_MIN, bt.U_MAX)
    opts = kern.solver_options(max_iter=max_iter, ddp=ddp)
    iterations: list[int] = []

    def controller(x: np.ndarray) -> np.ndarray:
        _, iters, _ = kern.solve(prob, x, ws, opts)
        iterations.append(iters)
        u = ws.U[0].copy()
        kern.shift_plan(ws.U, ws.K, True)
        return u

    return controller, iterations


def bench_bicycle_track(horizon: int | None = None, peer: bool = True) -> list[dict]:
    """Rows for iLQR and DDP on bicycle-track, each with the NMPC measured in the same process."""
    from mbrl_control.benchmarks import bicycle_track as bt
    from mbrl_control.benchmarks.bicycle_track.gradient import BicycleTrackNMPC

    T = bt.HORIZON if horizon is None else int(horizon)
    peer_row: dict = {}
    if peer:
        nmpc = BicycleTrackNMPC(horizon=T)
        res = bt.run_closed_loop(nmpc)
        tim, q = bt.timing(res.times_ms), bt.quality(res.states)
        peer_row = {"peer": PEER_NAME, "peer_median_ms": tim.median_ms, "peer_p95_ms": tim.p95_ms,
                    "peer_iterations_median": float(np.median(nmpc.iterations[bt.WARMUP_STEPS:bt.WARMUP_STEPS + bt.TIMED_STEPS])),
                    "peer_mean_abs_d_m": q.mean_abs_d_m}
    rows = []
    for variant in ("ilqr", "ddp"):
        controller, iterations = bicycle_track_ilqr(T, ddp=variant == "ddp")
        controller(bt.X0.copy())  # compile outside the protocol (cached on disk after the first run)
        controller, iterations = bicycle_track_ilqr(T, ddp=variant == "ddp")
        res = bt.run_closed_loop(controller)
        tim, q = bt.timing(res.times_ms), bt.quality(res.states)
        window = iterations[bt.WARMUP_STEPS:bt.WARMUP_STEPS + bt.TIMED_STEPS]
        row = {"controller": "ilqr", "variant": variant, "backend": "numba", "problem": "bicycle-track",
               "samples": None, "horizon": T, "median_ms": tim.median_ms, "p95_ms": tim.p95_ms,
               "first_call_ms": tim.first_call_ms, "iterations_median": float(np.median(window)),
               "mean_abs_d_m": q.mean_abs_d_m, "max_abs_d_m": q.max_abs_d_m,
               "mean_abs_speed_error_mps": q.mean_abs_speed_error_mps, **peer_row}
        if peer_row:
            row["speedup_vs_peer"] = peer_row["peer_median_ms"] / max(tim.median_ms, 1e-9)
        rows.append(row)
    return rows


def bench_track(track_name: str = "Austin", horizon: int = 100, steps: int = 300, peer_steps: int = 20,
                peer: bool = True, model: str = "dynamic") -> list[dict]:
    """Rows for the car on a real track: iLQR (and DDP) solve times in the closed loop; NMPC as the peer."""
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.ilqr import ILQRConfig, ILQRController
    from mbrl_control.models.factory import make_model
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at
    from mbrl_control.track import resolve_track

    params = load_vehicle_params()
    track = resolve_track(track_name)
    dt = 0.02
    prediction = make_model(model, params, dt)
    rows = []
    states_for_peer: list[np.ndarray] = []
    for variant in ("ilqr", "ddp"):
        ctrl = ILQRController(params, dt, track, prediction, ILQRConfig(horizon=horizon, ddp=variant == "ddp"))
        plant = SingleTrackPlant(params, PlantConfig())
        x0, y0, yaw0 = track.start_pose()
        plant.reset(initial_state_at(x0, y0, yaw0, 0.0, params))
        ctrl.reset(plant.state)
        times, cpu, iters = [], [], []
        for k in range(steps):
            state = plant.state
            tic, cpu_tic = time.perf_counter(), time.process_time()
            u = ctrl.step(state)
            times.append((time.perf_counter() - tic) * 1e3)
            cpu.append((time.process_time() - cpu_tic) * 1e3)
            iters.append(ctrl.last_iterations)
            if variant == "ilqr" and k >= steps - peer_steps:
                states_for_peer.append(state)
            plant.advance(u, dt)
        window = np.asarray(times[min(50, steps // 2):])
        rows.append({"controller": "ilqr", "variant": variant, "backend": "numba", "problem": "track",
                     "track": track.name, "model": model, "samples": None, "horizon": horizon,
                     "median_ms": float(np.median(window)), "p95_ms": float(np.percentile(window, 95)),
                     "cpu_median_ms": float(np.median(cpu[min(50, steps // 2):])),
                     "iterations_median": float(np.median(iters[min(50, steps // 2):])),
                     "speed_mps_final": float(plant.state[3])})
    if peer and states_for_peer:
        from mbrl_control.control.nmpc import NMPCController

        nmpc = NMPCController(params, dt, track, prediction, {"horizon": horizon})
        nmpc.reset(states_for_peer[0])
        peer_times = []
        for state in states_for_peer:
            tic = time.perf_counter()
            nmpc.step(state)
            peer_times.append((time.perf_counter() - tic) * 1e3)
        peer_times = np.asarray(peer_times[1:] if len(peer_times) > 1 else peer_times)
        for row in rows:
            row.update({"peer": PEER_NAME, "peer_median_ms": float(np.median(peer_times)),
                        "peer_p95_ms": float(np.percentile(peer_times, 95))})
    return rows


def run_ilqr_bench(args: argparse.Namespace) -> list[dict]:
    """Entry point of ``mbrl-control bench --controller ilqr`` (dispatched by apps/bench.py)."""
    backend = getattr(args, "backend", None) or "numba"
    if backend != "numba":
        raise MbrlError(f"bench: iLQR has only the 'numba' backend (got '{backend}')")
    problem = getattr(args, "problem", None) or "bicycle-track"
    horizon = getattr(args, "horizon", None)
    if horizon is not None and int(horizon) < 2:
        raise MbrlError("bench: --horizon must be at least 2")
    peer = not getattr(args, "no_peer", False)
    if problem == "bicycle-track":
        return bench_bicycle_track(horizon, peer=peer)
    if problem == "track":
        track = getattr(args, "track", None) or "Austin"
        model = getattr(args, "model", None) or "dynamic"
        return bench_track(track, horizon=int(horizon or 100), peer=peer, model=model)
    raise MbrlError(f"bench: unknown problem '{problem}' (choose from bicycle-track, track)")


def format_rows(rows: list[dict]) -> str:
    """A small text table of the rows (what ``bench`` prints without ``--json``)."""
    lines = []
    for r in rows:
        peer = ""
        if r.get("peer_median_ms") is not None:
            peer = f"  | {r['peer']}: {r['peer_median_ms']:.3f} ms ({r['peer_median_ms'] / max(r['median_ms'], 1e-9):.1f}x)"
        extra = f"  |d| mean {r['mean_abs_d_m']:.2e} m" if "mean_abs_d_m" in r else ""
        lines.append(f"{r['controller']}/{r.get('variant', '')} {r['backend']} {r['problem']} T={r['horizon']}: "
                     f"median {r['median_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms, "
                     f"iters {r.get('iterations_median', math.nan):.0f}{extra}{peer}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Standalone use: ``python -m mbrl_control.apps.ilqr_bench [--problem P] [--horizon T] [--json]``."""
    import json

    p = argparse.ArgumentParser(prog="ilqr_bench")
    p.add_argument("--problem", default="bicycle-track", choices=["bicycle-track", "track"])
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--track", default="Austin")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = run_ilqr_bench(args)
    print(json.dumps(rows) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
