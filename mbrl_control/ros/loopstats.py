"""Control-loop bookkeeping without allocation per step: timing window for /diagnostics, per-step log.

Times are seconds of ``time.perf_counter`` (steady) for rates and step durations; the log also
keeps the node-clock time of each step (sim time under ``use_sim_time``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM


@dataclass(frozen=True)
class WindowStats:
    """Timing of the last window of control steps."""

    rate_hz: float
    step_p50_ms: float
    step_p99_ms: float
    step_max_ms: float
    late_p99_ms: float
    samples: int
    late_max_ms: float = 0.0


class LoopStats:
    """Ring buffer of the last ``window`` steps plus an optional full log of the first ``log_capacity`` steps."""

    def __init__(self, period_s: float, window: int = 250, log_capacity: int = 0) -> None:
        self.period_s = float(period_s)
        self._publish_s = np.zeros(window)
        self._step_ms = np.zeros(window)
        self._late_ms = np.zeros(window)
        self._head = 0
        self.steps = 0
        self.deadline_misses = 0  # control steps (tick -> publish) longer than the period, as in `sim`
        self.late_commands = 0  # commands published more than a period after their tick was due
        self.late_max_ms = 0.0  # the latest a tick started after it was due, over the run
        self.stale_steps = 0
        self.guarded_steps = 0
        self.log_capacity = int(log_capacity)
        self.log_count = 0
        self.log_t_s = np.zeros(self.log_capacity)
        self.log_publish_s = np.zeros(self.log_capacity)
        self.log_state = np.zeros((self.log_capacity, STATE_DIM))
        self.log_control = np.zeros((self.log_capacity, CONTROL_DIM))
        self.log_step_ms = np.zeros(self.log_capacity)
        self.log_late_ms = np.zeros(self.log_capacity)
        self.log_model_version = np.zeros(self.log_capacity, dtype=np.int64)
        self.log_stale = np.zeros(self.log_capacity, dtype=bool)

    def record(self, t_s: float, publish_s: float, step_ms: float, late_ms: float, state: np.ndarray,
               control: np.ndarray, model_version: int, stale: bool, guarded: bool) -> bool:
        """One control step; returns whether it missed its deadline (the step took longer than the period).

        ``late_ms`` is how late the tick started (scheduling); a late tick plus its step beyond the
        period counts as a late command.
        """
        i = self._head
        self._publish_s[i], self._step_ms[i], self._late_ms[i] = publish_s, step_ms, late_ms
        self._head = (i + 1) % len(self._publish_s)
        self.steps += 1
        period_ms = 1e3 * self.period_s
        missed = step_ms > period_ms
        self.deadline_misses += int(missed)
        self.late_commands += int(step_ms + late_ms > period_ms)
        self.late_max_ms = max(self.late_max_ms, late_ms)
        self.stale_steps += int(stale)
        self.guarded_steps += int(guarded)
        k = self.log_count
        if k < self.log_capacity:
            self.log_t_s[k], self.log_publish_s[k], self.log_step_ms[k], self.log_late_ms[k] = t_s, publish_s, step_ms, late_ms
            self.log_state[k] = state
            self.log_control[k] = control
            self.log_model_version[k], self.log_stale[k] = model_version, stale
            self.log_count = k + 1
        return missed

    def window(self) -> WindowStats | None:
        """Stats of the buffered steps (None before two steps)."""
        n = min(self.steps, len(self._publish_s))
        if n < 2:
            return None
        order = (self._head - n + np.arange(n)) % len(self._publish_s)
        publish = self._publish_s[order]
        span = publish.max() - publish.min()  # robust to the one slot the control thread may be writing
        step, late = self._step_ms[order], self._late_ms[order]
        return WindowStats(rate_hz=(n - 1) / span if span > 0 else 0.0, step_p50_ms=float(np.percentile(step, 50)),
                           step_p99_ms=float(np.percentile(step, 99)), step_max_ms=float(step.max()),
                           late_p99_ms=float(np.percentile(late, 99)), samples=n, late_max_ms=float(late.max()))


def achieved_rate_hz(publish_s: np.ndarray, skip_s: float = 2.0) -> float:
    """Steps per second over the publish times after a warm-up of ``skip_s`` seconds."""
    publish_s = np.asarray(publish_s, dtype=np.float64)
    if len(publish_s) < 2:
        return 0.0
    kept = publish_s[publish_s >= publish_s[0] + skip_s]
    if len(kept) < 2:
        kept = publish_s
    return float((len(kept) - 1) / (kept[-1] - kept[0])) if kept[-1] > kept[0] else 0.0
