"""Generated code lives in the cache, named by a digest of its inputs; ``mbrl-control compile`` warms it."""

from __future__ import annotations

import argparse
import shutil
import uuid

import numpy as np
import pytest

from mbrl_control.apps import compile as compile_app
from mbrl_control.kernels import casadi_codegen, codegen


@pytest.fixture
def generated_dir(tmp_path, monkeypatch):
    """A private generated-code folder and a CasADi 'version' no other test used (a fresh key)."""
    folder = tmp_path / "generated"
    folder.mkdir()
    monkeypatch.setenv("MBRL_CONTROL_GENERATED_DIR", str(folder))
    version = f"test-{uuid.uuid4().hex}"
    monkeypatch.setattr(casadi_codegen, "_casadi_version", lambda: version)
    return folder


def test_the_derivatives_module_is_generated_in_the_cache_folder_named_by_its_key(generated_dir, monkeypatch):
    gen = casadi_codegen.ilqr_derivatives()
    key = casadi_codegen.ilqr_derivatives_key()
    path = generated_dir / f"{casadi_codegen.GENERATED_NAME}_{key}.py"
    assert [p.name for p in generated_dir.glob("*.py")] == [path.name]
    assert gen.__file__ == str(path)
    for name in ("st_dynamic_f", "st_kinematic_hess", "rc_stage_derivs", "rc_final_hess"):
        assert callable(getattr(gen, name))
    # the generated kernel evaluates the one written definition
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.models.derivatives import MODEL_DEFINITIONS, param_vector
    from mbrl_control.models.motion_model import numpy_derivative

    params = load_vehicle_params()
    s, u = np.array([0.3, -0.2, 0.1, 4.0, 0.5, 0.2, 0.01]), np.array([0.2, 1.5])
    out = np.zeros(7)
    gen.st_kinematic_f(s, u, param_vector(params), out)
    np.testing.assert_allclose(out, numpy_derivative(MODEL_DEFINITIONS["kinematic"], s, u, params), rtol=1e-12)
    # same key: loaded, not generated again
    monkeypatch.setattr(casadi_codegen, "generate_kernel_source", lambda key="": pytest.fail("regenerated"))
    assert casadi_codegen.ilqr_derivatives() is gen


def test_a_changed_key_gives_a_new_file(generated_dir, monkeypatch):
    first = casadi_codegen.ilqr_derivatives()
    version = f"test-{uuid.uuid4().hex}"
    monkeypatch.setattr(casadi_codegen, "_casadi_version", lambda: version)
    second = casadi_codegen.ilqr_derivatives()
    assert first.__file__ != second.__file__
    assert len(list(generated_dir.glob("*.py"))) == 2


def test_the_key_follows_every_definition_source(tmp_path, monkeypatch):
    names = {p.name for p in casadi_codegen.generator_inputs()}
    for needed in ("kinematic_bicycle.py", "single_track.py", "actuation.py", "motion_model.py", "derivatives.py",
                   "casadi_ops.py", "codegen.py", "casadi_codegen.py"):
        assert needed in names
    copy = tmp_path / "pkg"
    for folder in casadi_codegen.GENERATOR_DIRS:
        shutil.copytree(casadi_codegen.PACKAGE_DIR / folder, copy / folder)
    monkeypatch.setattr(casadi_codegen, "PACKAGE_DIR", copy)
    before = casadi_codegen.ilqr_derivatives_key()
    actuation = copy / "models" / "actuation.py"
    actuation.write_text(actuation.read_text() + "\n# an edit\n")
    assert casadi_codegen.ilqr_derivatives_key() != before


def test_stale_ilqr_kernels_are_dropped_when_the_key_changes(tmp_path, monkeypatch):
    from numba.core import config

    from mbrl_control.kernels import ilqr

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(casadi_codegen, "_casadi_version", lambda: "one")
    ilqr._drop_stale_cache()
    cached = tmp_path / "ilqr_vehicle.vehicle_step-1.py311.nbi"
    cached.write_bytes(b"")
    ilqr._drop_stale_cache()
    assert cached.exists()  # same sources, same generated module: kept
    monkeypatch.setattr(casadi_codegen, "_casadi_version", lambda: "two")
    ilqr._drop_stale_cache()
    assert not cached.exists()


def test_warm_items_cover_both_models_with_and_without_residual():
    names = [name for name, _ in compile_app.warm_items()]
    for controller in ("mppi", "ilqr"):
        for kind in ("dynamic", "kinematic"):
            assert f"{controller} {kind}" in names and f"{controller} {kind} + residual" in names
    assert names[0].startswith("ilqr derivatives")


def test_compile_prints_a_line_per_item_and_the_total(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(compile_app, "warm_items", lambda: [("a", lambda: calls.append("a")),
                                                            ("b", lambda: calls.append("b"))])
    assert compile_app.main(argparse.Namespace()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert calls == ["a", "b"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b", "total"]
    assert all(line.endswith(" s") for line in lines[1:])


def test_compile_is_a_subcommand():
    from mbrl_control.apps import cli

    assert cli.SUBCOMMANDS["compile"][0] == "mbrl_control.apps.compile"
    with pytest.raises(SystemExit) as exc:
        cli.main(["compile", "--help"])
    assert exc.value.code == 0


def test_generated_root_honours_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MBRL_CONTROL_GENERATED_DIR", str(tmp_path))
    assert codegen.generated_root() == tmp_path
