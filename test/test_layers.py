"""The package's layer order, defined once here and enforced on every module's imports.

Each module of ``mbrl_control`` belongs to one layer; it may import from its own layer and the
layers below, never from a layer above (also not inside a function: a deferred import is still a
dependency). Module-level imports must not form a cycle. The source is parsed with ``ast``,
nothing is imported.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "mbrl_control"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("mbrl_control", "mbrl_control.config", "mbrl_control.track", "mbrl_control.ops",
                    "mbrl_control.msg_defs")),
    ("models", ("mbrl_control.models",)),
    ("bag", ("mbrl_control.bag",)),
    ("problem", ("mbrl_control.problem",)),
    ("kernels", ("mbrl_control.kernels",)),
    ("control", ("mbrl_control.control",)),
    ("sysid", ("mbrl_control.sysid",)),
    ("sim", ("mbrl_control.sim",)),
    ("ros", ("mbrl_control.ros",)),
    ("benchmarks", ("mbrl_control.benchmarks",)),
    ("apps", ("mbrl_control.apps",)),
)
"""Bottom to top: (layer name, the modules and packages in it)."""

KNOWN_UPWARD_IMPORTS: frozenset[tuple[str, str]] = frozenset()
"""Temporary exceptions (importer, imported) to the layer order; each one is reported while it lasts."""


@dataclass(frozen=True)
class Import:
    """One import of a package module: where it is and whether it runs when the importer is loaded."""

    importer: str
    target: str
    line: int
    module_level: bool


def layer_of(module: str) -> int | None:
    """Index of the layer holding ``module``, None if none does.

    An entry of :data:`LAYERS` holds itself and its submodules; the root package ``mbrl_control``
    holds only its ``__init__``.
    """
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if module == entry or (entry != "mbrl_control" and module.startswith(entry + ".")):
                return index
    return None


def package_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _deferred_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes that do not run on import: inside functions or ``if TYPE_CHECKING:``."""
    deferred: set[int] = set()

    def mark(node: ast.AST) -> None:
        deferred.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            mark(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                mark(child)
    return deferred


def module_imports(name: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """The imports of package modules in ``source`` (module ``name``), all of them, also deferred ones.

    ``from a import b`` names the module ``a.b`` when that is a module in ``known``, else ``a``.
    """
    tree = ast.parse(source)
    deferred = _deferred_nodes(tree)
    here = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        else:
            continue
        found += [Import(name, t, node.lineno, id(node) not in deferred)
                  for t in dict.fromkeys(targets) if t == "mbrl_control" or t.startswith("mbrl_control.")]
    return found


def collect_imports(sources: dict[str, tuple[str, bool]]) -> list[Import]:
    """Imports of every module in ``sources`` (dotted name -> (source text, is a package))."""
    known = set(sources)
    return [imp for name, (text, is_package) in sorted(sources.items())
            for imp in module_imports(name, text, is_package, known)]


def unlayered_modules(modules: set[str]) -> list[str]:
    """Modules that no layer claims (a new top-level module or package must be placed in LAYERS)."""
    return sorted(m for m in modules if layer_of(m) is None)


def upward_imports(imports: list[Import]) -> list[Import]:
    """Imports from a lower layer up to a higher one."""
    out = []
    for imp in imports:
        low, high = layer_of(imp.importer), layer_of(imp.target)
        if low is not None and high is not None and high > low:
            out.append(imp)
    return out


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles among module-level imports: the strongly connected components with more than one
    module (or a module importing itself), by Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.module_level:
            graph.setdefault(imp.importer, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _describe(imp: Import) -> str:
    where = "" if imp.module_level else " (inside a function)"
    return (f"{imp.importer}:{imp.line} [{LAYERS[layer_of(imp.importer)][0]}] imports {imp.target} "
            f"[{LAYERS[layer_of(imp.target)][0]}]{where}")


@pytest.fixture(scope="module")
def package_imports() -> list[Import]:
    return collect_imports({name: (path.read_text(), is_package)
                            for name, (path, is_package) in package_modules().items()})


def test_every_module_has_a_layer():
    assert unlayered_modules(set(package_modules())) == []


def test_no_import_goes_up_a_layer(package_imports):
    found = upward_imports(package_imports)
    known = [imp for imp in found if (imp.importer, imp.target) in KNOWN_UPWARD_IMPORTS]
    stale = KNOWN_UPWARD_IMPORTS - {(imp.importer, imp.target) for imp in known}
    for imp in known:
        warnings.warn(f"known exception to the layer order (KNOWN_UPWARD_IMPORTS): {_describe(imp)}", stacklevel=1)
    for importer, target in sorted(stale):
        warnings.warn(f"KNOWN_UPWARD_IMPORTS lists {importer} -> {target}, which is gone: remove it", stacklevel=1)
    assert [_describe(imp) for imp in found if imp not in known] == []


def test_no_cycle_among_module_level_imports(package_imports):
    assert import_cycles(package_imports) == []


def test_the_checker_catches_an_upward_import_and_a_cycle():
    """Self-test: synthetic modules with the faults the checks above must find."""
    sources = {
        "mbrl_control.models.fake": ("import numpy\n\ndef f():\n    from mbrl_control.sim import fake_plant\n", False),
        "mbrl_control.sim": ("from mbrl_control.sim.fake_plant import Plant\n", True),
        "mbrl_control.sim.fake_plant": ("from . import fake_runner\nfrom mbrl_control.models import fake\n", False),
        "mbrl_control.sim.fake_runner": ("from mbrl_control.sim.fake_plant import Plant\n", False),
        "mbrl_control.control.fake": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from mbrl_control.control import fake\n", False),
        "mbrl_control.nowhere": ("", False),
    }
    imports = collect_imports(sources)
    assert [(i.importer, i.target, i.module_level) for i in upward_imports(imports)] == [
        ("mbrl_control.models.fake", "mbrl_control.sim.fake_plant", False)]
    assert import_cycles(imports) == [["mbrl_control.sim.fake_plant", "mbrl_control.sim.fake_runner"]]
    assert unlayered_modules(set(sources)) == ["mbrl_control.nowhere"]
