"""Gazebo bridge configuration, checked statically (no gz-sim, launch or launch_ros here).

The ros_gz_bridge YAML must parse as its reader expects (a sequence of maps with
``ros_topic_name``, ``gz_topic_name``, ``ros_type_name``, ``gz_type_name``, ``direction``), map
type pairs ros_gz_bridge converts, and use DESIGN.md's default ROS topics and gz-sim's default
AckermannSteering / OdometryPublisher topics. The launch file must parse and wire the bridge.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BRIDGE_YAML = REPO / "config" / "gz_bridge.yaml"
LAUNCH_FILE = REPO / "launch" / "gazebo_bridge.launch.py"
KEYS = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
DIRECTIONS = {"BIDIRECTIONAL", "GZ_TO_ROS", "ROS_TO_GZ"}
# ROS <-> gz type pairs of ros_gz_bridge's conversion table that this configuration uses.
SUPPORTED_PAIRS = {
    ("geometry_msgs/msg/TwistStamped", "gz.msgs.Twist"),
    ("geometry_msgs/msg/Twist", "gz.msgs.Twist"),
    ("nav_msgs/msg/Odometry", "gz.msgs.Odometry"),
    ("rosgraph_msgs/msg/Clock", "gz.msgs.Clock"),
}
# DESIGN.md, "ROS 2 interface": controller_node subscribes `odom`, publishes `cmd_vel`
# (TwistStamped) when command_type is twist; the simulator provides /clock.
EXPECTED = {
    "cmd_vel": ("geometry_msgs/msg/TwistStamped", "/model/f1tenth/cmd_vel", "ROS_TO_GZ"),
    "odom": ("nav_msgs/msg/Odometry", "/model/f1tenth/odometry", "GZ_TO_ROS"),
    "/clock": ("rosgraph_msgs/msg/Clock", "/clock", "GZ_TO_ROS"),
}


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    data = yaml.safe_load(BRIDGE_YAML.read_text())
    assert isinstance(data, list), "ros_gz_bridge needs a YAML sequence at top level"
    return data


def test_bridge_entries_have_the_reader_keys_and_types(entries):
    assert len(entries) == len(EXPECTED)
    for entry in entries:
        assert isinstance(entry, dict) and set(entry) == KEYS
        assert all(isinstance(value, str) and value for value in entry.values())
        assert entry["direction"] in DIRECTIONS
        assert (entry["ros_type_name"], entry["gz_type_name"]) in SUPPORTED_PAIRS
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_]+)*/msg/[A-Z][A-Za-z0-9]*", entry["ros_type_name"])
        assert re.fullmatch(r"gz\.msgs\.[A-Z][A-Za-z0-9_]*", entry["gz_type_name"])
        assert re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_/]*", entry["ros_topic_name"])
        assert entry["gz_topic_name"].startswith("/")


def test_bridge_topics_match_the_design_defaults(entries):
    by_ros_topic = {e["ros_topic_name"]: (e["ros_type_name"], e["gz_topic_name"], e["direction"]) for e in entries}
    assert by_ros_topic == EXPECTED


def test_controller_node_uses_the_bridged_topic_names():
    """The bridged ROS names are the ones controller_node actually publishes and subscribes."""
    source = (REPO / "mbrl_control" / "ros" / "controller_node.py").read_text()
    assert re.search(r'create_publisher\(\s*TwistStamped,\s*"cmd_vel"', source)
    assert re.search(r'create_subscription\(\s*Odometry,\s*"odom"', source)


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keywords(call: ast.Call) -> dict[str, object]:
    return {k.arg: (k.value.value if isinstance(k.value, ast.Constant) else k.value) for k in call.keywords}


def test_launch_file_parses_and_declares_its_arguments():
    tree = _launch_tree()
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == {"model_name", "config_file", "use_sim_time", "with_controller", "controller_params"}
    for call in _calls(tree, "DeclareLaunchArgument"):
        assert "default_value" in _keywords(call) and "description" in _keywords(call)


def test_launch_file_starts_parameter_bridge_on_the_config_and_a_twist_controller():
    tree = _launch_tree()
    nodes = [_keywords(c) for c in _calls(tree, "Node")]
    bridge = [n for n in nodes if n.get("package") == "ros_gz_bridge"]
    assert len(bridge) == 1 and bridge[0]["executable"] == "parameter_bridge"
    controller = [n for n in nodes if n.get("executable") == "controller_node"]
    assert len(controller) == 1
    source = LAUNCH_FILE.read_text()
    assert '"config_file": str(config)' in source
    assert '"command_type": "twist"' in source
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert (REPO / "config" / constants["BRIDGE_CONFIG"]).is_file()
    assert constants["PACKAGE"] == "mbrl_control" and constants["DEFAULT_MODEL"] == "f1tenth"


def test_model_rename_rewrites_only_gz_model_topics():
    """Run the launch file's pure-Python ``rename_model`` on the real configuration."""
    tree = _launch_tree()
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and not _is_launch_import(n)]
    keep += [n for n in tree.body if isinstance(n, ast.Assign) or (isinstance(n, ast.FunctionDef) and n.name == "rename_model")]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(LAUNCH_FILE), "exec"), namespace)
    renamed = yaml.safe_load(namespace["rename_model"](BRIDGE_YAML.read_text(), "racecar_2"))
    topics = {e["ros_topic_name"]: e["gz_topic_name"] for e in renamed}
    assert topics == {"cmd_vel": "/model/racecar_2/cmd_vel", "odom": "/model/racecar_2/odometry", "/clock": "/clock"}
    with pytest.raises(RuntimeError, match="model_name"):
        namespace["rename_model"]("", "bad name/..")


def _is_launch_import(node: ast.stmt) -> bool:
    module = getattr(node, "module", None) or ""
    return module.split(".")[0] in ("launch", "launch_ros")


def test_setup_installs_the_bridge_files():
    setup = (REPO / "setup.py").read_text()
    assert 'data("config", "*.yaml")' in setup and 'data("launch", "*.launch.py")' in setup


def test_gazebo_doc_names_the_topics_and_the_launch_file():
    doc = (REPO / "docs" / "gazebo.md").read_text()
    for text in ("gazebo_bridge.launch.py", "gz_bridge.yaml", "/model/f1tenth/cmd_vel", "/model/f1tenth/odometry",
                 "AckermannSteering", "OdometryPublisher", "TwistStamped", "/clock", "command_type"):
        assert text in doc
