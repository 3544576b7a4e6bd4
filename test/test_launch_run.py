"""The launch files run for real, as a user runs them: ``ros2 launch``, ``ros2 run``, the ``ros2`` CLI, Ctrl-C.

Each test starts ``ros2 launch mbrl_control ...`` in its own process group (see launch_support),
checks the graph with the real CLI (``ros2 node list``, ``ros2 topic hz``, ``ros2 param get/set``)
and a listener node in this process (the commands on /drive, /odom, /diagnostics), and stops it
with process-group signals as a terminal does. Acceptance 2 and 3 of issue 16.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from launch_support import (REPO, Group, cli, leased_domain, node_exits, require_launch, ros_env, steady_rate,
                            wait_for)
from test_ros_support import ros_context, spinning

pytestmark = pytest.mark.serial  # /drive rates are measured: not beside other tests on 2 cores (Makefile)

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402

from mbrl_control.ros import qos  # noqa: E402

RATE_HZ = 50.0
HZ_WINDOW_S = 8.0
# sim.launch.py runs the controller on sim time (sim_node's /clock): its rate is measured in sim time
# (`ros2 topic hz -s`), which a loaded machine does not bend; wall-clock rates are printed beside it.
# car.launch.py runs on the wall clock and is measured so.
START_TIMEOUT_S = 40.0  # three Python processes importing torch / numba on a loaded 2-core machine
MPPI_START_TIMEOUT_S = 90.0  # + MPPI's kernels: loaded from Numba's cache (`mbrl-control compile`), else compiled


class Listener(Node):
    """Records /drive (speed, steering, receive time), the car's speed from odometry, the controller's diagnostics."""

    def __init__(self, context, odom_topic: str = "/odom") -> None:
        super().__init__("launch_test_listener", context=context)
        self.lock = threading.Lock()
        self.drive: list[tuple[float, float, float]] = []
        self.speeds: list[tuple[float, float]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.create_subscription(AckermannDriveStamped, "/drive", self._on_drive, qos.COMMAND)
        self.create_subscription(Odometry, odom_topic, self._on_odom, qos.ODOMETRY)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.DIAGNOSTICS)

    def _on_drive(self, msg) -> None:
        with self.lock:
            self.drive.append((msg.drive.speed, msg.drive.steering_angle, time.monotonic()))

    def _on_odom(self, msg) -> None:
        with self.lock:
            self.speeds.append((math.hypot(msg.twist.twist.linear.x, msg.twist.twist.linear.y), time.monotonic()))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("controller_node"):
                with self.lock:
                    self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def driving(self) -> bool:
        with self.lock:
            return any(speed > 0.5 for speed, _, _ in self.drive[-20:])

    def drive_rate(self, since_s: float) -> float:
        """/drive messages per wall second over the last ``since_s``."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for _, _, t in self.drive if now - t <= since_s) / since_s

    def speed_max(self, since_s: float) -> float:
        now = time.monotonic()
        with self.lock:
            return max((v for v, t in self.speeds if now - t <= since_s), default=math.nan)


@pytest.fixture
def ros2():
    return require_launch()


def _assert_clean_stop(launch: Group, rc: int, names, ctrl_c_repeated: bool = False) -> None:
    """Exit 0, every node finished cleanly, no traceback.

    A Ctrl-C pressed again after launch has finished its shutdown reaches the interpreter while it
    finalizes (default handler): the shell sees the launch killed by SIGINT. That is the user's
    signal, not a failure, when every node has finished cleanly before it.
    """
    out = launch.output()
    accepted = (0, -signal.SIGINT) if ctrl_c_repeated else (0,)
    assert rc in accepted, f"ros2 launch exited {rc}:\n{out[-3000:]}"
    exits = node_exits(out, names)
    assert all(v == "clean" for v in exits.values()), f"{exits}\n{out[-3000:]}"
    assert "Traceback" not in out and "process has died" not in out, out[-3000:]


def _assert_final_stop(listener: Listener) -> None:
    assert wait_for(lambda: listener.drive and listener.drive[-1][0] == 0.0, 3.0), listener.drive[-3:]
    speed, steer, _ = listener.drive[-1]
    assert speed == 0.0 and steer == 0.0


