"""The motion-model interface: one file per model, everything else derived from it.

A motion model is a class with its layout (state and control names with units), the names of
its parameters, its continuous-time equations ``derivative(m, x, u, p)`` written once in the
vocabulary of :mod:`mbrl_control.ops`, its control bounds and its safe-stop command. From that
one definition:

- :func:`torch_derivative` evaluates it on batched tensors (training, reference, tests);
- :func:`casadi_derivative` builds the CasADi expression (NMPC, exact iLQR/DDP derivatives);
- :mod:`mbrl_control.kernels.mppi_generated` compiles it into the fused Numba CPU and CUDA MPPI
  kernels (float32 device functions generated from the same source).

``x`` and ``u`` are tuples (one entry per state / control, any backend's scalar or tensor), ``p``
any object with the parameters as attributes (a dataclass, a torch module's buffers, CasADi
symbols). See ``docs/architecture.md`` ("add a motion model") for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar, Sequence

import numpy as np

from mbrl_control.ops import record


@dataclass(frozen=True)
class Quantity:
    """A named state or control entry with its SI unit."""

    name: str
    unit: str
    doc: str = ""


class MotionModel:
    """Base of every motion model definition (a namespace of class attributes and static methods).

    Subclasses set ``name``, ``states``, ``controls``, ``param_names`` and implement
    ``derivative``, ``control_bounds`` and ``safe_stop``; ``residual_inputs`` / ``residual_outputs``
    name the states a learned residual sees and corrects (empty: no residual support).
    """

    name: ClassVar[str] = ""
    states: ClassVar[tuple[Quantity, ...]] = ()
    controls: ClassVar[tuple[Quantity, ...]] = ()
    param_names: ClassVar[tuple[str, ...]] = ()
    residual_inputs: ClassVar[tuple[str, ...]] = ()
    residual_outputs: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def derivative(m, x, u, p):
        """Continuous-time ``dx/dt`` as a tuple, one entry per state."""
        raise NotImplementedError

    @classmethod
    def control_bounds(cls, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) float64 arrays of the controls a planner may command."""
        raise NotImplementedError

    @classmethod
    def safe_stop(cls, state: np.ndarray, params: Any) -> np.ndarray:
        """The command that brings the system to rest from ``state`` (within the bounds)."""
        raise NotImplementedError

    # ---- layout helpers (derived, not overridden)
    @classmethod
    def state_dim(cls) -> int:
        return len(cls.states)

    @classmethod
    def control_dim(cls) -> int:
        return len(cls.controls)

    @classmethod
    def state_index(cls, name: str) -> int:
        return [q.name for q in cls.states].index(name)

    @classmethod
    def control_index(cls, name: str) -> int:
        return [q.name for q in cls.controls].index(name)

    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        return tuple(q.name for q in cls.states)

    @classmethod
    def control_names(cls) -> tuple[str, ...]:
        return tuple(q.name for q in cls.controls)

    @classmethod
    def state_record(cls, values) -> Any:
        """The state as a record (``x.v``) over per-state values (scalars, tensors, symbols)."""
        return record(cls.state_names(), values)

    @classmethod
    def control_record(cls, values) -> Any:
        return record(cls.control_names(), values)

    @classmethod
    def records(cls) -> dict[str, tuple[str, ...]]:
        """What a definition reads by name: ``x`` states, ``u`` controls, ``p`` parameters."""
        return {"x": cls.state_names(), "u": cls.control_names(), "p": tuple(cls.param_names)}

    @classmethod
    def param_vector(cls, params: Any, dtype=np.float32) -> np.ndarray:
        """The parameters in ``param_names`` order (what the kernels read)."""
        return np.array([float(getattr(params, n)) for n in cls.param_names], dtype=dtype)

    @classmethod
    def residual_input_indices(cls) -> tuple[int, ...]:
        return tuple(cls.state_index(n) for n in cls.residual_inputs)

    @classmethod
    def residual_output_indices(cls) -> tuple[int, ...]:
        return tuple(cls.state_index(n) for n in cls.residual_outputs)


def torch_derivative(model: type[MotionModel], state, control, params):
    """``dx/dt`` (shape of ``state``) of ``model`` on tensors batched over leading dimensions."""
    import torch

    from mbrl_control.ops import torch_ops

    x, u = model.state_record(state.unbind(-1)), model.control_record(control.unbind(-1))
    out = model.derivative(torch_ops, x, u, params)
    return torch.stack([torch.as_tensor(o, dtype=state.dtype, device=state.device).expand(state.shape[:-1])
                        for o in out], dim=-1)


def numpy_derivative(model: type[MotionModel], state: np.ndarray, control: np.ndarray, params: Any) -> np.ndarray:
    """``dx/dt`` of ``model`` in float64 NumPy (batched over leading dimensions)."""
    from mbrl_control.ops import numpy_ops

    state = np.asarray(state, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    x = model.state_record(tuple(np.moveaxis(state, -1, 0)))
    out = model.derivative(numpy_ops, x, model.control_record(tuple(np.moveaxis(control, -1, 0))), params)
    return np.stack([np.broadcast_to(np.asarray(o, dtype=np.float64), state.shape[:-1]) for o in out], axis=-1)


def casadi_derivative(model: type[MotionModel], state, control, params):
    """``dx/dt`` of ``model`` as a CasADi column vector; ``params`` any object with attribute access
    (numbers or CasADi expressions), e.g. :func:`symbolic_params`."""
    import casadi as ca

    from mbrl_control.ops import casadi_ops

    x = model.state_record([state[i] for i in range(model.state_dim())])
    u = model.control_record([control[i] for i in range(model.control_dim())])
    return ca.vertcat(*model.derivative(casadi_ops, x, u, params))


def symbolic_params(names: Sequence[str], vector) -> SimpleNamespace:
    """Attribute access ``p.<name>`` onto the entries of a symbolic (or numeric) vector."""
    return SimpleNamespace(**{name: vector[i] for i, name in enumerate(names)})
