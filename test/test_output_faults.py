"""Issue 15, case 5: faults while writing results lose nothing silently; the sysid worker dies with its parent.

A full disk is made real with ``RLIMIT_FSIZE`` in a child process: every write past the limit fails
in the kernel with EFBIG, as a write to a full disk fails with ENOSPC (Python ignores SIGXFSZ).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mbrl_control.apps import cli

REPO = Path(__file__).resolve().parent.parent


def _limit_file_size(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in lines[0]
    return lines[0]


def _temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".bagdir" in p.name or p.suffix == ".png"
            and p.name.startswith(".")]


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text('{"old": true}\n')
    code = textwrap.dedent(f"""
        from mbrl_control.config import atomic_write_json
        try:
            atomic_write_json({str(target)!r}, {{"big": "x" * 100000}})
        except OSError as exc:
            print("failed", exc.errno)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            preexec_fn=_limit_file_size(8192))
    assert "failed" in result.stdout, result.stderr
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left behind


def test_sim_with_unwritable_out_fails_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    tic = time.perf_counter()
    rc = cli.main(["sim", "--controller", "pure_pursuit", "--quiet", "--out", str(blocker / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "cannot write the run folder" in err[0], err
    assert time.perf_counter() - tic < 30


def test_sim_on_a_full_disk_keeps_the_summary(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "mbrl_control.apps.cli", "sim", "--controller", "pure_pursuit",
                             "--quiet", "--max-time", "6", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=300, preexec_fn=_limit_file_size(40_000))
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error_line(result.stderr)
    assert "cannot write" in line and "telemetry.mcap" in line, line
    # what was computed is kept: the summary on stdout and in summary.json (small enough to fit)
    printed = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert printed["controller"] == "pure_pursuit" and printed["step_latency_ms"]["max"] > 0
    assert json.loads((out / "summary.json").read_text()) == printed
    assert not (out / "telemetry.mcap").exists()  # no truncated bag pretending to be complete
    assert _temp_leftovers(out) == []


def test_fit_offers_the_model_at_a_fallback_path_when_out_is_full(tmp_path, capsys, monkeypatch):
    from mbrl_control.apps import fit as fit_app
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.models.semiparametric import SemiParametricModel
    from mbrl_control.sysid.synthetic import excitation_drive, write_bag

    perturbed = load_vehicle_params(REPO / "models" / "f1tenth_perturbed.yaml")
    t, s, u = excitation_drive(perturbed, 12.0, 0.02, seed=4)
    bag = tmp_path / "drive.mcap"
    write_bag(bag, t, s, u, 0.02)
    full = tmp_path / "full"
    full.mkdir()
    real_save = SemiParametricModel.save

    def save_on_a_full_disk(self, path):
        if Path(path).parent == full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(self, path)

    monkeypatch.setattr(SemiParametricModel, "save", save_on_a_full_disk)
    monkeypatch.setattr(fit_app, "fallback_dirs", lambda: [tmp_path / "fallback"])
    config = tmp_path / "fit.yaml"
    config.write_text("fit:\n  identify:\n    physics: kinematic\n    max_iterations: 5\n"
                      "  residual:\n    steps: 20\n    members: 1\n    multistep_steps: 0\n")
    rc = cli.main(["fit", str(bag), "--out", str(full / "m.pt"), "--config", str(config), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2
    line = _one_error_line(captured.err)
    assert "No space left on device" in line and "fallback path" in line, line
    kept = sorted((tmp_path / "fallback").glob("m-*.pt"))
    assert len(kept) == 1 and str(kept[0]) in line
    report = json.loads(kept[0].with_name(kept[0].name + ".json").read_text())
    assert report["model_file"] == str(kept[0])
    from mbrl_control.models.factory import make_model

    assert isinstance(make_model(str(kept[0]), perturbed, 0.02), SemiParametricModel)
    assert list(full.iterdir()) == []


WORKER_PARENT = textwrap.dedent("""
    import sys, time
    from mbrl_control.sysid.config import OnlineConfig
    from mbrl_control.sysid.online import _make_executor, _warm_up
    pool = _make_executor(OnlineConfig(worker="process"))
    assert pool.submit(_warm_up).result(timeout=120)
    print(" ".join(str(pid) for pid in pool._processes), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sysid_worker_dies_with_its_sigkilled_parent():
    parent = subprocess.Popen([sys.executable, "-c", WORKER_PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers), "sysid worker outlived its parent by 5 s"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in locals().get("workers", []):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
