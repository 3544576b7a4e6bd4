"""Fused Numba CPU / CUDA kernels mirroring models/ and the costs, for speed (tested equal to them).

Threading: the MPPI kernels are parallel over sample blocks. Unless the user chose a Numba
threading layer (``NUMBA_THREADING_LAYER``), the ``workqueue`` layer is selected here: on a
loaded machine OpenMP's spinning barriers made a 2-thread step several times slower than one
thread, while ``workqueue`` degrades gracefully. It must not be entered concurrently; the MPPI
controller serialises its kernel calls with a lock.

On-disk cache: see :func:`select_cache_dir` (run on import, before any kernel is decorated).
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import numba

if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

PACKAGE_DIR = Path(__file__).resolve().parent.parent
STALE_CACHE_S = 7 * 24 * 3600.0


def sources_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """Short SHA-256 of every ``.py`` file of the package (relative paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def select_cache_dir() -> Path | None:
    """Point Numba's on-disk cache at a folder named by :func:`sources_digest`; returns it.

    Why: Numba revalidates a cached kernel by its own file's timestamp only, but our kernels
    inline device functions from other files (racing cost, models, fast math). After such a file
    changed, the default ``__pycache__`` cache would load stale machine code. A user's
    ``NUMBA_CACHE_DIR`` is respected. Folders of other sources unused for a week are removed
    when a new one is made (not sooner: another process may still be writing to one).
    """
    if os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR:
        return None
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mbrl_control"
    target = root / f"numba-{sources_digest()}"
    try:
        if not target.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            week_ago = time.time() - STALE_CACHE_S
            for old in root.glob("numba-*"):
                if old != target and old.stat().st_mtime < week_ago:
                    shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return None  # not writable: Numba's default locations
    numba.config.CACHE_DIR = str(target)
    return target


CACHE_DIR_IN_USE = select_cache_dir()  # None: NUMBA_CACHE_DIR or Numba's default locations
