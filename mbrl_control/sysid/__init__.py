"""System identification: physics-parameter fitting, residual ensembles, online refit policy."""
