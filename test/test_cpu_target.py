"""512-bit vectors on AVX-512 hosts: the decision of :func:`mbrl_control.kernels.wide_vector_features`.

LLVM's tuning of Intel AVX-512 cores sets ``prefer-256-bit`` (8-lane loops), Zen 4's does not
(16 lanes); the package clears it unless the user chose a Numba target. Decision logic only (pure
function of strings), plus one fresh process that checks the code generator really got it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mbrl_control.kernels import wide_vector_features

ICELAKE = "+64bit,+avx,+avx2,+avx512bw,+avx512cd,+avx512dq,+avx512f,+avx512vl,+fma,-avx512fp16,+sse4.2"
ZEN3 = "+64bit,+avx,+avx2,-avx512bw,-avx512f,+fma,+sse4.2"  # AVX2 only: 256 bits is all there is


def test_avx512_host_gets_prefer_256_bit_cleared():
    assert wide_vector_features(ICELAKE, None, None) == ICELAKE + ",-prefer-256-bit"


@pytest.mark.parametrize("features", [ZEN3, "", "+avx2,+avx512vl", ICELAKE.replace("+avx512f", "-avx512f")])
def test_no_avx512f_no_change(features):
    assert wide_vector_features(features, None, None) is None


@pytest.mark.parametrize("cpu_name, cpu_features", [
    ("skylake-avx512", None),  # NUMBA_CPU_NAME only: Numba's default features for that name
    (None, ICELAKE),  # NUMBA_CPU_FEATURES only
    (None, ""),  # explicitly empty features
    ("generic", ""),  # what Numba's config holds for NUMBA_CPU_NAME=generic
])
def test_user_target_is_respected(cpu_name, cpu_features):
    assert wide_vector_features(ICELAKE, cpu_name, cpu_features) is None


@pytest.mark.parametrize("flag", ["+prefer-256-bit", "-prefer-256-bit"])
def test_features_that_already_decide_the_width_are_kept(flag):
    assert wide_vector_features(ICELAKE + "," + flag, None, None) is None


def test_flag_is_appended_last_and_spaces_dropped():
    out = wide_vector_features(" +avx512f , +avx2 ,", None, None)
    assert out == "+avx512f,+avx2,-prefer-256-bit"


def _run_fresh(code: str, drop: tuple[str, ...], env_extra: dict[str, str]) -> list[str]:
    """Lines a new Python process prints for ``code``, without the ``drop`` variables, with ``env_extra``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.splitlines()


def _fresh_process(env_extra: dict[str, str]) -> list[str]:
    code = ("import mbrl_control.kernels as k\n"
            "from numba.core import registry\n"
            "from numba.core.codegen import get_host_cpu_features\n"
            "print(repr(k.CPU_FEATURES_SET))\n"
            "print(registry.cpu_target.target_context.codegen()._tm_features)\n"
            "print(get_host_cpu_features())\n")
    return _run_fresh(code, ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"), env_extra)


def test_code_generator_uses_the_decision_in_a_fresh_process():
    chosen, in_use, host = _fresh_process({})
    expected = wide_vector_features(host, None, None)
    assert chosen == repr(expected)
    assert in_use == (expected if expected is not None else host)


def test_code_generator_keeps_a_users_features_in_a_fresh_process():
    chosen, in_use, _ = _fresh_process({"NUMBA_CPU_FEATURES": "+64bit,+sse2"})
    assert chosen == "None"
    assert in_use == "+64bit,+sse2"


def _threading_layer_in_fresh_process(env_extra: dict[str, str]) -> list[str]:
    """(what select_threading_layer chose, the layer a parallel kernel then ran on)."""
    code = ("import numpy as np, numba\n"
            "import mbrl_control.kernels as k\n"
            "@numba.njit(parallel=True)\n"
            "def total(a):\n"
            "    s = 0.0\n"
            "    for i in numba.prange(a.size):\n"
            "        s += a[i]\n"
            "    return s\n"
            "assert total(np.ones(64)) == 64.0\n"
            "print(repr(k.THREADING_LAYER_SET))\n"
            "print(numba.threading_layer())\n")
    return _run_fresh(code, ("NUMBA_THREADING_LAYER",), env_extra)


def test_tbb_threading_layer_is_chosen_when_it_loads():
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
        expected = "tbb"
    except (ImportError, OSError):
        expected = "workqueue"
    chosen, running = _threading_layer_in_fresh_process({})
    assert chosen == repr(expected)
    assert running == expected


def test_users_threading_layer_is_kept():
    chosen, running = _threading_layer_in_fresh_process({"NUMBA_THREADING_LAYER": "workqueue"})
    assert chosen == "None"
    assert running == "workqueue"