def test_sim_launch_runs_at_rate_and_stops_cleanly_on_repeated_ctrl_c(ros2, tmp_path):
    with leased_domain() as domain, ros_context(domain) as context:
        env = ros_env(domain, tmp_path / "log")
        listener = Listener(context)
        with spinning(context, [listener]), \
                Group([ros2, "launch", "mbrl_control", "sim.launch.py"], env, tmp_path / "launch.txt") as launch:
            assert wait_for(listener.driving, START_TIMEOUT_S), launch.output()[-3000:]
            expected, seen = {"/sim_node", "/controller_node", "/sysid_node"}, set()

            def all_nodes_listed() -> bool:  # sysid_node (torch) may come up after the other two
                seen.update(cli(ros2, env, "node", "list", "--no-daemon", "--spin-time", "2").stdout.split())
                return expected <= seen

            assert wait_for(all_nodes_listed, START_TIMEOUT_S, period_s=0.5), (seen, launch.output()[-3000:])
            rate = cli(ros2, env, "param", "get", "--no-daemon", "--timeout", "10", "/controller_node", "rate_hz")
            assert "50.0" in rate.stdout, rate
            sim_time = cli(ros2, env, "param", "get", "--no-daemon", "--timeout", "10", "/controller_node", "use_sim_time")
            assert "True" in sim_time.stdout, sim_time
            rates = steady_rate(ros2, env, "/drive", HZ_WINDOW_S, tmp_path / "hz.txt", RATE_HZ, 1.0, sim_time=True)
            hz, wall_hz = rates[-1], listener.drive_rate(HZ_WINDOW_S)
            assert abs(hz - RATE_HZ) <= 1.0, f"/drive at {rates} Hz (sim time), {wall_hz} Hz (wall clock)"
            assert launch.proc.poll() is None, launch.output()[-3000:]
            rc = launch.stop(signal.SIGINT, times=3)  # Ctrl-C pressed three times
            _assert_clean_stop(launch, rc, ("sim_node", "controller_node", "sysid_node"), ctrl_c_repeated=True)
            _assert_final_stop(listener)
    print(f"/drive {rates} Hz (sim time), {wall_hz:.2f} Hz (wall clock)")


def test_car_launch_against_ros2_run_sim_node_on_the_f1tenth_topics(ros2, tmp_path):
    with leased_domain() as domain, ros_context(domain) as context:
        env = ros_env(domain, tmp_path / "log")
        listener = Listener(context, odom_topic="/ego_racecar/odom")
        sim_args = [ros2, "run", "mbrl_control", "sim_node", "--ros-args", "-r", "odom:=/ego_racecar/odom"]
        with spinning(context, [listener]), Group(sim_args, env, tmp_path / "sim.txt") as sim, \
                Group([ros2, "launch", "mbrl_control", "car.launch.py"], env, tmp_path / "launch.txt") as launch:
            assert wait_for(listener.driving, START_TIMEOUT_S), launch.output()[-3000:] + sim.output()[-2000:]
            topics = cli(ros2, env, "topic", "list", "--no-daemon", "--spin-time", "3").stdout.split()
            assert "/ego_racecar/odom" in topics and "/drive" in topics and "/odom" not in topics, topics
            rates = steady_rate(ros2, env, "/drive", HZ_WINDOW_S, tmp_path / "hz.txt", RATE_HZ, 1.0)
            hz = rates[-1]
            assert abs(hz - RATE_HZ) <= 1.0, f"/drive at {rates} Hz"
            assert listener.speed_max(1.0) > 1.0  # the simulated car drives on the controller's commands
            rc = launch.stop(signal.SIGINT)
            _assert_clean_stop(launch, rc, ("controller_node", "sysid_node"))
            _assert_final_stop(listener)
            # One Ctrl-C: `ros2 run` itself (upstream ros2run) dies of a second SIGINT that lands outside its
            # `except KeyboardInterrupt` (exit -2, seen once in 5 runs), whatever its node does.
            sim_rc = sim.stop(signal.SIGINT)
            assert sim_rc == 0 and "Traceback" not in sim.output(), sim.output()[-3000:]
    print(f"/drive {rates} Hz")


def test_node_programs_end_cleanly_on_sigterm(ros2, tmp_path):
    """SIGTERM (what a process manager sends; ros2 launch itself just dies of it) ends a node with exit 0."""
    with leased_domain() as domain, ros_context(domain) as context:
        env = ros_env(domain, tmp_path / "log")
        prefix = cli(ros2, env, "pkg", "prefix", "mbrl_control").stdout.strip()
        lib = Path(prefix) / "lib" / "mbrl_control"
        listener = Listener(context)
        controller_args = [str(lib / "controller_node"), "--ros-args", "-p", "controller:=pure_pursuit", "-p", "warmup_steps:=0"]
        with spinning(context, [listener]), Group([str(lib / "sim_node")], env, tmp_path / "sim.txt") as sim, \
                Group(controller_args, env, tmp_path / "controller.txt") as controller:
            assert wait_for(listener.driving, START_TIMEOUT_S), controller.output()[-3000:] + sim.output()[-2000:]
            rc = controller.stop(signal.SIGTERM, times=2)
            assert rc == 0 and "Traceback" not in controller.output(), (rc, controller.output()[-3000:])
            assert "final safe-stop command published" in controller.output()
            _assert_final_stop(listener)
            sim_rc = sim.stop(signal.SIGTERM)
            assert sim_rc == 0 and "Traceback" not in sim.output(), (sim_rc, sim.output()[-3000:])


