"""mbrl_control: real-time model-based control (MPPI, iLQR/DDP, online system identification) for cars and robots."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


class MbrlError(Exception):
    """An error caused by bad user input (file, parameter, flag); the CLI prints it as one line and exits 2."""


def share_dir() -> Path:
    """Directory holding the package's data folders (models/, config/, sim/, launch/).

    In a source checkout or editable install that is the repository root; in a wheel / colcon
    install the data files live under ``share/mbrl_control``.
    """
    env = os.environ.get("MBRL_CONTROL_SHARE")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    if (repo_root / "models" / "f1tenth.yaml").is_file():
        return repo_root
    import sys

    return Path(sys.prefix) / "share" / "mbrl_control"
