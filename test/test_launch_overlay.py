"""The ament overlay of ``make setup`` (scripts/make_overlay.py) and the share-directory lookup order (no ROS needed)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

import mbrl_control

REPO = Path(__file__).resolve().parent.parent


def _make_overlay_module():
    spec = importlib.util.spec_from_file_location("make_overlay", REPO / "scripts" / "make_overlay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    module = _make_overlay_module()
    bin_dir = tmp_path_factory.mktemp("bin")
    kwargs = module.setup_kwargs(REPO)
    scripts = module.console_scripts(kwargs)
    for name in scripts[:-1]:  # the last one missing: reported, not fatal to the rest
        (bin_dir / name).write_text("#!/bin/sh\n")
    prefix = tmp_path_factory.mktemp("prefix") / "overlay"
    problems = module.make_overlay(prefix, bin_dir, Path(sys.prefix), REPO)
    return prefix, kwargs, scripts, problems


def test_every_data_file_of_setup_py_is_linked_in_a_real_directory(overlay):
    prefix, kwargs, _, _ = overlay
    linked = 0
    for dest, files in kwargs["data_files"]:
        assert not (prefix / dest).is_symlink(), dest  # ros2launch does not walk into symlinked directories
        for name in files:
            link = prefix / dest / Path(name).name
            assert link.is_symlink() and link.resolve() == (REPO / name).resolve(), link
            linked += 1
    assert linked >= 10
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mbrl_control").is_file()
    assert (prefix / "share" / "mbrl_control" / "launch" / "sim.launch.py").is_file()


def test_executables_are_linked_and_a_missing_one_is_reported(overlay):
    prefix, _, scripts, problems = overlay
    for name in scripts[:-1]:
        assert (prefix / "lib" / "mbrl_control" / name).is_symlink()
    assert not (prefix / "lib" / "mbrl_control" / scripts[-1]).exists()
    assert len(problems) == 1 and scripts[-1] in problems[0]
    assert {"controller_node", "sim_node", "sysid_node"} <= set(scripts)


def test_setup_bash_puts_the_overlay_first(overlay):
    prefix, _, _, _ = overlay
    text = (prefix / "setup.bash").read_text()
    assert f'AMENT_PREFIX_PATH="{prefix}:{sys.prefix}' in text and "export PATH=" in text


def test_share_dir_order_env_then_ament_index_then_checkout(overlay, monkeypatch, tmp_path):
    prefix, _, _, _ = overlay
    monkeypatch.delenv("MBRL_CONTROL_SHARE", raising=False)
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path / "nothing"), str(prefix), sys.prefix]))
    assert mbrl_control.share_dir() == prefix / "share" / "mbrl_control"
    monkeypatch.setenv("MBRL_CONTROL_SHARE", str(tmp_path))
    assert mbrl_control.share_dir() == tmp_path
    monkeypatch.delenv("MBRL_CONTROL_SHARE")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "nothing"))
    assert mbrl_control.share_dir() == REPO  # the source checkout


def test_track_names_still_resolve_in_the_shared_tracks_with_an_installed_share_dir(overlay, monkeypatch):
    from mbrl_control.track import track_search_dirs

    prefix, _, _, _ = overlay
    monkeypatch.delenv("MBRL_CONTROL_SHARE", raising=False)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert REPO.parent / "shared" / "tracks" in track_search_dirs()
