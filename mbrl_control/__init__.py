"""mbrl_control: real-time model-based control (MPPI, iLQR/DDP, online system identification) for cars and robots."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


class MbrlError(Exception):
    """An error caused by bad user input (file, parameter, flag); the CLI prints it as one line and exits 2."""


def share_dir() -> Path:
    """Directory holding the package's data folders (models/, config/, sim/, launch/).

    In order: ``MBRL_CONTROL_SHARE``; the package's share directory in the ament index (the
    first prefix on ``AMENT_PREFIX_PATH`` that registers ``mbrl_control``: a colcon install, the
    ``make setup`` overlay, a ROS 2 distribution); the repository root of a source checkout or
    editable install; ``sys.prefix/share/mbrl_control`` (a wheel's data files).
    """
    env = os.environ.get("MBRL_CONTROL_SHARE")
    if env:
        return Path(env)
    indexed = _ament_share_dir()
    if indexed is not None:
        return indexed
    repo_root = Path(__file__).resolve().parent.parent
    if (repo_root / "models" / "f1tenth.yaml").is_file():
        return repo_root
    import sys

    return Path(sys.prefix) / "share" / "mbrl_control"


def _ament_share_dir(package: str = "mbrl_control") -> Path | None:
    """``<prefix>/share/<package>`` of the first ament prefix that registers the package (and has its
    vehicle file), like ``ament_index_python.get_package_share_directory`` but without importing it."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if not prefix:
            continue
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).is_file():
            share = Path(prefix) / "share" / package
            return share if (share / "models" / "f1tenth.yaml").is_file() else None
    return None
