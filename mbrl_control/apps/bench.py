"""``mbrl-control bench``: time one control step, on the fixed problem or on a race track.

* ``--problem bicycle-track``: the exact problem of ``../shared/bench/PROBLEM.md``
  (:mod:`mbrl_control.benchmarks.bicycle_track`) with its timing protocol (fresh controller, seed 0,
  closed loop from ``x0``; only the controller call timed; steps 0-9 warm-up, median / p95 over
  steps 10-109) and its quality metric (K = 2000 only: 200 steps, mean |d| over x_101..x_200,
  mean over ``--seeds``). ``--peer pytorch-mppi`` runs pytorch-mppi 0.9.1 (eager, or
  ``pytorch-mppi-compile`` with torch.compile) on the same problem in the same run and reports the
  ratio of medians.
* ``--problem track``: the racing MPPI on a real track (``--track``, default Austin) with the
  dynamic single-track plant, the prediction ``--model`` (optionally with a random residual MLP
  of ``--residual 32,32`` hidden units, for timing), same timing protocol.

``--controller ilqr`` is dispatched to :mod:`mbrl_control.apps.ilqr_bench`. ``--json`` prints
one JSON list of row objects (keys of DESIGN.md: controller, backend, problem, samples, horizon,
median_ms, p95_ms; peer, peer_median_ms in the side-by-side mode; plus extras).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import cli_number
from mbrl_control.benchmarks import bicycle_track as bt

PEERS = ("auto", "none", "pytorch-mppi", "pytorch-mppi-compile")
QUALITY_SAMPLES = 2000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controller", default="mppi", choices=("mppi", "ilqr"))
    p.add_argument("--backend", default="numba", choices=("numba", "torch", "cuda"))
    p.add_argument("--problem", default="track", choices=("track", "bicycle-track"))
    p.add_argument("--samples", type=cli_number(1, 1 << 22, integer=True), nargs="+", default=None,
                   help="K values (default: bicycle-track 256 1024 2000 4096 16384; track 2048)")
    p.add_argument("--horizon", type=cli_number(1, 10000, integer=True), default=None, help="T (default: bicycle-track 56, track 100)")
    p.add_argument("--steps", type=cli_number(1, 10**7, integer=True), default=bt.WARMUP_STEPS + bt.TIMED_STEPS,
                   help="closed-loop steps timed per configuration (10 warm-up + the rest)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.add_argument("--peer", default="auto", choices=PEERS,
                   help="side-by-side peer on bicycle-track (auto: pytorch-mppi for MPPI)")
    p.add_argument("--no-peer", action="store_true", help="no peer (same as --peer none)")
    p.add_argument("--variant", default="tuned", choices=("tuned", "canonical"),
                   help="bicycle-track MPPI: canonical PROBLEM.md variant or the project's default (smoothing, null sample)")
    p.add_argument("--seeds", type=cli_number(0, 10000, integer=True), default=5, help="bicycle-track quality: seeds 0..N-1 (0: skip quality)")
    p.add_argument("--track", default="Austin", help="track problem: NAME or centerline CSV")
    p.add_argument("--model", default="dynamic", help="track problem: kinematic | dynamic | semiparametric | FILE")
    p.add_argument("--residual", default=None, help="track problem: add a random residual MLP with these hidden sizes, e.g. 32,32")


def main(args: argparse.Namespace) -> int:
    if args.no_peer:
        args.peer = "none"
    if args.steps <= bt.WARMUP_STEPS:
        raise MbrlError(f"bench: --steps must exceed the {bt.WARMUP_STEPS} warm-up steps")
    if args.horizon is not None and args.horizon < 1:
        raise MbrlError("bench: --horizon must be positive")
    if args.samples is not None and min(args.samples) < 1:
        raise MbrlError("bench: --samples must be positive")
    if args.controller == "ilqr":
        from mbrl_control.apps.ilqr_bench import run_ilqr_bench

        args.no_peer = args.peer == "none"
        rows = run_ilqr_bench(args)
    elif args.problem == "bicycle-track":
        rows = bench_bicycle_track(args)
    else:
        rows = bench_track(args)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"# {machine()}")
        print(format_rows(rows))
    return 0


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# --------------------------------------------------------------------------- bicycle-track

def _settings(variant: str, samples: int, horizon: int) -> bt.BicycleTrackSettings:
    return getattr(bt.BicycleTrackSettings, variant)(samples, horizon)


def pytorch_mppi_controller(samples: int, horizon: int, seed: int = 0, compiled: bool = False):
    """pytorch-mppi 0.9.1 on bicycle-track with PROBLEM.md's settings (its own defaults otherwise)."""
    try:
        import torch
        from pytorch_mppi import MPPI
    except ImportError:
        raise MbrlError("bench: pytorch-mppi is not installed (pip install --no-deps pytorch-mppi==0.9.1 "
                        "arm-pytorch-utilities==0.5.0 pytorch-seed==0.2.0)") from None
    torch.manual_seed(seed)
    sigma = torch.diag(torch.tensor(bt.SIGMA, dtype=torch.float32) ** 2)
    mppi = MPPI(bt.step_torch, bt.stage_cost_torch, 4, sigma, num_samples=samples, horizon=horizon,
                lambda_=bt.LAMBDA, u_min=torch.tensor(bt.U_MIN, dtype=torch.float32),
                u_max=torch.tensor(bt.U_MAX, dtype=torch.float32), U_init=torch.zeros(horizon, 2),
                u_init=torch.zeros(2))
    if compiled:
        mppi.compile()

    def control(x: np.ndarray) -> np.ndarray:
        return mppi.command(torch.as_tensor(x, dtype=torch.float32)).cpu().numpy()

    return control


