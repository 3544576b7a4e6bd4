"""What ``tune`` writes: the summary, the tuned YAML and the plot of the search."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from mbrl_control.apps.tune.evaluation import EvalSpec
from mbrl_control.apps.tune.search import TuneResult
from mbrl_control.apps.tune.space import Dimension, plain


def summarize(spec: EvalSpec, plant_desc: str, result: TuneResult, dims: list[Dimension]) -> dict:
    """``tune.json``: the search, the default and the best trial, and the gains."""
    default, best = result.default_trial, result.best
    gain = gain_pct(default, best, "lap_time_s")
    return {
        "track": spec.track.name, "controller": spec.controller, "plant": plant_desc, "engine": result.engine,
        "jobs": result.jobs, "trials": len(result.trials), "tune_s": result.tune_s,
        "time_limit_s": round(spec.time_limit_s, 2), "space": [dataclasses.asdict(d) for d in dims],
        "default": {"values": result.default_values, **trial_facts(default)},
        "best": {"trial": best["number"], "values": best["values"], **trial_facts(best)},
        "lap_time_gain_pct": gain,
        "objective_gain_pct": gain_pct(default, best, "objective"),
        "failed_trials": sum(t["state"] != "complete" for t in result.trials),
    }


def trial_facts(trial: dict) -> dict:
    """What a summary tells of one trial."""
    return {k: trial.get(k) for k in ("objective", "state", "lap_time_s", "violations", "fraction")}


def gain_pct(default: dict, other: dict, key: str) -> float | None:
    """Percent by which ``other`` improves on ``default`` in ``key`` (None unless both finished)."""
    if default.get("state") != "complete" or other.get("state") != "complete":
        return None
    return round(100.0 * (default[key] - other[key]) / default[key], 2)


def write_tuned_yaml(path: Path, base_all: dict, controller: str, tuned: dict, summary: dict) -> None:
    """The base YAML's parameters with the tuned controller section, in ``controller_node: ros__parameters:``."""
    import yaml

    params = copy.deepcopy(base_all)
    params[controller] = json.loads(json.dumps(tuned, default=plain))  # plain floats / ints / lists
    best, default = summary["best"], summary["default"]
    header = (f"# tuned by 'mbrl-control tune' on {summary['track']} ({summary['plant']}), {summary['trials']} evaluations\n"
              f"# best objective {best['objective']:.3f} s (lap {best['lap_time_s']}), default {default['objective']:.3f} s "
              f"(lap {default['lap_time_s']})\n")
    from mbrl_control.config import atomic_write_text

    atomic_write_text(path, header + yaml.safe_dump({"controller_node": {"ros__parameters": params}}, sort_keys=False))


def plot_search(path: Path, result: TuneResult, dims: list[Dimension], summary: dict) -> None:
    """Objective per trial with the best so far, and each parameter against the objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted(result.trials, key=lambda t: t["number"])
    number = np.array([t["number"] for t in trials])
    objective = np.array([t["objective"] for t in trials])
    ok = np.array([t["state"] == "complete" for t in trials])
    cols = 3
    rows = 1 + math.ceil(len(dims) / cols)
    fig = plt.figure(figsize=(13, 3.6 * rows))
    ax = fig.add_subplot(rows, 1, 1)
    ax.scatter(number[ok], objective[ok], s=18, label="finished")
    ax.scatter(number[~ok], objective[~ok], s=22, marker="x", color="red", label="failed / invalid")
    ax.step(number, np.minimum.accumulate(objective), where="post", color="black", label="best so far")
    ax.axhline(summary["default"]["objective"], color="0.5", ls="--", label="default config")
    if ok.any():
        top = max(objective[ok].max(), summary["default"]["objective"])
        ax.set_ylim(objective[ok].min() * 0.97, top * 1.05 if not (~ok).any() else top * 1.15)
    ax.set_xlabel("trial")
    ax.set_ylabel("objective [s]")
    ax.set_title(f"{summary['controller']} on {summary['track']}: {summary['trials']} evaluations")
    ax.legend(loc="upper right")
    for i, dim in enumerate(dims):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        x = [t["values"][dim.name] for t in trials]
        if dim.kind == "choice":
            x = [str(v) for v in x]
        ax.scatter(np.array(x)[ok], objective[ok], s=12, c=number[ok], cmap="viridis")
        if dim.kind != "choice":
            ax.axvline(result.best["values"][dim.name], color="red", lw=0.8)
        if dim.log:
            ax.set_xscale("log")
        ax.set_xlabel(dim.name)
        ax.set_ylabel("objective [s]")
    fig.tight_layout()
    from mbrl_control.sim.plot import save_figure_atomically

    save_figure_atomically(fig, path, dpi=85)
