"""Issue 15, case 2: ``model_updates`` cannot be hijacked by another publisher on the ROS domain.

The forged ``{"version": 1e15, "path": "dynamic"}`` swapped in a built-in model and made every
later sysid model look old; ``1e999`` raised in the callback. Now an announcement needs an integer,
increasing version, a file inside the model folder, its SHA-256 and an HMAC with the run's key.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from mbrl_control.ros import model_auth
from mbrl_control.ros.model_auth import ModelUpdateGate, RejectedUpdate, announcement, run_secret, sign
from test_ros_controller import probe_registered  # noqa: F401 (fixture)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def secret(model_dir, monkeypatch):
    monkeypatch.delenv(model_auth.SECRET_ENV, raising=False)
    return run_secret(model_dir)


def _file(folder, name="model_v001.pt", content=b"model bytes"):
    path = folder / name
    path.write_bytes(content)
    return path


def _rejected(gate: ModelUpdateGate, data: str, reason: str) -> None:
    before = gate.rejected
    with pytest.raises(RejectedUpdate, match=reason):
        gate.check(data)
    assert gate.rejected == before + 1 and reason.lower() in gate.last_reason.lower()


def test_a_signed_announcement_of_a_file_in_the_folder_is_accepted(model_dir, secret):
    path = _file(model_dir)
    gate = ModelUpdateGate(model_dir, secret)
    version, resolved = gate.check(json.dumps(announcement(secret, 1, path, metrics={})))
    assert (version, resolved) == (1, path.resolve()) and gate.rejected == 0


@pytest.mark.parametrize("data, reason", [
    ('{"version": 1e15, "path": "dynamic"}', "integer"),
    ('{"version": 1e999, "path": "dynamic"}', "integer"),  # inf: no OverflowError any more
    ('{"version": 1.0, "path": "x"}', "integer"),
    ('{"version": true, "path": "x"}', "integer"),
    ('{"version": "2", "path": "x"}', "integer"),
    ('{"version": -1, "path": "x"}', "out of range"),
    ('{"version": 99999999999999999999999, "path": "x"}', "out of range"),
    ('{"version": 1, "path": "dynamic"}', "built-in"),
    ('{"version": 1, "path": "kinematic"}', "built-in"),
    ('{"version": 1, "path": "semiparametric"}', "built-in"),
    ('{"version": 1, "path": "/etc/passwd"}', "sha256"),
    ("not json", "JSON"),
    ("[1, 2]", "object"),
    ("[" * 100000, "too long"),
    ('{"version": NaN}', "integer"),
])
def test_forged_or_malformed_announcements_are_rejected_with_a_reason(model_dir, secret, data, reason):
    gate = ModelUpdateGate(model_dir, secret)
    _rejected(gate, data, reason)
    assert gate.version == 0 and reason.lower() in gate.last_reason.lower()


def test_the_issue_forgery_then_later_sysid_updates_still_apply(model_dir, secret):
    gate = ModelUpdateGate(model_dir, secret)
    for forged in ('{"version": 1e15, "path": "dynamic"}', '{"version": 1e999, "path": "dynamic"}'):
        _rejected(gate, forged, "integer")
    # even with a valid-looking integer version and a real file, no HMAC: rejected
    path = _file(model_dir)
    unsigned = announcement(secret, 10 ** 15, path)
    del unsigned["hmac"]
    _rejected(gate, json.dumps(unsigned), "hmac")
    for version in (1, 2, 3):
        version_path = _file(model_dir, f"model_v{version:03d}.pt", f"v{version}".encode())
        got, _ = gate.check(json.dumps(announcement(secret, version, version_path)))
        gate.accept(got)
    assert gate.version == 3 and gate.rejected == 3


def test_wrong_hash_wrong_hmac_and_paths_outside_the_folder_are_rejected(model_dir, secret, tmp_path):
    gate = ModelUpdateGate(model_dir, secret)
    path = _file(model_dir)
    good = announcement(secret, 1, path)
    wrong_key = announcement(b"k" * 64, 1, path)
    _rejected(gate, json.dumps(wrong_key), "hmac")
    tampered = dict(good, hmac="0" * 64)
    _rejected(gate, json.dumps(tampered), "hmac")
    other_version = dict(good, version=2)  # the HMAC covers the version
    _rejected(gate, json.dumps(other_version), "hmac")
    wrong_hash = dict(good, sha256="ab" * 32)
    wrong_hash["hmac"] = sign(secret, 1, str(path), wrong_hash["sha256"])  # signed, but not this file
    _rejected(gate, json.dumps(wrong_hash), "does not match")
    path.write_bytes(b"changed after the announcement")
    _rejected(gate, json.dumps(good), "does not match")
    outside = _file(tmp_path, "outside.pt")
    _rejected(gate, json.dumps(announcement(secret, 1, outside)), "outside the model directory")
    link = model_dir / "link.pt"  # a symlink inside the folder to a file outside it
    link.symlink_to(outside)
    _rejected(gate, json.dumps(announcement(secret, 1, link)), "outside the model directory")
    dotdot = model_dir / ".." / "outside.pt"
    _rejected(gate, json.dumps(announcement(secret, 1, dotdot)), "outside the model directory")
    relative = dict(announcement(secret, 1, path), path="model_v001.pt")
    relative["hmac"] = sign(secret, 1, "model_v001.pt", relative["sha256"])
    _rejected(gate, json.dumps(relative), "absolute")
    missing = str(model_dir / "missing.pt")
    _rejected(gate, json.dumps(dict(good, path=missing, hmac=sign(secret, 1, missing, good["sha256"]))), "does not exist")
    assert gate.version == 0


def test_versions_must_increase(model_dir, secret):
    gate = ModelUpdateGate(model_dir, secret)
    path = _file(model_dir)
    version, _ = gate.check(json.dumps(announcement(secret, 5, path)))
    gate.accept(version)
    _rejected(gate, json.dumps(announcement(secret, 5, path)), "not newer")
    _rejected(gate, json.dumps(announcement(secret, 4, path)), "not newer")


def test_without_a_model_folder_every_update_is_refused(secret, model_dir):
    gate = ModelUpdateGate(None, None)
    _rejected(gate, json.dumps(announcement(secret, 1, _file(model_dir))), "no model directory")


def test_the_run_secret_is_shared_through_a_private_key_file_or_the_environment(model_dir, monkeypatch):
    monkeypatch.delenv(model_auth.SECRET_ENV, raising=False)
    first, second = run_secret(model_dir), run_secret(model_dir)
    assert first == second and len(first) == 64
    key = model_dir / model_auth.KEY_FILE
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert [p.name for p in model_dir.iterdir()] == [model_auth.KEY_FILE]  # no temporary files left
    other = model_dir.parent / "other"
    assert run_secret(other) != first  # another folder (another run): another key
    monkeypatch.setenv(model_auth.SECRET_ENV, "from-the-launch-file")
    assert run_secret(model_dir) == b"from-the-launch-file"


# ---------------------------------------------------------------------------- over DDS, with the node
def test_controller_node_ignores_forged_announcements_and_takes_signed_ones(params, probe_registered, tmp_path,  # noqa: F811
                                                                             monkeypatch):
    from test_ros_controller import RATE_HZ, Recorder, _controller, _start_state
    from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

    from rclpy.node import Node
    from std_msgs.msg import String

    from mbrl_control.models.semiparametric import physics_only
    from mbrl_control.ros import qos

    monkeypatch.delenv(model_auth.SECRET_ENV, raising=False)
    folder = tmp_path / "models"
    folder.mkdir()
    good = physics_only(params, 1.0 / RATE_HZ).save(folder / "model_v001.pt")
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context, model_dir=str(folder))
        secret = run_secret(folder)
        rec = Recorder(context)
        announcer = Node("intruder", context=context)
        pub = announcer.create_publisher(String, "model_updates", qos.MODEL_UPDATES)
        with spinning(context, [odom, node, announcer, rec]):
            assert wait_until(lambda: node.stats.steps >= 5)
            initial = node.controller.model
            forged = ['{"version": 1e15, "path": "dynamic"}', '{"version": 1e999, "path": "dynamic"}',
                      json.dumps(announcement(b"x" * 64, 1, good))]  # the last one: signed with another key
            for count, data in enumerate(forged, 1):  # keep-last-1: one at a time
                pub.publish(String(data=data))
                assert wait_until(lambda n=count: node._model_gate.rejected >= n)
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps >= steps + 10)
            assert node.model_version == 0 and node.model_swaps == 0 and node.controller.model is initial
            assert node._faults == 0

            def diagnosed_rejections() -> int:
                statuses = [s for d in rec.diagnostics for s in d.status if s.name == "controller_node: control loop"]
                values = {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}
                return int(values.get("model_updates_rejected", 0))

            assert wait_until(lambda: diagnosed_rejections() == 3)  # counted in /diagnostics
            pub.publish(String(data=json.dumps(announcement(secret, 1, good))))  # what sysid_node sends
            assert wait_until(lambda: node.model_version == 1 and node.model_swaps == 1)
            assert type(node.controller.model).__name__ == "SemiParametricModel"
            assert "hmac" in node._model_gate.last_reason


# ---------------------------------------------------------------------------- issue 15, case 1: nothing freezes the loop
def test_a_model_too_slow_for_the_loop_is_rejected_before_it_reaches_a_tick(params, probe_registered, tmp_path,  # noqa: F811
                                                                            monkeypatch):
    """The issue's model: valid, but ``substeps = 10**7``; and one whose step blocks (probe budget)."""
    from test_ros_controller import RATE_HZ, _controller, _start_state
    from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

    from rclpy.node import Node
    from std_msgs.msg import String

    from mbrl_control.models.semiparametric import SemiParametricModel, physics_only
    from mbrl_control.ros import qos

    monkeypatch.delenv(model_auth.SECRET_ENV, raising=False)
    folder = tmp_path / "models"
    folder.mkdir()
    huge = physics_only(params, 1.0 / RATE_HZ, substeps=10 ** 7).save(folder / "model_v001.pt")
    slow = physics_only(params, 1.0 / RATE_HZ).save(folder / "model_v002.pt")
    good = physics_only(params, 1.0 / RATE_HZ).save(folder / "model_v003.pt")
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context, model_dir=str(folder))
        secret = run_secret(folder)
        announcer = Node("announcer", context=context)
        pub = announcer.create_publisher(String, "model_updates", qos.MODEL_UPDATES)
        with spinning(context, [odom, node, announcer]):
            assert wait_until(lambda: node.stats.steps >= 5)
            pub.publish(String(data=json.dumps(announcement(secret, 1, huge))))
            assert wait_until(lambda: node._model_gate.rejected >= 1)
            assert "sub-steps" in node._model_gate.last_reason
            forward = SemiParametricModel.forward

            def blocking_forward(self, *args, **kwargs):
                time.sleep(1.0)
                return forward(self, *args, **kwargs)

            monkeypatch.setattr(SemiParametricModel, "forward", blocking_forward)
            pub.publish(String(data=json.dumps(announcement(secret, 2, slow))))
            assert wait_until(lambda: node._model_gate.rejected >= 2)
            assert "took longer" in node._model_gate.last_reason
            monkeypatch.setattr(SemiParametricModel, "forward", forward)
            steps = node.stats.steps
            assert wait_until(lambda: node.stats.steps >= steps + 10)
            assert node.model_version == 0 and node.watchdog_stops == 0
            pub.publish(String(data=json.dumps(announcement(secret, 3, good))))  # a fit model still goes in
            assert wait_until(lambda: node.model_version == 3 and node.model_swaps == 1)


