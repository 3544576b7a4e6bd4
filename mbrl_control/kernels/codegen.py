"""Generated kernel code: Numba device functions derived from definitions, cached on disk by content.

A definition (motion model, actuator, cost term) is written once in the vocabulary of
:mod:`mbrl_control.ops` as ``def f(m, ...)``. :func:`numba_device_source` turns its source into a
float32 Numba device function: the ``m`` parameter becomes the module
:mod:`.numba_ops`, float literals become ``np.float32`` constants (no silent float64 promotion
in the vectorised loops), reads by name of a record argument (``p.lf_m``, ``x.v``,
``ctx.lateral``: the ``records`` a caller declares) become constant-index reads of the tuples
the kernels pass, module-level float constants are copied in as float32, and
every helper definition it calls (another ``def g(m, ...)``, in any module) is translated the
same way. :func:`load_generated` writes generated source to ``<cache>/generated/<name>_<hash
of the source>.py`` and imports it: the file is never checked in, a changed definition is a
new file (so Numba's on-disk cache of kernels compiled from it can never be stale), and the
generated code can be read when a kernel misbehaves.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Callable, Mapping, Sequence

from mbrl_control import MbrlError

GENERATED_PACKAGE = "mbrl_control_generated"
"""Name under which generated modules are registered in ``sys.modules``."""
_ALLOWED_BUILTINS = {"range", "len", "tuple", "int", "float"}


def generated_root() -> Path:
    """Folder of the generated modules: ``$XDG_CACHE_HOME/mbrl_control/generated`` (or a temp folder)."""
    override = os.environ.get("MBRL_CONTROL_GENERATED_DIR")
    if override:
        return Path(override)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mbrl_control" / "generated"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return root
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"mbrl_control-generated-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def load_generated(name: str, source: str) -> types.ModuleType:
    """Import generated ``source`` as a module (written once to the cache folder, atomically)."""
    stem = f"{name}_{source_digest(source)}"
    module_name = f"{GENERATED_PACKAGE}.{stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = generated_root() / f"{stem}.py"
    if not path.is_file() or path.read_text() != source:
        tmp = path.with_name(f".{stem}.{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    return _import_file(module_name, path)


def inputs_digest(*parts: object) -> str:
    """Digest of what a generator reads: source files (``Path``), modules (their files) or strings."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, types.ModuleType):
            part = Path(inspect.getfile(part))
        if isinstance(part, Path):
            digest.update(str(part.name).encode())
            digest.update(part.read_bytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def load_generated_keyed(name: str, key: str, make_source: Callable[[], str]) -> types.ModuleType:
    """Like :func:`load_generated`, but named by ``key`` (a digest of the generator's inputs, see
    :func:`inputs_digest`): ``make_source`` runs only when no module for that key exists yet."""
    stem = f"{name}_{key}"
    module_name = f"{GENERATED_PACKAGE}.{stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = generated_root() / f"{stem}.py"
    if not path.is_file():
        source = make_source()
        tmp = path.with_name(f".{stem}.{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    return _import_file(module_name, path)


def import_generated(stem: str, path: Path) -> types.ModuleType:
    """Import the generated module file ``path`` as ``mbrl_control_generated.<stem>``."""
    return _import_file(f"{GENERATED_PACKAGE}.{stem}", path)


def _import_file(module_name: str, path: Path) -> types.ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    if GENERATED_PACKAGE not in sys.modules:
        package = types.ModuleType(GENERATED_PACKAGE)
        package.__path__ = []  # a namespace for the generated modules only
        sys.modules[GENERATED_PACKAGE] = package
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def is_definition(obj) -> bool:
    """True for a function written in the definition vocabulary (first parameter ``m``)."""
    if not inspect.isfunction(obj):
        return False
    params = list(inspect.signature(obj).parameters)
    return bool(params) and params[0] == "m"


class _Translator:
    """Collects the definitions reachable from a root and emits them as Numba device functions."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records = {arg: {name: i for i, name in enumerate(fields)} for arg, fields in records.items()}
        self.emitted: dict[Callable, str] = {}
        self.order: list[str] = []
        self.constants: dict[str, str] = {}
        self.functions: list[str] = []

    def name_for(self, fn: Callable, wanted: str | None = None) -> str:
        if fn in self.emitted:
            return self.emitted[fn]
        name = wanted or fn.__name__
        taken = set(self.emitted.values())
        base, i = name, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        self.emitted[fn] = name
        self.functions.append(self._translate(fn, name))
        return name

    def _translate(self, fn: Callable, name: str) -> str:
        where = f"{fn.__module__}.{fn.__qualname__}"
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        node = tree.body[0]
        if not isinstance(node, ast.FunctionDef):
            raise MbrlError(f"{where}: a definition must be a plain 'def'")
        node.decorator_list = []
        node.name = name
        args = [a.arg for a in node.args.args]
        if not args or args[0] != "m":
            raise MbrlError(f"{where}: a definition's first parameter must be 'm' (the math namespace)")
        node.args.args = node.args.args[1:]
        node.returns = None
        for a in node.args.args:
            a.annotation = None
        local_names = set(args) | {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        body = _Rewriter(self, fn, where, local_names, set(args[1:])).visit(node)
        ast.fix_missing_locations(body)
        doc = f'    """Generated from {where}."""\n'
        text = ast.unparse(body)
        header, _, rest = text.partition("\n")
        if rest.lstrip().startswith(('"""', "'")):
            return f"@device_function(inline='always')\n{text}\n"
        return f"@device_function(inline='always')\n{header}\n{doc}{rest}\n"


class _Rewriter(ast.NodeTransformer):
    """float literals -> float32, ``rec.name`` -> ``rec[i]``, helper definitions -> their translations."""

    def __init__(self, translator: _Translator, fn: Callable, where: str, local_names: set[str],
                 arg_names: set[str]) -> None:
        self.t = translator
        self.fn = fn
        self.where = where
        self.locals = local_names
        self.args = arg_names

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, float):
            return ast.Call(ast.Attribute(ast.Name("np", ast.Load()), "float32", ast.Load()), [node], [])
        return node

    def visit_Attribute(self, node: ast.Attribute):
        base = node.value
        if isinstance(base, ast.Name) and base.id in self.args and base.id in self.t.records:
            fields = self.t.records[base.id]
            if node.attr not in fields:
                raise MbrlError(f"{self.where}: reads '{base.id}.{node.attr}', which is not declared "
                                f"(known: {', '.join(fields) or 'none'})")
            return ast.Subscript(base, ast.Constant(fields[node.attr]), ast.Load())
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id not in self.locals:
            target = self.fn.__globals__.get(node.func.id)
            if is_definition(target):
                if not node.args or not (isinstance(node.args[0], ast.Name) and node.args[0].id == "m"):
                    raise MbrlError(f"{self.where}: call {node.func.id}(m, ...) with the math namespace first")
                node.func = ast.Name(self.t.name_for(target), ast.Load())
                node.args = node.args[1:]
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        if not isinstance(node.ctx, ast.Load) or node.id in self.locals or node.id in ("m", "np"):
            return node
        if node.id in self.t.emitted.values():
            return node
        if node.id in self.fn.__globals__:
            value = self.fn.__globals__[node.id]
            if is_definition(value):
                return node  # rewritten by visit_Call
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MbrlError(f"{self.where}: uses global {node.id!r} ({type(value).__name__}); a definition may "
                                "use only its arguments, m.<function>, numbers and other definitions")
            const = f"{node.id}"
            literal = f"np.float32({float(value)!r})" if isinstance(value, float) else repr(int(value))
            if self.t.constants.setdefault(const, literal) != literal:
                raise MbrlError(f"{self.where}: constant {node.id!r} has two different values in the definitions used")
            return node
        if node.id in _ALLOWED_BUILTINS and hasattr(builtins, node.id):
            return node
        raise MbrlError(f"{self.where}: name {node.id!r} is not available to a definition (use m.{node.id}?)")


def numba_device_source(roots: Mapping[str, Callable], records: Mapping[str, Sequence[str]], origin: str) -> str:
    """Source of a module with a Numba device function for each of ``roots`` (name -> definition).

    ``records`` maps an argument name (``p``, ``x``, ``w``, ...) to the field names its tuple holds, in
    order; a definition reads such an argument by attribute and gets the constant-index element.
    """
    t = _Translator(records)
    for name, fn in roots.items():
        if not is_definition(fn):
            raise MbrlError(f"{origin}: {name} is not a definition (a function whose first parameter is 'm')")
        t.name_for(fn, name)
    lines = [
        f'"""Generated by mbrl_control.kernels.codegen from {origin}; do not edit (regenerated when the '
        'definition changes)."""',
        "",
        "import numpy as np",
        "",
        "from mbrl_control.kernels import numba_ops as m",
        "from mbrl_control.kernels.fastmath import device_function",
        "",
    ]
    lines += [f"{arg.upper()}_FIELDS = {tuple(fields)!r}" for arg, fields in records.items()]
    lines += [f"{k} = {v}" for k, v in sorted(t.constants.items())]
    lines.append("")
    lines += ["", *t.functions]  # callees are translated (and listed) before their callers
    return "\n".join(lines) + "\n"
