"""Static checks of every launch file and every node parameter file (launch / launch_ros are not installable here).

For each ``launch/*.launch.py``: it parses and defines ``generate_launch_description``; every
``Node`` of this package names a console_script that setup.py declares; every parameter it sets
(inline dicts and the YAML files it refers to) is declared by that node, checked by building the
node with exactly those parameters; remapped names are topics the node really uses. Every
``config/*.yaml`` in ros__parameters form is checked the same way for all the nodes it configures.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from test_ros_support import ros_context

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "mbrl_control"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PARAM_FILES = sorted(p for p in (REPO / "config").glob("*.yaml")
                     if isinstance(yaml.safe_load(p.read_text()), dict)
                     and any(isinstance(v, dict) and "ros__parameters" in v for v in yaml.safe_load(p.read_text()).values()))
# Light settings for building nodes in a test: no JIT warm-up, no refit worker process.
TEST_OVERRIDES = {"controller_node": {"warmup_steps": 0}, "sysid_node": {"sysid.worker": "thread"}}


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points (parsed, not imported)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = [ast.literal_eval(e) for e in value.elts]
                    return {e.split("=")[0].strip(): e.split("=")[1].strip() for e in entries}
    raise AssertionError("setup.py declares no console_scripts")


def node_class(entry_point: str) -> type[Node]:
    module = importlib.import_module(entry_point.split(":")[0])
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Node) and c is not Node and c.__module__ == module.__name__]
    assert len(classes) == 1, f"{entry_point}: expected one Node class, found {classes}"
    return classes[0]


def flatten(mapping: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _constant(tree: ast.Module, node: ast.AST):
    """A literal, or the literal a module-level name is bound to."""
    if isinstance(node, ast.Name):
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == node.id for t in stmt.targets):
                return ast.literal_eval(stmt.value)
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def launch_nodes(path: Path) -> list[dict]:
    """The Node(...) actions of a launch file: package, executable, name, inline parameters, remappings, yaml files."""
    tree = ast.parse(path.read_text(), filename=str(path))
    yaml_files = sorted({c.value for c in ast.walk(tree) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                         and c.value.endswith(".yaml")})
    nodes = []
    for call in _calls(tree, "Node"):
        params = _keyword(call, "parameters")
        inline = {}
        for element in getattr(params, "elts", []):
            if isinstance(element, ast.Dict):
                inline.update({k.value: v for k, v in zip(element.keys, element.values) if isinstance(k, ast.Constant)})
        remaps = _constant(tree, _keyword(call, "remappings")) if _keyword(call, "remappings") is not None else []
        nodes.append({"package": _constant(tree, _keyword(call, "package")), "executable": _constant(tree, _keyword(call, "executable")),
                      "name": _constant(tree, _keyword(call, "name")), "inline": inline, "remappings": remaps or [],
                      "yaml": [f for f in yaml_files if (REPO / "config" / f).is_file()]})
    return nodes


def build(context, executable: str, cli_args: list[str], extra: dict | None = None) -> Node:
    cls = node_class(console_scripts()[executable])
    overrides = {**TEST_OVERRIDES.get(executable, {}), **(extra or {})}
    return cls(context=context, cli_args=cli_args, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def used_topics(node: Node) -> set[str]:
    return {s.topic_name for s in node.subscriptions} | {p.topic_name for p in node.publishers}


def test_there_are_launch_and_parameter_files():
    names = {p.name for p in LAUNCH_FILES}
    assert {"sim.launch.py", "car.launch.py"} <= names
    assert {"sim.yaml", "car.yaml", "demo.yaml"} <= {p.name for p in PARAM_FILES}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_names_declared_executables(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    compile(tree, str(path), "exec")
    scripts = console_scripts()
    nodes = launch_nodes(path)
    assert nodes, f"{path.name} starts no Node"
    for node in nodes:
        assert node["executable"], f"{path.name}: a Node without a literal executable"
        if node["package"] == PACKAGE:
            assert node["executable"] in scripts, f"{path.name}: '{node['executable']}' is not a console_script of setup.py"
            assert ":" in scripts[node["executable"]]
        else:
            assert node["executable"] not in scripts or node["package"] != PACKAGE


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_parameters_and_remappings_are_known_to_the_nodes(path, tmp_path):
    ours = [n for n in launch_nodes(path) if n["package"] == PACKAGE]
    with ros_context() as context:
        for entry in ours:
            name = entry["name"] or entry["executable"]
            args = ["--ros-args", "-r", f"__node:={name}"]
            for yaml_file in entry["yaml"]:
                data = yaml.safe_load((REPO / "config" / yaml_file).read_text())
                if isinstance(data, dict) and name in data:
                    args += ["--params-file", str(REPO / "config" / yaml_file)]
            for src, dst in entry["remappings"]:
                args += ["-r", f"{src}:={dst}"]
            extra = {"out_dir": str(tmp_path)} if entry["executable"] == "sysid_node" else {}
            node = build(context, entry["executable"], args, extra)
            try:
                for key in entry["inline"]:
                    assert node.has_parameter(key), f"{path.name}: {name} does not declare '{key}'"
                topics = used_topics(node)
                for src, dst in entry["remappings"]:
                    assert dst in topics, f"{path.name}: remap {src}:={dst} matches no topic of {name} ({sorted(topics)})"
            finally:
                node.destroy_node()


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_parameter_in_a_config_file_is_declared_by_its_node(path, tmp_path):
    data = yaml.safe_load(path.read_text())
    scripts = console_scripts()
    with ros_context() as context:
        for name, section in data.items():
            assert name in scripts, f"{path.name}: section '{name}' is not one of the package's nodes"
            extra = {"out_dir": str(tmp_path)} if name == "sysid_node" else {}
            node = build(context, name, ["--ros-args", "--params-file", str(path)], extra)
            try:
                for key, value in flatten(section["ros__parameters"]).items():
                    assert node.has_parameter(key), f"{path.name}: {name} does not declare '{key}'"
                    if key not in {**TEST_OVERRIDES.get(name, {}), **extra} and not isinstance(value, list):
                        assert node.get_parameter(key).value == value
            finally:
                node.destroy_node()


def test_a_typo_in_a_parameter_file_is_an_error(tmp_path):
    from mbrl_control import MbrlError

    bad = tmp_path / "bad.yaml"
    bad.write_text("controller_node:\n  ros__parameters:\n    rate_hz: 50.0\n    odom_timout_s: 0.1\n")
    with ros_context() as context:
        with pytest.raises(MbrlError, match="unknown parameter 'odom_timout_s'"):
            build(context, "controller_node", ["--ros-args", "--params-file", str(bad)])