def _mppi_config(tmp_path: Path) -> Path:
    """config/sim.yaml with the controller of config/demo.yaml (MPPI sized for 2 shared cores)."""
    config = yaml.safe_load((REPO / "config" / "sim.yaml").read_text())
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["controller_node"]["ros__parameters"]
    params = config["controller_node"]["ros__parameters"]
    params.update(controller="mppi", mppi=demo["mppi"], accept_models=False, warmup_steps=2)
    path = tmp_path / "mppi_sim.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ros2_param_set_changes_the_controller_at_run_time(ros2, tmp_path):
    with leased_domain() as domain, ros_context(domain) as context:
        env = ros_env(domain, tmp_path / "log")
        listener = Listener(context)
        launch_args = [ros2, "launch", "mbrl_control", "sim.launch.py", f"config:={_mppi_config(tmp_path)}"]
        with spinning(context, [listener]), Group(launch_args, env, tmp_path / "launch.txt") as launch:
            assert wait_for(lambda: listener.speed_max(1.0) > 3.0 and listener.diagnostics, MPPI_START_TIMEOUT_S), \
                launch.output()[-3000:]

            def param(*args) -> str:
                done = cli(ros2, env, "param", *args[:1], "--no-daemon", "--timeout", "10", "/controller_node", *args[1:])
                return done.stdout + done.stderr

            misses_before = int(listener.diagnostics[-1]["deadline_misses"])  # start-up under load may have some
            before = param("get", "mppi.cost.progress_weight")
            assert "value is: 20" in before, before
            done = param("set", "mppi.cost.progress_weight", "30")
            assert "Set parameter successful" in done, done
            assert "Double value is: 30.0" in param("get", "mppi.cost.progress_weight")
            assert wait_for(lambda: any(d.get("param mppi.cost.progress_weight") == "30" for d in listener.diagnostics), 5.0)

            refused = param("set", "mppi.temperature", "-1")
            assert "Setting parameter failed" in refused and "temperature" in refused, refused
            fixed = param("set", "rate_hz", "20.0")
            assert "Setting parameter failed" in fixed and "fixed at start-up" in fixed, fixed
            temperature = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())[
                "controller_node"]["ros__parameters"]["mppi"]["temperature"]
            assert f"value is: {float(temperature)}" in param("get", "mppi.temperature")  # unchanged

            # behaviour: a speed cap of 1.5 m/s brings the car down from racing speed
            fast = listener.speed_max(1.0)
            assert "Set parameter successful" in param("set", "mppi.cost.speed_max_mps", "1.5")
            assert wait_for(lambda: listener.speed_max(1.0) < 2.5, 10.0), (fast, listener.speed_max(1.0))
            assert fast > 3.0
            time.sleep(1.5)  # a diagnostics period after the last change
            misses_after = int(listener.diagnostics[-1]["deadline_misses"])
            # The steps that took a change in: measured, and never a stall of the loop such as building or
            # compiling a controller in the tick (seconds). Under a period when this test runs alone (4 ms);
            # 33 ms was seen with another heavy job on the 2 cores and 52 ms once in a clean CI-like run, so
            # the bound is 5 periods: a timing goal belongs in the benchmarks, this checks for a stall. Misses
            # over the window are printed: 0 alone; the demo test beside it at nice -10 caused 2 in one run.
            swap_ms = float(listener.diagnostics[-1]["param_swap_step_max_ms"])
            assert 0.0 < swap_ms < 5e3 / RATE_HZ, swap_ms

            rates = steady_rate(ros2, env, "/drive", HZ_WINDOW_S, tmp_path / "hz.txt", RATE_HZ, 1.0, sim_time=True)
            hz, wall_hz = rates[-1], listener.drive_rate(HZ_WINDOW_S)
            assert abs(hz - RATE_HZ) <= 1.0, f"/drive at {rates} Hz (sim time), {wall_hz} Hz (wall clock)"
            last = listener.diagnostics[-1]
            assert last["param_rejections"] == "2", last
            assert last["param_updates"] == "2" and last["param mppi.cost.speed_max_mps"] == "1.5", last
            rc = launch.stop(signal.SIGINT)
            _assert_clean_stop(launch, rc, ("sim_node", "controller_node", "sysid_node"))
    print(f"/drive {rates} Hz (sim time), {wall_hz:.2f} Hz (wall clock) after the changes; deadline misses "
          f"{misses_before} before and {misses_after} after the changes, swap steps <= {swap_ms} ms; diagnostics {last}")


def test_gazebo_bridge_launch_says_in_one_line_that_ros_gz_bridge_is_missing(ros2, tmp_path):
    with leased_domain() as domain:
        env = ros_env(domain, tmp_path / "log")
        if cli(ros2, env, "pkg", "prefix", "ros_gz_bridge").returncode == 0:
            pytest.skip("ros_gz_bridge is installed here")
        with Group([ros2, "launch", "mbrl_control", "gazebo_bridge.launch.py"], env, tmp_path / "launch.txt") as launch:
            rc = launch.wait(60)
            out = launch.output()
    lines = [line for line in out.splitlines() if "ros_gz_bridge" in line]
    assert rc != 0 and len(lines) == 1, out
    assert "not found" in lines[0] and "apt install ros-$ROS_DISTRO-ros-gz-bridge" in lines[0], lines[0]
    assert "Traceback" not in out and "controller_node" not in out, out  # nothing was started
