"""Where ``tune`` runs its evaluations: local worker processes or Ray tasks, behind one interface."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from mbrl_control import MbrlError
from mbrl_control.apps.tune.evaluation import EvalSpec, evaluate

_WORKER_SPEC: EvalSpec | None = None


def _init_worker(spec: EvalSpec) -> None:
    """Worker start: one torch thread, and the spec kept for all its evaluations (sent once)."""
    import torch

    global _WORKER_SPEC
    torch.set_num_threads(1)
    _WORKER_SPEC = spec


def _evaluate_in_worker(values: dict) -> dict:
    """One evaluation in a local worker, on the spec it was started with."""
    assert _WORKER_SPEC is not None
    return evaluate(_WORKER_SPEC, values)


class LocalEngine:
    """Evaluations in ``jobs`` spawned worker processes (one thread each), the spec sent once."""

    name = "local"

    def __init__(self, spec: EvalSpec, jobs: int) -> None:
        self.jobs = jobs or os.cpu_count() or 1
        self._env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")}
        for key in self._env:
            os.environ[key] = "1"  # read by the workers at start: one thread each, the parallelism is across them
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(spec,))

    def submit(self, values: dict):
        return self.pool.submit(_evaluate_in_worker, values)

    def wait_one(self, pending) -> list:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        return [(f, f.result()) for f in done]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ray_evaluate(spec: EvalSpec, values: dict) -> dict:
    """One evaluation as a Ray task (one torch thread; Ray ships the spec by reference)."""
    import torch

    torch.set_num_threads(1)
    return evaluate(spec, values)


class RayEngine:
    """Evaluations as Ray tasks (1 CPU each) on the cluster at ``address`` ('local': a private instance)."""

    name = "ray"

    def __init__(self, spec: EvalSpec, jobs: int, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise MbrlError("--ray needs the 'ray' package (pip install ray)") from None
        self.ray = ray
        try:
            if address == "local":
                ray.init(num_cpus=jobs or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ... from ray
            raise MbrlError(f"cannot connect to Ray at '{address}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.jobs = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._spec = ray.put(spec)
        self._task = ray.remote(num_cpus=1, max_retries=1)(_ray_evaluate)

    def submit(self, values: dict):
        return self._task.remote(self._spec, values)

    def wait_one(self, pending) -> list:
        ready, _ = self.ray.wait(list(pending), num_returns=1)
        return [(ref, self.ray.get(ref)) for ref in ready]

    def close(self) -> None:
        self.ray.shutdown()
