"""Exact first and second derivatives of the car models, for iLQR/DDP and the NMPC.

The car models are not written here: :func:`single_track_derivative` evaluates the one written
definition of a model kind (:data:`MODEL_DEFINITIONS`: :mod:`.kinematic_bicycle`,
:mod:`.single_track`) over the CasADi backend of :mod:`mbrl_control.ops`.
:func:`ilqr_kernel_functions` lists the CasADi functions of them (value, Jacobian wrt
``w = (s, u)``, multiplier-weighted Hessian ``sum_i lam_i d2f_i/dw2``) that
:mod:`mbrl_control.kernels.casadi_codegen` translates into Numba kernels, with those of the
smooth racing cost (:mod:`mbrl_control.problem.costs.contouring`): generated at first use into
the cache folder, never checked in. The RK4 / substep discretisation and the
residual MLP are differentiated exactly in :mod:`mbrl_control.kernels.ilqr_vehicle` on top of
these continuous-time derivatives.

:func:`autograd_step_derivatives` is an independent second implementation (torch autograd on
the torch models themselves, residual included) that the tests compare against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from mbrl_control.config import VehicleParams
from mbrl_control.models.kinematic_bicycle import SINGLE_TRACK_PARAMS, KinematicBicycleModel
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM
from mbrl_control.models.motion_model import MotionModel, casadi_derivative, symbolic_params
from mbrl_control.models.single_track import DynamicSingleTrackModel

MODEL_DEFINITIONS: dict[str, type[MotionModel]] = {"dynamic": DynamicSingleTrackModel,
                                                   "kinematic": KinematicBicycleModel}
"""Model kind (as the controllers and kernels name it) -> its one written definition."""
MODEL_KINDS: tuple[str, ...] = tuple(MODEL_DEFINITIONS)

PARAM_NAMES: tuple[str, ...] = SINGLE_TRACK_PARAMS
"""Order of the vehicle parameter vector ``p`` every generated kernel takes (VehicleParams' field order)."""


def param_vector(params: VehicleParams) -> np.ndarray:
    """The parameter vector (float64, ``PARAM_NAMES`` order) for the generated kernels."""
    return np.array([getattr(params, n) for n in PARAM_NAMES], dtype=np.float64)


def param_vector_of_model(model) -> np.ndarray:
    """Parameter vector read from a torch single-track model's buffers (sysid may have changed them)."""
    return np.array([float(getattr(model, n)) for n in PARAM_NAMES], dtype=np.float64)


def _ca():
    import casadi as ca

    return ca


def model_definition(kind: str) -> type[MotionModel]:
    """The definition of model ``kind`` ('dynamic' | 'kinematic')."""
    try:
        return MODEL_DEFINITIONS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r} (choose from {', '.join(MODEL_KINDS)})") from None


def single_track_derivative(kind: str, s, u, p):
    """``ds/dt`` of model ``kind`` as a CasADi column vector, from its one written definition.

    ``s`` (7), ``u`` (2) are CasADi vectors; ``p`` gives the parameters as a mapping name -> value,
    an object with them as attributes (e.g. VehicleParams), or a vector in ``PARAM_NAMES`` order
    (numbers or CasADi expressions).
    """
    if isinstance(p, Mapping):
        p = SimpleNamespace(**p)
    elif not hasattr(p, PARAM_NAMES[0]):
        p = symbolic_params(PARAM_NAMES, p)
    return casadi_derivative(model_definition(kind), s, u, p)


# --------------------------------------------------------------------------- what the kernels compile
@dataclass(frozen=True)
class KernelFunction:
    """A CasADi function that becomes one generated Numba kernel ``name(*input_names, *output_names)``."""

    function: Any  # casadi.Function; its name is the kernel's name
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def _derivative_kernels(name: str, expr, w, inputs: list, input_names: tuple[str, ...]) -> list[KernelFunction]:
    """``<name>_f``, ``_jac`` (wrt ``w``), ``_fjac`` (both) and ``_hess`` (multiplier-weighted,
    the multipliers ``lam`` after the first two inputs) of the vector expression ``expr``."""
    ca = _ca()
    lam = ca.SX.sym("lam", expr.shape[0])
    jac = ca.jacobian(expr, w)
    hess, _ = ca.hessian(ca.dot(lam, expr), w)
    h_inputs, h_names = [*inputs[:2], lam, *inputs[2:]], (*input_names[:2], "lam", *input_names[2:])

    def kernel(suffix: str, ins: list, names: tuple[str, ...], outs: list, out_names: tuple[str, ...]):
        return KernelFunction(ca.Function(f"{name}_{suffix}", ins, outs), names, out_names)

    return [kernel("f", inputs, input_names, [expr], ("out",)),
            kernel("jac", inputs, input_names, [jac], ("out",)),
            kernel("fjac", inputs, input_names, [expr, jac], ("out_f", "out_jac")),
            kernel("hess", h_inputs, h_names, [hess], ("out",))]


def ilqr_kernel_functions() -> list[KernelFunction]:
    """The CasADi functions of the models the iLQR kernels call, in the order of the generated module.

    ``st_<kind>_{f,jac,fjac,hess}(z, u, [lam,] p, ...)``: the continuous-time derivative of each
    model kind, its Jacobian wrt (z, u) (7x9), both, the multiplier-weighted Hessian (9x9). The
    cost kernels are added above this layer (:mod:`mbrl_control.kernels.casadi_codegen`).
    """
    ca = _ca()
    out: list[KernelFunction] = []
    s, u, p = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM), ca.SX.sym("p", len(PARAM_NAMES))
    for kind in MODEL_KINDS:
        expr = single_track_derivative(kind, s, u, p)
        out += _derivative_kernels(f"st_{kind}", expr, ca.vertcat(s, u), [s, u, p], ("z", "u", "p"))
    return out


# --------------------------------------------------------------------------- numpy-facing API
def casadi_function(kind: str, params: VehicleParams):
    """A CasADi ``Function('f', [s, u], [ds/dt])`` of model ``kind`` with numeric parameters."""
    ca = _ca()
    s, u = ca.SX.sym("s", STATE_DIM), ca.SX.sym("u", CONTROL_DIM)
    return ca.Function("f", [s, u], [single_track_derivative(kind, s, u, params)])


def autograd_step_derivatives(model, state: np.ndarray, control: np.ndarray, lam: np.ndarray | None = None):
    """(F, dF/ds, dF/du, sum_i lam_i d2F_i/dw2) of one ``model.forward`` step by torch autograd (float64).

    The independent reference for the Numba derivatives: works on any torch ``DynamicsModel``,
    including a semi-parametric one with its residual MLP.
    """
    import torch

    m = _as_float64(model)
    w0 = torch.as_tensor(np.concatenate([state, control]), dtype=torch.float64)
    n = STATE_DIM

    def step(w):
        return m(w[:n], w[n:])

    with torch.enable_grad():
        value = step(w0).detach().numpy()
        jac = torch.autograd.functional.jacobian(step, w0).numpy()
        hess = None
        if lam is not None:
            lam_t = torch.as_tensor(lam, dtype=torch.float64)
            hess = torch.autograd.functional.hessian(lambda w: torch.dot(lam_t, step(w)), w0).numpy()
    return value, jac[:, :n], jac[:, n:], hess


def _as_float64(model):
    import copy

    import torch

    m = copy.deepcopy(model)
    return m.to(torch.float64)
