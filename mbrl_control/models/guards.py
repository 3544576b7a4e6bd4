"""Guards on model files and loaded models: a memory budget before ``torch.load``, a cost budget after.

A model file is a ``torch.save`` zip archive. Its central directory says how many bytes every
entry holds once extracted, and ``torch.load`` extracts (and allocates) every storage the pickle
names, so a ~1 MB file with one deflated zero-filled storage can allocate gigabytes.
:func:`check_model_archive` reads only that directory and refuses the file before ``torch.load``
when it is not the kind of archive ``torch.save`` writes (one top-level folder with ``data.pkl``,
every entry stored uncompressed) or when its entries add up to more than
:data:`MODEL_FILE_BUDGET_BYTES`.

A model that loads may still be too slow for a control loop (the issue's ``substeps = 10**7``).
:func:`model_cost_problem` rejects more than :data:`MAX_MODEL_SUBSTEPS` integration sub-steps per
period, then times one evaluation on one state in a separate thread with a budget of two control
periods (at least :data:`MODEL_PROBE_MIN_S`). The controller node runs it on every announced model;
:func:`check_model_cost` runs it wherever a model file is loaded (CLI, node start-up).
"""

from __future__ import annotations

import ctypes
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_control import MbrlError

MODEL_FILE_BUDGET_BYTES = 256 * 2**20
"""Most bytes a model file may hold, on disk and summed over its extracted zip entries (256 MiB;
the project's fitted models are ~64 KiB)."""
MAX_MODEL_SUBSTEPS = 1000
"""A model integrating with more sub-steps per control period is rejected before it is evaluated."""
MODEL_PROBE_MIN_S = 0.1
"""Least time budget of the first evaluation of a loaded model (one state, off the calling thread)."""
LOAD_PROBE_MIN_S = 0.5
"""Least budget where a model file is loaded (CLI, node start-up): the first torch call of a process
may take 100+ ms on a loaded machine, and this check is against a hang, not for the step time."""
PROBE_STOP_WAIT_S = 1.0
"""How long a refused probe is given to unwind after it was told to stop."""
PROBE_SPEED_MPS = 1.0
"""Speed of the default probe state (at rest, some models take special branches)."""


def check_model_archive(path: str | Path, budget_bytes: int = MODEL_FILE_BUDGET_BYTES) -> None:
    """Raise MbrlError (one line) unless ``path`` is a torch zip archive within ``budget_bytes``."""
    path = Path(path)
    size_bytes = os.path.getsize(path)
    if size_bytes > budget_bytes:
        raise MbrlError(f"{path}: model file is {_mib(size_bytes)}, over the budget of {_mib(budget_bytes)}")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise MbrlError(f"{path}: not a model file (not a zip archive as torch.save writes: {exc})") from None
    total_bytes = sum(entry.file_size for entry in entries)
    if total_bytes > budget_bytes:
        raise MbrlError(f"{path}: model file would extract to {_mib(total_bytes)}, "
                        f"over the budget of {_mib(budget_bytes)} (MODEL_FILE_BUDGET_BYTES)")
    _check_torch_layout(path, entries)


def _check_torch_layout(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    """One top-level folder holding ``data.pkl``; every entry stored (torch.save never compresses)."""
    folders = {entry.filename.split("/", 1)[0] for entry in entries}
    if len(folders) != 1 or f"{next(iter(folders))}/data.pkl" not in {entry.filename for entry in entries}:
        raise MbrlError(f"{path}: not a model file (the zip archive lacks torch.save's layout)")
    packed = [entry.filename for entry in entries if entry.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise MbrlError(f"{path}: not a model file (compressed entry {packed[0]!r}; torch.save stores entries "
                        "uncompressed)")


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.1f} MiB"


def model_cost_problem(model: Any, dt_s: float, state: Any = None, min_budget_s: float = MODEL_PROBE_MIN_S) -> str | None:
    """Why ``model`` is too expensive for a loop of period ``dt_s``, or None (probe on ``state``)."""
    substeps = int(getattr(model, "substeps", 1) or 1)
    if substeps > MAX_MODEL_SUBSTEPS:
        return f"{substeps} integration sub-steps per period (at most {MAX_MODEL_SUBSTEPS})"
    budget_s = max(2.0 * dt_s, min_budget_s)
    outcome = _ModelProbe(model, _probe_state(state)).run(budget_s)
    if outcome is None:
        return f"one model step took longer than {1e3 * budget_s:.0f} ms (budget: two control periods, at least " \
               f"{1e3 * min_budget_s:.0f} ms)"
    if isinstance(outcome, Exception):
        return f"model step raised {type(outcome).__name__}: {outcome}"
    if not outcome:
        return "model step gives non-finite states"
    return None


def check_model_cost(model: Any, dt_s: float, source: str) -> None:
    """Raise MbrlError (one line, naming ``source``) when :func:`model_cost_problem` finds one."""
    problem = model_cost_problem(model, dt_s, min_budget_s=LOAD_PROBE_MIN_S)
    if problem is not None:
        raise MbrlError(f"{source}: model rejected: {problem}")


def _probe_state(state: Any) -> np.ndarray:
    """The given state, or one at the origin rolling straight at :data:`PROBE_SPEED_MPS`."""
    from mbrl_control.models.layout import STATE_DIM, S

    if state is not None:
        return np.asarray(state, dtype=np.float64)
    probe = np.zeros(STATE_DIM)
    probe[S.V] = PROBE_SPEED_MPS
    return probe


class ProbeTimeout(BaseException):
    """Raised inside an overrunning probe thread so that it stops at its next Python instruction."""


class _ModelProbe:
    """One evaluation of a model in a daemon thread, stopped when it overruns its budget.

    An abandoned thread still inside torch when the interpreter exits aborts the process (rc 134),
    so a CLI refusing a slow model could not exit with 2, and in the node it would burn a core for
    minutes: an overrun probe gets an asynchronous :class:`ProbeTimeout`, which lands between two
    sub-steps. A lock makes sure it is only raised while the evaluation still runs.
    """

    def __init__(self, model: Any, state: np.ndarray) -> None:
        self.model, self.state = model, state
        self.lock = threading.Lock()
        self.outcome: list[Any] = []  # [finite: bool] or [exception]; empty while running

    def run(self, budget_s: float) -> Any:
        """The outcome within ``budget_s``, or None (the evaluation was stopped)."""
        worker = threading.Thread(target=self._work, name="model-probe", daemon=True)
        worker.start()
        worker.join(budget_s)
        with self.lock:
            if self.outcome:
                return self.outcome[0]
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(ProbeTimeout))
            self.outcome.append(None)  # from now on the worker's result is ignored
        worker.join(PROBE_STOP_WAIT_S)
        return None

    def _work(self) -> None:
        try:
            outcome = _evaluate(self.model, self.state)
            with self.lock:
                if not self.outcome:
                    self.outcome.append(outcome)
        except ProbeTimeout:
            pass


def _evaluate(model: Any, state: np.ndarray) -> Any:
    """One evaluation without gradients: whether it is finite, or the exception it raised."""
    import torch

    try:
        dtype = next(iter(model.buffers()), torch.zeros((), dtype=torch.float32)).dtype
        with torch.no_grad():
            out = model(torch.as_tensor(state, dtype=dtype)[None], torch.zeros((1, 2), dtype=dtype))
        return bool(torch.all(torch.isfinite(out)))
    except Exception as exc:  # noqa: BLE001 - any failure rejects the model
        return exc
