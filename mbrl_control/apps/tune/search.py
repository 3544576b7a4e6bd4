"""The study of ``tune``: Optuna's TPE sampler asking, an engine evaluating in parallel."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from mbrl_control.apps.tune.engines import LocalEngine, RayEngine
from mbrl_control.apps.tune.evaluation import EvalSpec
from mbrl_control.apps.tune.space import Dimension


@dataclass
class TuneResult:
    """What a search did: every trial, the default configuration's values, the best trial, where it ran."""

    trials: list[dict] = field(default_factory=list)  # number, values, result (in completion order)
    default_values: dict = field(default_factory=dict)
    best: dict | None = None
    engine: str = "local"
    jobs: int = 1
    tune_s: float = 0.0

    @property
    def default_trial(self) -> dict:
        return next(t for t in self.trials if t["number"] == 0)


def run_search(spec: EvalSpec, dims: list[Dimension], defaults: dict, ray_address: str | None = None,
               progress: bool = True) -> TuneResult:
    """Optuna TPE over ``dims``, the default configuration first, evaluations in parallel."""
    import optuna
    from tqdm import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = spec.config
    dims = [d.widened(defaults[d.name]) for d in dims]
    dists = {d.name: d.distribution() for d in dims}
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.startup_trials, multivariate=True,
                                         constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(defaults)
    engine = RayEngine(spec, cfg.jobs, ray_address) if ray_address else LocalEngine(spec, cfg.jobs)
    result = TuneResult(default_values=defaults, engine=engine.name, jobs=engine.jobs)
    tic = time.perf_counter()
    pending: dict = {}
    asked = 0
    bar = tqdm(total=cfg.trials, file=sys.stderr, disable=not progress, desc="tune", unit="run", dynamic_ncols=True)
    try:
        while len(result.trials) < cfg.trials:
            while len(pending) < engine.jobs and asked < cfg.trials:
                trial = study.ask(dists)
                pending[engine.submit(dict(trial.params))] = trial
                asked += 1
            for handle, outcome in engine.wait_one(pending):
                trial = pending.pop(handle)
                study.tell(trial, outcome["objective"])
                result.trials.append({"number": trial.number, "values": dict(trial.params), **outcome})
                bar.update(1)
                bar.set_postfix(best=f"{study.best_value:.2f}", last=f"{outcome['objective']:.2f}")
    finally:
        bar.close()
        engine.close()
    result.tune_s = round(time.perf_counter() - tic, 2)
    result.best = min(result.trials, key=lambda t: (t["objective"], t["number"]))
    return result
