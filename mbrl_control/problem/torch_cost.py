"""The cost of whole trajectories on torch tensors, evaluated from the cost terms' definitions.

The reference the kernels are tested against, and the cost of the torch MPPI backend (any
device, any dtype). One pass over the horizon (the terms' carries are sequential).
"""

from __future__ import annotations

import torch

from mbrl_control.ops import record, torch_ops
from mbrl_control.problem.definition import ControlProblem


class TorchProblemCost:
    """Total cost (K,) of K trajectories of a :class:`ControlProblem`."""

    def __init__(self, problem: ControlProblem) -> None:
        self.problem = problem.validate()
        model = problem.model
        self._pos = [model.state_index(n) for n in problem.context.position_states]

    def _context(self, states: torch.Tensor):
        ctx = self.problem.context
        if not ctx.features:
            return record((), ())
        return record(ctx.features, ctx.lookup_torch(states[..., self._pos]))

    @torch.no_grad()
    def __call__(self, state0: torch.Tensor, states: torch.Tensor, controls: torch.Tensor,
                 u_prev: torch.Tensor) -> torch.Tensor:
        """``states`` (K, T, n) = x_1..x_T, ``controls`` (K, T, m), ``state0`` (n,), ``u_prev`` (m,)."""
        model = self.problem.model
        k, horizon = states.shape[0], states.shape[1]
        dtype = states.dtype
        x0 = state0.to(dtype).expand(k, -1)
        ctx0 = self._context(x0)
        ctx_all = self._context(states)
        total = torch.zeros(k, dtype=dtype, device=states.device)
        terms = []
        for spec in self.problem.costs:
            w = record(spec.term.weight_names(),
                       [torch.tensor(float(v), dtype=torch.float32).to(dtype) for v in spec.weights])
            carry = spec.term.initial(torch_ops, model.state_record(x0.unbind(-1)), ctx0, w)
            carry = tuple(torch.as_tensor(c, dtype=dtype, device=states.device).expand(k) for c in carry)
            terms.append((spec.term, w, carry))
        before = u_prev.to(dtype).expand(k, -1)
        for t in range(horizon):
            x = model.state_record(states[:, t].unbind(-1))
            u = model.control_record(controls[:, t].to(dtype).unbind(-1))
            up = model.control_record(before.unbind(-1))
            ctx = record(ctx_all._fields, [f[:, t] for f in ctx_all]) if ctx_all._fields else ctx_all
            for i, (term, w, carry) in enumerate(terms):
                cost, carry = term.stage(torch_ops, x, u, up, ctx, record(term.carry, carry), w)
                total = total + cost
                terms[i] = (term, w, carry)
            before = controls[:, t].to(dtype)
        return total
