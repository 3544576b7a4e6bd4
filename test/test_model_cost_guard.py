"""Issue 15, case 1: ``sim --model FILE`` on a model too slow for the loop says so instead of hanging.

The issue's file: a valid fitted model saved with ``substeps = 10**7``. The controller node
already refused it on hot-swap; the CLI loaded it and hung in the first control step. Every
model file loaded through :func:`mbrl_control.models.factory.make_model` now gets the node's
check (:func:`mbrl_control.models.guards.model_cost_problem`): at most 1000 sub-steps, and a
first evaluation within two control periods, stopped when it overruns.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.models import guards
from mbrl_control.models.factory import make_model
from mbrl_control.models.semiparametric import SemiParametricModel, physics_only

REPO = Path(__file__).resolve().parent.parent
DT_S = 0.02
CLI_TIMEOUT_S = 90.0


def run_sim(model_file: Path, out: Path) -> subprocess.CompletedProcess:
    """``mbrl-control sim --model FILE`` (MPPI, which evaluates the model every step) in a fresh process."""
    return subprocess.run([sys.executable, "-m", "mbrl_control.apps.cli", "sim", "--model", str(model_file),
                           "--quiet", "--max-time", "0.5", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=CLI_TIMEOUT_S)


def assert_refused(result: subprocess.CompletedProcess, needle: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and needle in lines[0], lines


def test_sim_with_the_issues_ten_million_substep_model_exits_2_at_once(params, tmp_path):
    huge = physics_only(params, DT_S, substeps=10 ** 7).save(tmp_path / "huge.pt")
    assert_refused(run_sim(huge, tmp_path / "run"), "10000000 integration sub-steps per period (at most 1000)")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_sim_with_a_model_over_the_step_budget_exits_2_without_aborting(params, tmp_path):
    """1000 sub-steps pass the count but one step takes seconds: the timed probe refuses it, and the
    stopped probe thread lets the process exit with 2 (an abandoned one aborted it: rc 134)."""
    slow = physics_only(params, DT_S, substeps=guards.MAX_MODEL_SUBSTEPS).save(tmp_path / "slow.pt")
    assert_refused(run_sim(slow, tmp_path / "run"), "one model step took longer than 500 ms")


def test_make_model_applies_the_check_to_model_files(params, tmp_path):
    huge = physics_only(params, DT_S, substeps=10 ** 7).save(tmp_path / "huge.pt")
    with pytest.raises(MbrlError, match="sub-steps"):
        make_model(str(huge), params, DT_S)
    good = physics_only(params, DT_S, substeps=2).save(tmp_path / "good.pt")
    assert isinstance(make_model(str(good), params, DT_S), SemiParametricModel)


class _Stub(torch.nn.Module):
    """A model whose step sleeps, returns NaN or raises."""

    def __init__(self, behaviour: str, sleep_s: float = 0.0) -> None:
        super().__init__()
        self.behaviour, self.sleep_s = behaviour, sleep_s
        self.finished = threading.Event()

    def forward(self, state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.behaviour == "raise":
            raise RuntimeError("boom")
        for _ in range(int(self.sleep_s / 0.01)):  # Python-level sub-steps, as in the integrators
            time.sleep(0.01)
        self.finished.set()
        return state * float("nan") if self.behaviour == "nan" else state


def test_the_probe_stops_an_overrunning_step_and_names_the_budget():
    stub = _Stub("slow", sleep_s=5.0)
    tic = time.perf_counter()
    reason = guards.model_cost_problem(stub, DT_S)
    elapsed_s = time.perf_counter() - tic
    assert reason == "one model step took longer than 100 ms (budget: two control periods, at least 100 ms)"
    assert elapsed_s < 0.5, elapsed_s  # the budget plus the time to stop the probe between two sub-steps
    assert not any(t.name == "model-probe" and t.is_alive() for t in threading.enumerate())
    assert not stub.finished.is_set()


@pytest.mark.parametrize("behaviour, needle", [("nan", "non-finite"), ("raise", "raised RuntimeError: boom"),
                                               ("fine", None)])
def test_the_probe_reports_bad_steps_and_passes_good_ones(behaviour, needle):
    reason = guards.model_cost_problem(_Stub(behaviour), DT_S)
    assert reason == needle if needle is None else needle in reason


def test_the_budget_is_two_control_periods_but_at_least_the_minimum():
    assert guards.model_cost_problem(_Stub("slow", sleep_s=0.3), 0.25) is None  # budget 0.5 s
    assert "took longer than 200 ms" in guards.model_cost_problem(_Stub("slow", sleep_s=0.6), 0.1)