def _peer_controller(peer: str, samples: int, horizon: int):
    return pytorch_mppi_controller(samples, horizon, compiled=peer == "pytorch-mppi-compile")


def bench_bicycle_track(args: argparse.Namespace) -> list[dict]:
    samples = args.samples or list(bt.SAMPLE_COUNTS)
    horizon = args.horizon or bt.HORIZON
    peer = "pytorch-mppi" if args.peer == "auto" else args.peer
    if args.backend == "cuda":
        raise MbrlError("bench: bicycle-track runs on the numba and torch backends (cuda: use --problem track)")
    rows = []
    for k in samples:
        controller = bt.make_bicycle_mppi(args.backend, _settings(args.variant, k, horizon), seed=0)
        result = bt.run_closed_loop(controller, steps=args.steps)
        timing = bt.timing(result.times_ms)
        row = {"controller": "mppi", "backend": args.backend, "problem": "bicycle-track", "samples": k,
               "horizon": horizon, "variant": args.variant, "median_ms": round(timing.median_ms, 4),
               "p95_ms": round(timing.p95_ms, 4), "first_call_ms": round(timing.first_call_ms, 2)}
        if peer != "none":
            peer_result = bt.run_closed_loop(_peer_controller(peer, k, horizon), steps=args.steps)
            peer_timing = bt.timing(peer_result.times_ms)
            row.update(peer=peer, peer_median_ms=round(peer_timing.median_ms, 4), peer_p95_ms=round(peer_timing.p95_ms, 4),
                       speedup=round(peer_timing.median_ms / max(timing.median_ms, 1e-9), 2))
        if k == QUALITY_SAMPLES and args.seeds > 0:
            row.update(quality(args.backend, args.variant, k, horizon, args.seeds))
        rows.append(row)
    return rows


