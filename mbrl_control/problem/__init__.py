"""Control problems as data: a motion model, cost terms and a context (e.g. a race track).

Layer: above :mod:`mbrl_control.models`, below :mod:`mbrl_control.kernels`. Every solver (MPPI on
Numba / torch / CUDA, iLQR/DDP, NMPC) takes a :class:`~mbrl_control.problem.definition.ControlProblem`
and derives what it needs from the one written definition of each part.
"""
