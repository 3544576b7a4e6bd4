"""``colcon build`` in a workspace, ``source install/setup.bash``, ``ros2 launch`` from the install (issue 16, acceptance 4).

The package (the files setup.py installs from) is copied into ``<tmp>/ws/src/mbrl_control`` and
built with the ``colcon`` that ``make setup`` installs (``<venv>/bin/colcon``; a ROS 2
distribution's colcon on PATH otherwise). The commands are the ones docs/ros_install.md shows.
Only the colcon install and the venv prefix are on AMENT_PREFIX_PATH (not the source overlay),
so the nodes must find their executables and share files through the install's ament index.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launch_support import REPO, Group, leased_domain, node_exits, require_launch, ros_env, wait_for
from test_launch_run import START_TIMEOUT_S, Listener
from test_ros_support import ros_context, spinning

PACKAGE_FILES = ("setup.py", "setup.cfg", "package.xml", "resource", "mbrl_control", "launch", "config", "models", "sim")


def colcon_command() -> str | None:
    local = Path(sys.executable).parent / "colcon"
    return str(local) if local.is_file() else shutil.which("colcon")


@pytest.fixture
def workspace(tmp_path) -> Path:
    src = tmp_path / "ws" / "src" / "mbrl_control"
    src.mkdir(parents=True)
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(source, src / name)
    return tmp_path / "ws"


def test_colcon_build_then_ros2_launch_from_the_install(workspace, tmp_path):
    require_launch()
    colcon = colcon_command()
    if colcon is None:
        pytest.fail("no colcon: 'make setup' installs it into the venv")
    with leased_domain() as domain, ros_context(domain) as context:
        env = ros_env(domain, tmp_path / "log", prefixes=[sys.prefix])  # the ROS 2 wheels' prefix only
        built = subprocess.run(["bash", "-c", f"cd {workspace} && {colcon} build"], env=env, capture_output=True,
                               text=True, timeout=120)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        install = workspace / "install" / "mbrl_control"
        assert (install / "share" / "ament_index" / "resource_index" / "packages" / "mbrl_control").is_file()
        for exe in ("controller_node", "sim_node", "sysid_node"):
            head = (install / "lib" / "mbrl_control" / exe).read_text().splitlines()[0]
            assert head == f"#!{Path(sys.executable).parent / 'python'}" or head.endswith("python3"), head

        probe = subprocess.run(
            ["bash", "-c", f"cd {workspace} && source install/setup.bash && ros2 pkg prefix mbrl_control && "
             "python -c 'import mbrl_control; print(mbrl_control.__file__); print(mbrl_control.share_dir())'"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert probe.returncode == 0, probe.stderr
        prefix, module, share = probe.stdout.split()
        assert Path(prefix) == install and Path(module).is_relative_to(install), probe.stdout
        assert Path(share) == install / "share" / "mbrl_control", probe.stdout  # the ament index first

        listener = Listener(context)
        command = f"cd {workspace} && source install/setup.bash && exec ros2 launch mbrl_control sim.launch.py"
        with spinning(context, [listener]), Group(["bash", "-c", command], env, tmp_path / "launch.txt") as launch:
            assert wait_for(listener.driving, START_TIMEOUT_S), launch.output()[-3000:]
            pids = [int(p) for p in re.findall(r"process started with pid \[(\d+)\]", launch.output())]
            cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in pids]
            assert len(pids) == 3 and all(str(install / "lib" / "mbrl_control") in c for c in cmdlines), cmdlines
            rc = launch.stop(signal.SIGINT)
            out = launch.output()
            assert rc == 0 and "Traceback" not in out, out[-3000:]
            assert set(node_exits(out).values()) == {"clean"}, out[-3000:]
