"""Controllers (MPPI, iLQR/DDP, NMPC reference, pure pursuit baseline) behind one interface, and costs."""

from mbrl_control.control.base import Controller, guard_command, safe_stop_command
from mbrl_control.control.factory import CONTROLLERS, make_controller

__all__ = ["CONTROLLERS", "Controller", "guard_command", "make_controller", "safe_stop_command"]
