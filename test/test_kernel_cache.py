"""The Numba on-disk cache folder is keyed by the package sources (no stale kernels after an edit)."""

from __future__ import annotations

import os
import time

import numba

import mbrl_control.kernels as kernels


def _package(root, text: str):
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "a.py").write_text("A = 1\n")
    (root / "sub" / "b.py").write_text(text)
    return root


def test_digest_follows_every_source_file(tmp_path):
    pkg = _package(tmp_path / "pkg", "B = 2\n")
    first = kernels.sources_digest(pkg)
    assert kernels.sources_digest(pkg) == first
    (pkg / "sub" / "b.py").write_text("B = 3\n")  # a file other than the kernel's own changed
    assert kernels.sources_digest(pkg) != first


def test_cache_folder_is_named_by_the_digest_and_old_folders_expire(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "mbrl_control"
    stale, recent = root / "numba-stale", root / "numba-recent"
    stale.mkdir(parents=True)
    recent.mkdir()
    week_and_a_day = time.time() - kernels.STALE_CACHE_S - 86400
    os.utime(stale, (week_and_a_day, week_and_a_day))
    target = kernels.select_cache_dir()
    assert target == root / f"numba-{kernels.sources_digest()}"
    assert target.is_dir() and numba.config.CACHE_DIR == str(target)
    assert not stale.exists() and recent.exists()  # another process may still use a recent one


def test_a_users_cache_dir_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    assert kernels.select_cache_dir() is None
    assert numba.config.CACHE_DIR == str(tmp_path)


def test_importing_the_kernels_selected_the_folder():
    if os.environ.get("NUMBA_CACHE_DIR"):
        assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
    else:
        assert kernels.CACHE_DIR_IN_USE is not None and kernels.CACHE_DIR_IN_USE.name.startswith("numba-")
        assert numba.config.CACHE_DIR == str(kernels.CACHE_DIR_IN_USE)
