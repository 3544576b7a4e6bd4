"""Online refit: a rolling telemetry buffer, background refits, a validation gate, atomic hot swaps.

Timeline (``deterministic`` mode, the offline simulator): once ``first_refit_s`` of data is in,
and then every ``refit_period_s`` (stretched by ``refit_backoff`` after each refit that brings
no better model, up to ``refit_period_max_s``: a converged model costs little CPU), the buffer is snapshotted at sim time ``t`` and a refit job is
handed to a background worker (a separate process by default, ``torch`` on one thread, niced, so
the controller keeps its core and the GIL). The result is taken at sim time
``t + handover_delay_s``, waiting for the worker there if needed: that wait happens between
control steps (after the controller's timed step), so it never delays a command, and the run
stays reproducible for a seed whatever the machine's load. In live use (``deterministic: false``)
the result is taken at the first poll after the worker finishes.

The job: the latest ``holdout_s`` of the snapshot is held out; parametric identification and
residual training (:func:`~mbrl_control.sysid.fit.fit_model`, warm-started from the current
model's parameters) use the rest; the candidate is written to a versioned file
``model_vNNN.pt`` (plus ``model_vNNN.json`` with its metrics) in ``out_dir``.

The gate (in the caller's process, on the file actually written): the candidate is loaded
(a corrupt file or one with wrong shapes is rejected), its 1 s open-loop position RMSE on the
held-out window is computed (NaN / inf is rejected) and compared with the current model's on the
same window; only a strictly better model is accepted. Every rejection is logged with its reason
(logger ``mbrl_control.sysid``) and the current model stays. An accepted model replaces the
current one in one reference assignment (and ``current.pt`` atomically), and is returned once
by :meth:`OnlineSysid.poll_new_model`.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, atomic_write_text, validate_vehicle_params
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM
from mbrl_control.models.semiparametric import SemiParametricModel
from mbrl_control.sysid.config import OnlineConfig, build_config
from mbrl_control.sysid.dataset import Dataset, from_samples
from mbrl_control.sysid.train import evaluation_rmse

LOG = logging.getLogger("mbrl_control.sysid")


class RollingBuffer:
    """The latest ``capacity`` samples (time, state, control) in preallocated arrays (no allocation per push)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.t_s = np.zeros(self.capacity)
        self.states = np.zeros((self.capacity, STATE_DIM))
        self.controls = np.zeros((self.capacity, CONTROL_DIM))
        self.count = 0  # samples pushed in total

    def push(self, t_s: float, state: np.ndarray, control: np.ndarray) -> None:
        i = self.count % self.capacity
        self.t_s[i] = t_s
        self.states[i] = state
        self.controls[i] = control
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the buffered samples in time order."""
        n = len(self)
        order = (np.arange(self.count - n, self.count)) % self.capacity
        return self.t_s[order].copy(), self.states[order].copy(), self.controls[order].copy()


# ---------------------------------------------------------------------------------------------- worker side
PARENT_WATCH_PERIOD_S = 0.25
"""How often a worker process checks that its parent is still alive."""


def _watch_parent(parent_pid: int) -> None:
    """Worker side: end this process as soon as the parent is gone (a SIGKILLed owner leaves no orphan).

    A daemon thread polls ``getppid()``: re-parenting means the parent died (also between the spawn and
    this call). Not ``PR_SET_PDEATHSIG``: Linux sends it when the *thread* that spawned the worker ends,
    and the pool may be started from a short-lived callback thread.
    """
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(PARENT_WATCH_PERIOD_S)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_init(nice: int, parent_pid: int | None = None) -> None:
    """Worker process setup: dies with its parent, lower priority, one torch thread (small tensors; the
    controller owns the other core).

    SIGINT is ignored: a terminal Ctrl-C reaches the whole process group, and the owner stops the worker itself.
    """
    if parent_pid is not None:
        _watch_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass
    torch.set_num_threads(1)


def _warm_up() -> bool:
    """A no-op job: makes the worker import torch and the sysid modules before the first refit."""
    return True


def refit_job(job: dict[str, Any]) -> dict[str, Any]:
    """Fit a candidate on the snapshot's training part, write it as a versioned file, gate metrics.

    Runs in the worker. Never raises: an error comes back as ``{"error": ...}``.
    """
    from mbrl_control.sysid.fit import fit_model

    try:
        torch.manual_seed(job["seed"])
        config = job["config"]
        train, holdout = job["train"], job["holdout"]
        prior = validate_vehicle_params(job["prior"], source="sysid prior")
        initial = validate_vehicle_params(job["initial"], source="sysid warm start") if job["initial"] else None
        result = fit_model(train, prior, config.fit, initial=initial, dtype=job["dtype"])
        current = job["current"]
        rmse_current = evaluation_rmse(current, holdout) if current is not None else float("nan")
        rmse_candidate = evaluation_rmse(result.model, holdout)
        metrics = {**result.metrics(), "version": job["version"], "t_trigger_s": job["t_trigger_s"],
                   "rmse_candidate_m": rmse_candidate, "rmse_current_m": rmse_current,
                   "train_s": round(train.duration_s, 3), "holdout_s": round(holdout.duration_s, 3)}
        result.model.metrics.update(metrics)
        path = Path(job["path"])
        result.model.save(path)
        return {"path": str(path), "metrics": metrics, "error": None}
    except MbrlError as exc:
        return {"path": None, "metrics": {}, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the caller, never kills the worker
        tb = traceback.format_exc(limit=3).strip().splitlines()
        return {"path": None, "metrics": {}, "error": f"{type(exc).__name__}: {exc} ({tb[-3] if len(tb) >= 3 else ''})"}


def _split_holdout(data: Dataset, holdout_s: float) -> tuple[Dataset, Dataset]:
    """(training part, latest ``holdout_s`` window)."""
    n_hold = min(len(data) - 1, max(2, int(round(holdout_s / data.dt_s))))
    return data.segment(0, len(data) - n_hold), data.segment(len(data) - n_hold, len(data))


class _InlineExecutor:
    """Runs jobs synchronously at submission (tests, debugging); same interface as the pools."""

    def submit(self, fn, *args) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _SpawnWithSigintBlocked(multiprocessing.context.SpawnProcess):
    """A spawned worker that starts with SIGINT blocked (the mask survives fork and exec).

    A terminal Ctrl-C goes to the whole process group: without this, one that lands while the worker
    still imports torch (before ``_worker_init`` ignores SIGINT) prints a KeyboardInterrupt traceback.
    The spawning thread's own mask is restored at once (a pending SIGINT is delivered to it then).
    """

    def start(self) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _SpawnWithSigintBlocked


def _make_executor(config: OnlineConfig):
    if config.worker == "inline":
        return _InlineExecutor()
    if config.worker == "thread":
        return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sysid")
    context = _WorkerContext()  # spawn: no fork of a process holding torch threads
    return cf.ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_worker_init,
                                  initargs=(config.worker_nice, os.getpid()))


# ---------------------------------------------------------------------------------------------- caller side
class OnlineSysid:
    """The :class:`~mbrl_control.sim.runner.OnlineModelUpdater` of the closed loop and the sysid node."""

    def __init__(self, model, params: VehicleParams, control_dt_s: float, config: OnlineConfig | None = None) -> None:
        self.config = config or OnlineConfig()
        self.prior = params
        self.dt_s = float(control_dt_s)
        self.current = model
        self.dtype = next((b.dtype for b in model.buffers()), torch.float32) if model is not None else torch.float32
        self.buffer = RollingBuffer(int(math.ceil(self.config.buffer_s / self.dt_s)) + 1)
        self.out_dir = Path(self.config.out_dir) if self.config.out_dir else Path(tempfile.mkdtemp(prefix="mbrl_sysid_"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.version = 0
        self.accepted = 0
        self.history: list[dict[str, Any]] = []  # one record per refit (version, decision, reason, metrics)
        self._executor = _make_executor(self.config)
        self._job: cf.Future | None = None
        self._job_info: dict[str, Any] = {}
        self._next_refit_s = self.config.first_refit_s
        self._period_s = self.config.refit_period_s  # grows while refits bring nothing (backoff)
        self._t_s = 0.0
        self._t0_s: float | None = None
        self._ready: Any = None
        self._lock = threading.Lock()
        if self.config.worker == "process":
            self._executor.submit(_warm_up)

    # -- OnlineModelUpdater protocol
    def observe(self, t_s: float, state: np.ndarray, control: np.ndarray) -> None:
        """Buffer one control period's measurement and command; start a refit when one is due."""
        self._t_s = float(t_s)
        if self._t0_s is None:
            self._t0_s = self._t_s
        self.buffer.push(t_s, state, control)
        if self._job is None and self._t_s - self._t0_s >= self._next_refit_s:
            self._next_refit_s = self._t_s - self._t0_s + self._period_s
            self._start_refit()

    def poll_new_model(self):
        """The newly accepted model, once; ``None`` otherwise. Deterministic mode waits at the hand-over time."""
        job = self._job
        if job is not None:
            due = self._t_s >= self._job_info["t_handover_s"] - 1e-9
            if (self.config.deterministic and due) or (not self.config.deterministic and job.done()):
                self._job = None
                self._finish(job)
        with self._lock:
            model, self._ready = self._ready, None
        return model

    def close(self) -> None:
        """Stop the worker; a refit in progress is discarded. A worker process is terminated, not waited for:
        it may still be importing torch or fitting, and a node's teardown must end within seconds."""
        if self._job is not None:
            self._job.cancel()
            self._job = None
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        if not processes:
            self._executor.shutdown(wait=True, cancel_futures=True)
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=2.0)

    # -- refit bookkeeping
    def _start_refit(self) -> None:
        t, states, controls = self.buffer.snapshot()
        if (len(t) - 1) * self.dt_s < self.config.holdout_s + 2.0:
            return
        self.version += 1
        current = self.current
        initial = current.params.as_dict() if isinstance(current, SemiParametricModel) else None
        train, holdout = _split_holdout(from_samples(t, states, controls, self.dt_s, self.config.fit.dataset), self.config.holdout_s)
        path = self.out_dir / f"model_v{self.version:03d}.pt"
        job = {"version": self.version, "seed": self.config.seed + self.version, "config": self.config,
               "train": train, "holdout": holdout, "prior": self.prior.as_dict(), "initial": initial,
               "current": current if self.config.worker != "thread" else copy.deepcopy(current),
               "dtype": self.dtype, "path": str(path), "t_trigger_s": self._t_s}
        self._job_info = {"version": self.version, "t_trigger_s": self._t_s,
                          "t_handover_s": self._t_s + self.config.handover_delay_s, "holdout": holdout}
        try:
            self._job = self._executor.submit(refit_job, job)
        except (RuntimeError, cf.BrokenExecutor) as exc:
            self._record(self.version, False, f"worker unavailable: {exc}", {})
            self._executor = _make_executor(self.config)
            self._job = None
            return
        LOG.info("refit v%d started at t=%.2f s on %.1f s of data", self.version, self._t_s - (self._t0_s or 0.0),
                 (len(t) - 1) * self.dt_s)

    def _finish(self, job: cf.Future) -> None:
        info = self._job_info
        try:
            self._decide(job, info)
        finally:  # the next refit counts from this one's trigger, with the period the decision left
            self._next_refit_s = info["t_trigger_s"] - (self._t0_s or 0.0) + self._period_s

    def _decide(self, job: cf.Future, info: dict[str, Any]) -> None:
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker is a rejected refit, not a crashed car
            self._record(info["version"], False, f"worker failed: {type(exc).__name__}: {exc}", {})
            if isinstance(exc, cf.BrokenExecutor):
                self._executor = _make_executor(self.config)
            return
        if result.get("error"):
            self._record(info["version"], False, f"refit failed: {result['error']}", {})
            return
        self.consider(result["path"], info["holdout"], result.get("metrics", {}), info["version"])

    def consider(self, path: str | Path, holdout: Dataset, metrics: dict[str, Any] | None = None,
                 version: int | None = None) -> bool:
        """The validation gate for a candidate model file; accepts (hot-swaps) it or logs why not."""
        metrics = dict(metrics or {})
        version = self.version if version is None else version
        try:
            candidate = SemiParametricModel.load(path, dtype=self.dtype)
        except MbrlError as exc:
            return self._record(version, False, f"corrupt or mismatched model file: {exc}", metrics)
        if not np.isclose(candidate.dt_s, self.dt_s, rtol=1e-6):
            return self._record(version, False, f"model step {candidate.dt_s} s differs from the control period {self.dt_s} s", metrics)
        try:
            rmse_new = evaluation_rmse(candidate, holdout)
        except Exception as exc:  # noqa: BLE001 - e.g. a shape error deep in a damaged model
            return self._record(version, False, f"validation failed: {type(exc).__name__}: {exc}", metrics)
        if not math.isfinite(rmse_new):
            return self._record(version, False, f"validation RMSE is {rmse_new} (NaN/inf predictions or no windows)", metrics)
        rmse_cur = metrics.get("rmse_current_m")
        if rmse_cur is None or not math.isfinite(float(rmse_cur)):
            rmse_cur = evaluation_rmse(self.current, holdout) if self.current is not None else float("inf")
        rmse_cur = float(rmse_cur) if math.isfinite(float(rmse_cur)) else float("inf")
        metrics.update(rmse_candidate_m=rmse_new, rmse_current_m=rmse_cur)
        needed = rmse_cur * (1.0 - self.config.improvement) - self.config.min_gain_m
        if not rmse_new < needed:
            return self._record(version, False, f"not better enough on the held-out window ({rmse_new:.3g} m vs current "
                                f"{rmse_cur:.3g} m; needs < {needed:.3g} m)", metrics, routine=True)
        candidate.save(self.out_dir / "current.pt")
        with self._lock:
            self.current = candidate
            self._ready = candidate
        self.accepted += 1
        return self._record(version, True, f"accepted: held-out 1 s RMSE {rmse_new:.3g} m < current {rmse_cur:.3g} m", metrics)

    def _record(self, version: int, accepted: bool, reason: str, metrics: dict[str, Any], routine: bool = False) -> bool:
        """Log and store a decision (``routine``: an expected rejection, logged at INFO, not WARNING).

        Also adapts the refit period: back to ``refit_period_s`` after an accepted model, times
        ``refit_backoff`` (up to ``refit_period_max_s``) after a refit that brought nothing.
        """
        cfg = self.config
        longest = max(cfg.refit_period_max_s, cfg.refit_period_s)
        self._period_s = cfg.refit_period_s if accepted else min(longest, self._period_s * cfg.refit_backoff)
        entry = {"version": version, "t_s": self._t_s, "accepted": accepted, "reason": reason,
                 **{k: _json_value(v) for k, v in metrics.items() if isinstance(v, (int, float, str, bool, type(None)))}}
        self.history.append(entry)
        (LOG.info if accepted or routine else LOG.warning)("model v%d %s", version, reason if accepted else f"rejected: {reason}")
        try:
            atomic_write_text(self.out_dir / f"model_v{version:03d}.json", json.dumps(entry, indent=2, default=str) + "\n")
        except OSError as exc:
            LOG.warning("cannot write the metrics of model v%d: %s", version, exc)
        return accepted


def _json_value(value):
    """JSON has no NaN / inf: those become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def make_online_updater(model, params: VehicleParams, control_dt_s: float, options: dict) -> OnlineSysid:
    """Factory called by ``sim --online-sysid`` (options: the ``sysid`` section of the YAML, see OnlineConfig)."""
    config = build_config(OnlineConfig, options, "sysid")
    return OnlineSysid(model, params, control_dt_s, config)

