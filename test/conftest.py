"""Shared test fixtures: the vehicle parameters, the shared track folder, the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TRACKS = REPO.parent / "shared" / "tracks"


@pytest.fixture(scope="session")
def params():
    from mbrl_control.config import load_vehicle_params

    return load_vehicle_params()


@pytest.fixture(scope="session")
def shared_tracks() -> Path:
    if not SHARED_TRACKS.is_dir():
        pytest.fail(f"reference tracks missing: {SHARED_TRACKS}")
    return SHARED_TRACKS