def test_the_watchdog_thread_publishes_a_safe_stop_while_a_tick_is_blocked(params, probe_registered):  # noqa: F811
    from test_ros_controller import PROBE_U, TIMEOUT_S, _controller, _start_state
    from test_ros_support import FakeOdometry, ros_context, spinning, wait_until

    from ackermann_msgs.msg import AckermannDriveStamped
    from rclpy.node import Node

    from mbrl_control.ros import qos

    block_s = 1.0
    with ros_context() as context:
        odom = FakeOdometry(context, _start_state(params))
        node = _controller(context)
        listener = Node("listener", context=context)
        drives: list[tuple[float, AckermannDriveStamped]] = []
        listener.create_subscription(AckermannDriveStamped, "drive", lambda m: drives.append((time.time(), m)),
                                     qos.COMMAND)
        from rclpy.executors import SingleThreadedExecutor

        own = SingleThreadedExecutor(context=context)  # the listener in its own executor, as if in another process
        own.add_node(listener)
        spin_thread = threading.Thread(target=own.spin, daemon=True)
        with spinning(context, [odom, node]):
            spin_thread.start()
            try:
                assert wait_until(lambda: node.stats.steps >= 10 and len(drives) >= 5)
                probe = node.controller
                step = probe.step
                blocked: list[float] = []

                def blocking_step(state):
                    if not blocked:
                        blocked.append(time.time())
                        time.sleep(block_s)  # the control thread is stuck (the issue's 11 s model, shortened)
                    return step(state)

                probe.step = blocking_step
                assert wait_until(lambda: bool(blocked) and time.time() > blocked[0] + block_s + 0.3)
                start = blocked[0]
                assert node.watchdog_stops == 1
                stamped = [(t, d.drive) for t, d in list(drives)]
                # the stop holds the steering angle last sent (the car stays on its planned arc) and brakes
                stops = [t for t, d in stamped if start < t < start + block_s
                         and d.steering_angle == pytest.approx(PROBE_U[0], abs=1e-6) and d.acceleration < 0.0]
                assert stops, [(round(t - start, 3), d.steering_angle, d.acceleration) for t, d in stamped if t > start - 0.03][:8]
                assert stops[0] - start <= TIMEOUT_S + 1.0 / 50.0 + 0.1  # odom_timeout_s + one period (+ thread wake-up)
                steps = node.stats.steps
                assert wait_until(lambda: node.stats.steps >= steps + 10)  # the loop goes on after the block
                last = drives[-1][1].drive
                assert (last.steering_angle, last.acceleration) == pytest.approx(tuple(PROBE_U), abs=1e-6)
            finally:
                own.shutdown()
                spin_thread.join(timeout=5.0)
        listener.destroy_node()
