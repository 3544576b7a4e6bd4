"""Cost terms, one file each (see :mod:`mbrl_control.problem.cost_term`)."""
