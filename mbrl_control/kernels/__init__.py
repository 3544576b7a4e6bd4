"""Fused Numba CPU / CUDA kernels mirroring models/ and the costs, for speed (tested equal to them).

Threading: the MPPI kernels are parallel over sample blocks. Unless the user chose a Numba
threading layer (``NUMBA_THREADING_LAYER``), :func:`select_threading_layer` picks ``tbb`` (the
``tbb`` wheel is a dependency) and falls back to ``workqueue`` where TBB cannot be loaded. Why
(docs/benchmarks.md, "AMD vs Intel"): ``workqueue`` pays 50-600 us per parallel region (a step
has several), which on a 2-vCPU Intel Xeon made the bicycle-track step at K=2000 1.14 ms against
0.44 ms with TBB; OpenMP is as fast when the machine is quiet, but its spinning barriers made a
2-thread step several times slower than one thread under load, where TBB degrades like
``workqueue``. The controllers serialise their kernel calls with a lock all the same
(``workqueue`` must not be entered concurrently).

Vector width: on a CPU with AVX-512, Numba's code generator is told to use 512-bit vectors
(see :func:`wide_vector_features`, run on import, before any kernel is decorated). LLVM's tuning
for every Intel AVX-512 core (Skylake-SP to Granite Rapids, and ``x86-64-v4``) sets the target
feature ``prefer-256-bit``, so the same source compiled to 8-lane ``ymm`` loops on a Xeon and
16-lane ``zmm`` loops on AMD Zen 4 (whose tuning does not set it). The MPPI rollout loops are
bound by instruction count and latency, not by vector throughput: Intel-tuned code ran 1.45x
slower on one thread on the same Zen 4 (docs/benchmarks.md, "AMD vs Intel"). On Zen 4 the
machine code is unchanged.

On-disk cache: see :func:`select_cache_dir` (run on import, before any kernel is decorated).
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import numba
from numba.core import registry as numba_registry
from numba.core.codegen import get_host_cpu_features



def select_threading_layer() -> str | None:
    """Set Numba's threading layer to ``tbb`` if it loads, else ``workqueue``; None if the user chose one."""
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return None
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (fails when libtbb is missing or too old)
        layer = "tbb"
    except (ImportError, OSError):
        layer = "workqueue"
    numba.config.THREADING_LAYER = layer
    return layer


THREADING_LAYER_SET = select_threading_layer()

PREFER_256_BIT = "prefer-256-bit"


def wide_vector_features(host_features: str, cpu_name: str | None, cpu_features: str | None) -> str | None:
    """Numba CPU features string that lets LLVM vectorise at 512 bits, or None to keep Numba's default.

    ``host_features``: the host's feature string as Numba passes it to LLVM (``+avx2,+avx512f,...``);
    ``cpu_name`` / ``cpu_features``: the user's ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``
    (``numba.config``; None when unset). Returns ``host_features + ",-prefer-256-bit"`` when the
    host has AVX-512F, the user chose neither a CPU name nor features, and the string does not
    already decide ``prefer-256-bit``. ``+prefer-512-bit`` does not exist in LLVM: clearing
    ``prefer-256-bit`` restores its default preferred width, 512 bits. No vendor test: on AMD
    Zen 4 the flag is not set by the tuning, so clearing it changes no instruction.
    """
    if cpu_name or cpu_features is not None:
        return None  # the user's own target (NUMBA_CPU_NAME=generic also sets features to "")
    flags = [f.strip() for f in host_features.split(",") if f.strip()]
    if "+avx512f" not in flags or any(f[1:] == PREFER_256_BIT for f in flags):
        return None
    return ",".join(flags + ["-" + PREFER_256_BIT])


def select_cpu_features() -> str | None:
    """Apply :func:`wide_vector_features` to ``numba.config.CPU_FEATURES``; returns what was set (or None).

    Must run before Numba creates its CPU code generator (the first ``@njit`` decoration in the
    process creates it and reads the features once); if that already happened, nothing is changed.
    It applies to every Numba function of the process, not only ours. To keep LLVM's own choice,
    set ``NUMBA_CPU_NAME`` to the host's name (``python -c "import llvmlite.binding as b;
    print(b.get_host_cpu_name())"``): a user's ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` is never
    overridden. Numba's on-disk cache is keyed by the features string, so kernels cached with other
    features are recompiled, not reused.
    """
    if "_toplevel_target_context" in vars(numba_registry.cpu_target):
        return None  # code generator exists: its features are fixed
    features = wide_vector_features(get_host_cpu_features(), numba.config.CPU_NAME, numba.config.CPU_FEATURES)
    if features is not None:
        numba.config.CPU_FEATURES = features
    return features


CPU_FEATURES_SET = select_cpu_features()  # None: Numba's default features (or the user's)

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