def quality(backend: str, variant: str, samples: int, horizon: int, seeds: int) -> dict:
    """Closed-loop quality (200 steps) averaged over seeds 0..seeds-1."""
    q = [bt.quality(bt.run_closed_loop(bt.make_bicycle_mppi(backend, _settings(variant, samples, horizon), seed=s)).states)
         for s in range(seeds)]
    return {"seeds": seeds, "mean_abs_d_m": round(float(np.mean([x.mean_abs_d_m for x in q])), 5),
            "max_abs_d_m": round(float(np.max([x.max_abs_d_m for x in q])), 5),
            "mean_abs_speed_error_mps": round(float(np.mean([x.mean_abs_speed_error_mps for x in q])), 5)}


# --------------------------------------------------------------------------- track

def bench_track(args: argparse.Namespace) -> list[dict]:
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.mppi import MPPIConfig, MPPIController
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at
    from mbrl_control.track import resolve_track

    if args.peer not in ("auto", "none"):
        raise MbrlError("bench: peers run on --problem bicycle-track only")
    params = load_vehicle_params()
    dt = 0.02
    track = resolve_track(args.track)
    model = _track_model(args, params, dt)
    horizon = args.horizon or 100
    table = None
    rows = []
    for k in args.samples or [2048]:
        controller = MPPIController(params, dt, track, model, MPPIConfig(backend=args.backend, samples=k, horizon=horizon),
                                    table=table)
        table = controller.table
        plant = SingleTrackPlant(params, PlantConfig())
        x, y, yaw = track.start_pose()
        plant.reset(initial_state_at(x, y, yaw, 0.0, params))
        z = plant.measure()
        controller.reset(z)
        times = np.zeros(args.steps)
        for i in range(args.steps):
            tic = time.perf_counter()
            u = controller.step(z)
            times[i] = (time.perf_counter() - tic) * 1e3
            z = plant.advance(u, dt)
        timing = bt.timing(times)
        rows.append({"controller": "mppi", "backend": args.backend, "problem": "track", "samples": k, "horizon": horizon,
                     "median_ms": round(timing.median_ms, 4), "p95_ms": round(timing.p95_ms, 4),
                     "first_call_ms": round(timing.first_call_ms, 2), "track": track.name,
                     "model": args.model + (f"+residual({args.residual})" if args.residual else "")})
    return rows


def _track_model(args, params, dt):
    from mbrl_control.models.factory import make_model

    model = make_model(args.model, params, dt)
    if not args.residual:
        return model
    try:
        hidden = tuple(int(h) for h in args.residual.split(","))
    except ValueError:
        raise MbrlError(f"bench: --residual must be hidden sizes like 32,32, got '{args.residual}'") from None
    if not hidden or min(hidden) < 1:
        raise MbrlError(f"bench: --residual must be positive hidden sizes, got '{args.residual}'")
    import torch

    from mbrl_control.models.residual import ResidualEnsemble
    from mbrl_control.models.semiparametric import SemiParametricModel

    physics = getattr(model, "physics", model)
    residual = ResidualEnsemble(5, hidden, seed=0)
    with torch.no_grad():
        residual.weights[-1].mul_(0.01)  # small random corrections: timing, not a trained model
    return SemiParametricModel(physics.double(), residual.double()).float()


# --------------------------------------------------------------------------- output

def format_rows(rows: list[dict]) -> str:
    """A small text table (what ``bench`` prints without ``--json``)."""
    lines = []
    for r in rows:
        text = (f"{r['controller']} {r['backend']:5s} {r['problem']:13s} K={r.get('samples', '-')!s:>6} "
                f"T={r['horizon']:>3}: median {r['median_ms']:8.3f} ms  p95 {r['p95_ms']:8.3f} ms")
        if r.get("peer_median_ms") is not None:
            ratio = r["peer_median_ms"] / max(r["median_ms"], 1e-9)
            text += f"  | {r['peer']}: {r['peer_median_ms']:.3f} ms ({ratio:.1f}x)"
        if "mean_abs_d_m" in r:
            text += f"  | mean |d| {r['mean_abs_d_m']:.4f} m"
            if "seeds" in r:
                text += f" over {r['seeds']} seeds"
        lines.append(text)
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
