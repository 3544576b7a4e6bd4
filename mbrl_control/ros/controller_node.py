"""``controller_node``: the model-based controller on a timer, with a watchdog and model hot-swap.

Topics (relative names, remappable; see docs/ros_interface.md):

- subscribes ``odom`` (nav_msgs/Odometry), ``model_updates`` (std_msgs/String, JSON from
  sysid_node, transient local) and, when ``use_path_topic``, ``path`` (nav_msgs/Path);
- publishes ``drive`` (ackermann_msgs/AckermannDriveStamped) or ``cmd_vel``
  (geometry_msgs/TwistStamped) by ``command_type``; ``~/optimal_path`` (nav_msgs/Path),
  ``~/candidates`` (visualization_msgs/MarkerArray, only while someone subscribes) and
  ``/diagnostics``.

The control step runs on a timer in its own callback group: take the latest odometry, add the
steering estimate (servo model on our own commands), step the controller, guard the command,
publish. Everything slow happens in other callback groups (other executor threads): loading a
new model file, building paths and markers, diagnostics. A new model is swapped in atomically
at the start of the next tick (``Controller.set_model``).

No ``from __future__ import annotations`` here: rclpy finds the ``TimerInfo`` argument of a
timer callback by comparing the evaluated annotation with the class.
"""

import copy
import json
import math
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.ros.env import ensure_ros_env, raise_priority

ensure_ros_env()

from ackermann_msgs.msg import AckermannDriveStamped  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.timer import TimerInfo  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mbrl_control.config import load_vehicle_params  # noqa: E402
from mbrl_control.control.base import Controller, guard_command, safe_stop_command  # noqa: E402
from mbrl_control.control.command_interface import (CALIBRATION_TERMS, INTERFACES, MAX_DEAD_TIME_S,  # noqa: E402
                                                    STEERING_ACTUATORS, CommandInterface, load_actuation)
from mbrl_control.control.factory import CONTROLLERS, make_controller  # noqa: E402
from mbrl_control.models.factory import make_model  # noqa: E402
from mbrl_control.models.guards import model_cost_problem  # noqa: E402
from mbrl_control.models.layout import STATE_DIM, S, U  # noqa: E402
from mbrl_control.models.odometry import odometry_to_state  # noqa: E402
from mbrl_control.ros import conversions as conv  # noqa: E402
from mbrl_control.ros import model_auth  # noqa: E402
from mbrl_control.ros import qos  # noqa: E402
from mbrl_control.ros import staleness  # noqa: E402
from mbrl_control.ros.loopstats import LoopStats  # noqa: E402
from mbrl_control.ros.params import (ACTUATOR_CALIBRATION_PARAMS, ParamSpec, checked_value, data_file,  # noqa: E402
                                     declare_params, declare_sections, flatten_options, model_spec,
                                     option_descriptor, reject_unknown)
from mbrl_control.ros.steering import SteeringEstimator  # noqa: E402
from mbrl_control.sim.plant import initial_state_at  # noqa: E402
from mbrl_control.sysid.actuator_id import ActuatorIdentifier, identifier_for  # noqa: E402
from mbrl_control.track import Track, narrowed, resolve_track  # noqa: E402

NODE_NAME = "controller_node"
DEFAULT_CONTROLLER = "mppi"
RUNTIME_PARAMS = frozenset({"odom_timeout_s", "odom_stamp_tolerance_s", "candidates_max", "frame_id", "map_frame_id",
                            "path_half_width_m"})
"""Node parameters that may change at run time (``ros2 param set``); every other one is fixed at start-up."""
RESTART_OPTIONS = {"*": frozenset({"backend", "device"}), "nmpc": frozenset({"horizon"})}
"""Options of the running controller that cannot change at run time (another kernel / a new NLP would be
compiled in the control process); all its other options can, checked and applied like at start-up."""
FINAL_STOP_ACK_S = 0.5
"""How long the final safe-stop command waits for reliable subscribers to acknowledge it."""

PARAMS = (
    ParamSpec("model", "dynamic", "prediction model: kinematic | dynamic | semiparametric | path of a model file"),
    ParamSpec("track", "default", "track NAME (default, Austin, ...) or centerline CSV path"),
    ParamSpec("track_half_width_m", 0.0, "run the track narrowed: every half width set to this [m]; 0: as loaded",
              low=0.0, high=100.0),
    ParamSpec("vehicle_file", "", "vehicle parameter YAML; empty: the package's models/f1tenth.yaml"),
    ParamSpec("rate_hz", 50.0, "control rate [Hz]", low=1.0, high=1000.0),
    ParamSpec("command_type", "ackermann", "publish 'drive' (AckermannDriveStamped) or 'cmd_vel' (TwistStamped)",
              choices=("ackermann", "twist")),
    ParamSpec("odom_timeout_s", 0.2, "no odometry received for this long before a tick's scheduled time: command a "
              "safe stop [s] (docs/ros_interface.md, Stale odometry)", positive=True, high=10.0),
    ParamSpec("odom_stamp_tolerance_s", 0.5, "how far odometry stamps on the node's time base may be ahead of the node "
              "clock (not checked under sim time; behind: odom_timeout_s more) at receipt; further: refused [s]",
              low=0.0, high=60.0),
    ParamSpec("frame_id", "base_link", "frame of the command messages"),
    ParamSpec("map_frame_id", "map", "frame of the planned path and candidates"),
    ParamSpec("path_rate_hz", 10.0, "rate of ~/optimal_path and ~/candidates [Hz]; 0 disables them", low=0.0, high=100.0),
    ParamSpec("candidates_max", 32, "at most this many candidate trajectories on ~/candidates", low=1, high=4096),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics [s]", positive=True, high=60.0),
    ParamSpec("warmup_steps", 5, "controller steps before the loop starts (JIT compilation, caches)", low=0, high=1000),
    ParamSpec("accept_models", True, "hot-swap models announced on model_updates"),
    ParamSpec("model_dir", "", "only model files inside this folder (sysid_node's out_dir) are accepted as updates; "
              "empty: $MBRL_MODEL_DIR, else no update is accepted"),
    ParamSpec("use_path_topic", False, "follow a nav_msgs/Path on 'path' instead of the track's centerline"),
    ParamSpec("path_half_width_m", 1.0, "half width of the corridor around a received path [m]", positive=True, high=50.0),
    ParamSpec("command_interface", "acceleration", "what the driver follows: 'acceleration' (applies AckermannDrive."
              "acceleration) or 'speed' (a speed loop on AckermannDrive.speed: a VESC, f1tenth_gym)",
              choices=INTERFACES),
    ParamSpec("speed_gain_up_per_s", 0.0, "speed-loop gain when speeding up [1/s]; 0: identify online", low=0.0, high=1000.0),
    ParamSpec("speed_gain_down_per_s", 0.0, "speed-loop gain when slowing down [1/s]; 0: identify online", low=0.0,
              high=1000.0),
    ParamSpec("steer_dead_time_s", 0.0, "steering dead time the plan predicts through [s] (identified online when "
              "identify_actuation)", low=0.0, high=MAX_DEAD_TIME_S),
    ParamSpec("steering_actuator", "servo", "the steering servo: 'servo' (first-order, as the model; sent the plan's "
              "command) or 'rate_limit' (turns at its full rate until on the commanded angle, like a hobby servo and "
              "f1tenth_gym; sent the angle the plan reaches at the end of the period)", choices=STEERING_ACTUATORS),
    ParamSpec("identify_actuation", True, "identify the speed-loop gains and steering dead time from the telemetry "
              "(speed interface only)"),
    *ACTUATOR_CALIBRATION_PARAMS,
    ParamSpec("process_niceness", 0, "scheduling niceness the node asks for at start-up, for all its threads (-20..19; "
              "below the current one needs CAP_SYS_NICE, else a warning; 0: as started). A control loop sharing the "
              "cores with other work: -10", low=-20, high=19),
    ParamSpec("step_log_capacity", 0, "keep the first N control steps in memory (the demo's run summary)", low=0,
              high=10_000_000),
)


def controller_param() -> ParamSpec:
    """The ``controller`` parameter; its choices are the controllers registered at construction time."""
    return ParamSpec("controller", DEFAULT_CONTROLLER, "controller by name; its options are the parameter section of that name",
                     choices=tuple(CONTROLLERS))


class ControllerNode(Node):
    """The control loop node; see the module docstring."""

    def __init__(self, context: Context | None = None, node_name: str = NODE_NAME, cli_args: list[str] | None = None,
                 parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(node_name, context=context, cli_args=cli_args, parameter_overrides=parameter_overrides)
        self.cfg = declare_params(self, (controller_param(), *PARAMS), read_only=False)
        self.options = declare_sections(self, CONTROLLERS, dynamic=(self.cfg["controller"],))
        reject_unknown(self)
        cfg = self.cfg
        self.niceness = self._ask_priority(cfg["process_niceness"])
        self.dt_s = 1.0 / cfg["rate_hz"]
        self.params = load_vehicle_params(data_file(cfg["vehicle_file"]))
        self.track = resolve_track(cfg["track"])
        if cfg["track_half_width_m"] > 0.0:
            self.track = narrowed(self.track, cfg["track_half_width_m"])
        self.model_spec = model_spec(cfg["model"])
        self.initial_model = make_model(self.model_spec, self.params, self.dt_s)
        self.controller: Controller = self._build_controller(self.track, self.initial_model)
        self._interface, self._actuator_id = self._make_command_interface()
        self.stats = LoopStats(self.dt_s, window=max(50, int(5 * cfg["rate_hz"])), log_capacity=cfg["step_log_capacity"])
        self.model_version = 0
        self.model_swaps = 0
        self.models_used: list[tuple[float, int, Any]] = [(0.0, 0, self.initial_model)]
        self._init_loop_state()
        self._model_gate = self._make_model_gate()
        self._warm_up()
        self._declare_runtime_parameters()
        self._make_interfaces()
        self.get_logger().info(f"{cfg['controller']} on '{self.track.name}' at {cfg['rate_hz']:g} Hz, model {self.model_spec}, "
                               f"commands on '{self._cmd_pub.topic_name}'")

    @property
    def command_interface(self) -> CommandInterface:
        """How each command is published (the driver's interface), with the terms identified so far."""
        return self._interface

    @property
    def actuator_identifier(self) -> ActuatorIdentifier | None:
        """The online identification of the driver's terms (speed interface with ``identify_actuation``)."""
        return self._actuator_id

    # ------------------------------------------------------------------ set-up
    def _ask_priority(self, niceness: int) -> int:
        """``process_niceness`` for every thread (the executor's, started later, inherit it); the one in effect."""
        effective = raise_priority(niceness) if niceness else os.getpriority(os.PRIO_PROCESS, 0)
        if niceness and effective > niceness:
            self.get_logger().warning(f"process_niceness {niceness} not granted (no CAP_SYS_NICE): running at {effective}")
        return effective

    def _make_model_gate(self) -> model_auth.ModelUpdateGate:
        """The checks on model announcements: model folder, content hash, per-run HMAC, increasing versions."""
        model_dir = model_auth.resolve_model_dir(self.cfg["model_dir"])
        secret = None
        if self.cfg["accept_models"]:
            if model_dir is None:
                self.get_logger().warning("no model_dir (nor $MBRL_MODEL_DIR): announced models will be refused")
            else:
                try:
                    secret = model_auth.run_secret(model_dir)
                except OSError as exc:
                    self.get_logger().error(f"no model-update key in {model_dir} ({exc}): announced models will be refused")
        return model_auth.ModelUpdateGate(model_dir, secret)

    def _make_command_interface(self) -> tuple[CommandInterface, ActuatorIdentifier | None]:
        """The command interface of the parameters; its unknown terms identified online (off the tick)."""
        cfg = self.cfg
        config = load_actuation({"interface": cfg["command_interface"], "speed_gain_up_per_s": cfg["speed_gain_up_per_s"],
                                 "speed_gain_down_per_s": cfg["speed_gain_down_per_s"],
                                 "steer_dead_time_s": cfg["steer_dead_time_s"], "identify": cfg["identify_actuation"],
                                 "steering": cfg["steering_actuator"], "calibration": cfg["actuator_calibration"],
                                 **{name: cfg[name] for name in CALIBRATION_TERMS}},
                                f"{self.get_name()} parameters")
        return CommandInterface(config, self.params, self.dt_s), identifier_for(config, self.params, self.dt_s,
                                                                                 background=True)

    def _build_controller(self, track: Track, model) -> Controller:
        name = self.cfg["controller"]
        return make_controller(name, self.params, self.dt_s, track, model, self.options.get(name, {}))

    def _init_loop_state(self) -> None:
        self._lock = threading.Lock()
        self._odom: tuple[tuple[float, ...], int] | None = None  # (odometry fields, receive time ns)
        self._rejected_odom = 0
        self._odom_gate = conv.OdometryGate(self.params)  # NaN, implausible speed / position, jumps: rejected
        self._steering = SteeringEstimator(self.params)
        self._yaw_ref: float | None = None
        self._last_tick_ns: int | None = None
        self._state = np.zeros(STATE_DIM)
        self._last_u = np.zeros(2)
        self._last_wire = np.zeros(3)  # the AckermannDrive fields last published (steering, acceleration, speed)
        self._stopped = True  # no valid odometry yet: the controller starts from a reset
        self._stop_speed = 0.0
        self._pending_model: tuple[int, Any] | None = None
        self._pending_controller: Controller | None = None
        self._want_snapshot = False
        self._plan_xy: np.ndarray | None = None
        self._candidates: Callable[[], np.ndarray | None] | None = None
        self._faults = 0
        self.final_stop_published = False
        self._after_tick = threading.Event()  # set when a step has published
        self._pending_params: tuple[Controller | None, dict[str, Any] | None, dict[str, Any]] | None = None
        self.param_updates = 0
        self.param_rejections = 0
        self.runtime_params: dict[str, Any] = {}  # every parameter changed at run time -> its applied value
        self.param_swap_step_max_ms = 0.0  # longest step of a tick that took a parameter change in
        self._params_applied_this_tick = False
        self._tick_started: float | None = None  # perf_counter at the start of the running tick
        self._watchdog_fired = False  # the watchdog published a safe stop during the running tick
        self.watchdog_stops = 0
        self._watchdog_stop = threading.Event()
        # stale odometry (mbrl_control/ros/staleness.py): the callback and a tick that takes waiting messages
        # both receive, under this lock
        self._odom_lock = threading.Lock()
        self._odom_stamp_ns: int | None = None  # header stamp of the odometry in self._odom
        self._stamp_check = staleness.StampCheck(None, "none", math.nan)  # of the newest message received
        self._bad_stamps = 0  # messages refused for their stamp (a repeat, old data, a clock off)
        self.odometry_superseded = 0  # older messages delivered after newer ones (a backlog out of order): dropped
        self._gate_anchor: tuple[int, int] | None = None  # (gate time, stamp) of the last accepted odometry
        self._verdict: staleness.Verdict | None = None  # the last tick's decision
        self.stale_input_steps = 0  # ticks stale by the input: odometry came once, then stopped or was refused
        self.stale_avoided_tick_late = 0  # fresh at the tick's scheduled time, stale at its late start
        self.stale_avoided_queued = 0  # fresh only with odometry the tick took from the middleware
        self.odometry_taken_in_ticks = 0

    def _warm_up(self) -> None:
        """Run the controller (and the swap path) before the timer starts, so no JIT compile lands in a tick."""
        n = int(self.cfg["warmup_steps"])
        if n == 0:
            return
        x, y, yaw = self.track.start_pose()
        states = [initial_state_at(x, y, yaw, v, self.params) for v in np.linspace(0.0, 3.0, n)]
        self._exercise(states)
        if self.cfg["accept_models"] and self.controller.model is not None:
            # every physics an update may bring (sysid can fit the dynamic model while the car starts
            # on the kinematic one): each is its own kernel, loaded here rather than in a tick
            for probe in _zero_residual_models(self.params, self.dt_s, self.initial_model):
                try:
                    self.controller.set_model(probe)
                    self._exercise(states[:2])
                finally:
                    self.controller.set_model(self.initial_model)
        self.controller.reset(states[0])

    def _exercise(self, states: list[np.ndarray]) -> None:
        for state in states:
            self.controller.step(state)
            self.controller.planned_xy()

    # ------------------------------------------------------------------ parameters at run time
    def _declare_runtime_parameters(self) -> None:
        """Declare every option of the running controller (defaults included), then take changes.

        ``ros2 param set`` goes through :meth:`_coerce_parameters` (``30`` for a float option becomes
        30.0, as in a params file) and :meth:`_on_set_parameters` (checked like at start-up; a new
        controller is built off the control thread and swapped in between two steps).
        """
        name = self.cfg["controller"]
        self._option_types: dict[str, type] = {}
        for key, value in flatten_options(self.controller).items():
            full = f"{name}.{key}"
            self._option_types[full] = type(value)
            if not self.has_parameter(full):
                self.declare_parameter(full, value, option_descriptor(name, False, self._restart_note(name, key)))
        self._spec_by_name = {spec.name: spec for spec in (controller_param(), *PARAMS)}
        self.add_pre_set_parameters_callback(self._coerce_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @staticmethod
    def _restart_note(controller: str, key: str) -> str:
        fixed = key in RESTART_OPTIONS["*"] or key in RESTART_OPTIONS.get(controller, ())
        return "; fixed at start-up (restart to change)" if fixed else "; can change at run time"

    def _coerce_parameters(self, parameters: list[Parameter]) -> list[Parameter]:
        """Integer values for float parameters become floats (``ros2 param set ... 30``), as at start-up."""
        out = []
        for param in parameters:
            expected = self._option_types.get(param.name)
            spec = self._spec_by_name.get(param.name)
            if expected is None and spec is not None:
                expected = type(spec.default)
            value = param.value
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                param = Parameter(param.name, Parameter.Type.DOUBLE, float(value))
            out.append(param)
        return out

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Check a change like at start-up; accepted ones are applied at the start of the next tick."""
        try:
            pending = self._prepare_change(parameters)
        except MbrlError as exc:
            self.param_rejections += 1
            self.get_logger().warning(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        if pending is not None:
            with self._lock:
                self._pending_params = _merge_pending(self._pending_params, pending)
        return SetParametersResult(successful=True)

    def _prepare_change(self, parameters: list[Parameter]):
        name = self.cfg["controller"]
        node_values: dict[str, Any] = {}
        option_values: dict[str, Any] = {}
        for param in parameters:
            key = param.name
            if key in self._spec_by_name:
                if key not in RUNTIME_PARAMS:
                    raise MbrlError(f"'{key}' is fixed at start-up (it shapes the node's set-up): restart the node "
                                    f"with the new value (run-time parameters: {', '.join(sorted(RUNTIME_PARAMS))}, "
                                    f"and the '{name}.*' options)")
                node_values[key] = checked_value(self.get_name(), self._spec_by_name[key], param.value)
            elif key.partition(".")[0] in CONTROLLERS:
                head, _, rest = key.partition(".")
                if head != name:
                    raise MbrlError(f"'{key}' belongs to controller '{head}', not to the running '{name}' "
                                    f"(restart with controller: {head} to use it)")
                if rest in RESTART_OPTIONS["*"] or rest in RESTART_OPTIONS.get(name, ()):
                    raise MbrlError(f"'{key}' is fixed at start-up (changing it compiles another kernel): "
                                    "restart the node with the new value")
                option_values[rest] = param.value
            # anything else (use_sim_time, ...) is rclpy's own business
        if not node_values and not option_values:
            return None
        controller = options = None
        if option_values:
            with self._lock:  # on top of an accepted change that the loop has not taken yet
                pending = self._pending_params
            base = pending[1] if pending is not None and pending[1] is not None else self.options.get(name, {})
            options = copy.deepcopy(base)
            for rest, value in option_values.items():
                _set_nested(options, rest.split("."), _plain_value(value))
            # Build right after a step: the kernels hold the GIL while the new controller warms up (~10 ms
            # here), which then overlaps the idle part of the period instead of delaying a step.
            self._after_tick.clear()
            self._after_tick.wait(2.0 * self.dt_s)
            try:  # the same validation as at start-up: the controller's config dataclass, via its factory
                controller = make_controller(name, self.params, self.dt_s, getattr(self.controller, "track", self.track),
                                             self.controller.model or self.initial_model, options)
            except (MbrlError, ValueError, TypeError) as exc:
                raise MbrlError(str(exc)) from None
        values = {**node_values, **{f"{name}.{k}": _plain_value(v) for k, v in option_values.items()}}
        return controller, options, values

    def _make_interfaces(self) -> None:
        cfg = self.cfg
        control_group = MutuallyExclusiveCallbackGroup()
        self._io_group = MutuallyExclusiveCallbackGroup()
        loader_group = MutuallyExclusiveCallbackGroup()
        aux_group = MutuallyExclusiveCallbackGroup()
        if cfg["command_type"] == "ackermann":
            self._cmd_msg: Any = AckermannDriveStamped()
            self._cmd_pub = self.create_publisher(AckermannDriveStamped, "drive", qos.COMMAND)
        else:
            self._cmd_msg = TwistStamped()
            self._cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", qos.COMMAND)
        self._path_pub = self.create_publisher(Path, "~/optimal_path", qos.VISUALIZATION)
        self._cand_pub = self.create_publisher(MarkerArray, "~/candidates", qos.VISUALIZATION)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self._odom_sub = self.create_subscription(Odometry, "odom", self._on_odom, qos.ODOMETRY, callback_group=self._io_group)
        if cfg["accept_models"]:
            self.create_subscription(String, "model_updates", self._on_model_update, qos.MODEL_UPDATES,
                                     callback_group=loader_group)
        if cfg["use_path_topic"]:
            self.create_subscription(Path, "path", self._on_path, qos.ODOMETRY, callback_group=loader_group)
        self._timer = self.create_timer(self.dt_s, self._on_tick, callback_group=control_group)
        self._watchdog_msg: Any = AckermannDriveStamped() if cfg["command_type"] == "ackermann" else TwistStamped()
        self._watchdog = threading.Thread(target=self._watch_ticks, name=f"{self.get_name()}-watchdog", daemon=True)
        self._watchdog.start()
        self.realtime_callback_groups = (control_group,)  # run in the executor's spin thread (runtime.Spinner)
        if cfg["path_rate_hz"] > 0:
            self.create_timer(1.0 / cfg["path_rate_hz"], self._on_visualization, callback_group=aux_group)
        self.create_timer(cfg["diagnostics_period_s"], self._on_diagnostics, callback_group=aux_group)

    # ------------------------------------------------------------------ inputs
    def _on_odom(self, msg: Odometry) -> None:
        """Keep the latest plausible odometry; NaN/inf, a broken quaternion, an implausible speed, position
        or jump is rejected (:class:`~mbrl_control.ros.conversions.OdometryGate`; the watchdog then stops),
        and so is a message whose header stamp is a repeat, old data or off the node clock
        (:func:`~mbrl_control.ros.staleness.check_stamp`)."""
        self._receive_odometry(msg)

    def _receive_odometry(self, msg: Odometry) -> None:
        """Receive one odometry message (the callback's thread, or a tick taking waiting messages)."""
        stamp = msg.header.stamp
        stamp_ns = int(stamp.sec) * staleness.NS + int(stamp.nanosec)
        with self._odom_lock:
            now_ns = self.get_clock().now().nanoseconds
            newest = None if self._odom is None or self._odom_stamp_ns is None else (self._odom_stamp_ns, self._odom[1])
            check = staleness.check_stamp(stamp_ns, now_ns, newest, self.cfg["odom_timeout_s"],
                                          self.cfg["odom_stamp_tolerance_s"], self.get_clock().ros_time_is_active)
            if check.superseded:
                self.odometry_superseded += 1
                return
            self._stamp_check = check
            fields = None
            if check.ok:
                gate_ns = staleness.gate_time_ns(now_ns, stamp_ns, self._gate_anchor)
                fields = self._odom_gate.check(msg, gate_ns)
                if fields is not None:
                    self._gate_anchor = (gate_ns, stamp_ns)
                    self._odom_stamp_ns = stamp_ns
                    self._odom = (fields, now_ns)
        if not check.ok:
            self._bad_stamps += 1
            self.get_logger().warning(f"refused odometry: {check.reason}", throttle_duration_sec=1.0)
        elif fields is None:
            self._rejected_odom += 1
            self.get_logger().warning(f"rejected odometry: {self._odom_gate.last_reason}", throttle_duration_sec=1.0)

    def _take_waiting_odometry(self) -> int:
        """Take the odometry that reached the middleware but not yet the callback (the executor hands a ready
        timer out before a ready subscription, and a starved callback thread falls behind); returns how many."""
        sub = self._odom_sub
        taken = 0
        try:
            with sub.handle:
                while taken < qos.ODOMETRY.depth:
                    got = sub.handle.take_message(sub.msg_type, sub.raw)
                    if got is None:
                        break
                    taken += 1
                    self._receive_odometry(got[0])
        except Exception as exc:  # noqa: BLE001 - the subscription is going away: the tick decides on what it has
            self.get_logger().warning(f"could not take waiting odometry: {exc}", throttle_duration_sec=1.0)
        self.odometry_taken_in_ticks += taken
        return taken

    def _judge_odometry(self, info: TimerInfo, now_ns: int):
        """The odometry this tick may step on, and whether it is fresh (:mod:`mbrl_control.ros.staleness`)."""
        scheduled_ns = info.expected_call_time.nanoseconds
        timeout_s = self.cfg["odom_timeout_s"]
        odom = self._odom
        verdict = staleness.judge(scheduled_ns, now_ns, timeout_s, None if odom is None else odom[1])
        if not verdict.fresh and self._take_waiting_odometry():
            odom = self._odom
            verdict = staleness.rejudge(verdict, scheduled_ns, now_ns, timeout_s, None if odom is None else odom[1])
        if not verdict.fresh and odom is not None:
            self.stale_input_steps += 1
            if self._verdict is None or self._verdict.fresh:
                self.get_logger().warning(f"stale odometry: {verdict.reason}; this tick started "
                                          f"{1e3 * (now_ns - scheduled_ns) * 1e-9:.0f} ms after its schedule")
        if verdict.queued:
            self.stale_avoided_queued += 1
        elif verdict.node_late:
            self.stale_avoided_tick_late += 1
        self._verdict = verdict
        return odom, verdict.fresh

    def _on_model_update(self, msg: String) -> None:
        """Check an announcement (:class:`~mbrl_control.ros.model_auth.ModelUpdateGate`), load the file here
        (loader thread); the tick swaps it in. A rejection is logged with its reason and changes nothing."""
        try:
            version, path = self._model_gate.check(msg.data)
        except model_auth.RejectedUpdate as exc:
            self.get_logger().error(f"rejected model announcement: {exc}")
            return
        try:
            model = make_model(str(path), self.params, self.dt_s, check_cost=False)  # probed below, on this state
        except MbrlError as exc:
            self._model_gate.reject(f"model v{version}: {exc}")
            self.get_logger().error(f"rejected model v{version}: {exc}")
            return
        reason = self._model_cost_problem(model)
        if reason is not None:
            self._model_gate.reject(f"model v{version}: {reason}")
            self.get_logger().error(f"rejected model v{version}: {reason}")
            return
        self._model_gate.accept(version)
        with self._lock:
            self._pending_model = (version, model)
        self.get_logger().info(f"model v{version} loaded from {path}; swapping at the next tick")

    def _model_cost_problem(self, model) -> str | None:
        """Why a loaded model is too expensive for the control loop, or None (:func:`model_cost_problem`).

        Checked here, in the loader thread, before the model can reach a tick: its sub-steps per period,
        then one evaluation on the current state, in a separate thread with a budget of two periods.
        """
        tic = time.perf_counter()
        reason = model_cost_problem(model, self.dt_s, self._state)
        if reason is None:
            self.get_logger().info(f"model step {1e3 * (time.perf_counter() - tic):.1f} ms")
        return reason

    def _on_path(self, msg: Path) -> None:
        """A new reference path: build a corridor track and a controller for it here; the tick swaps it in."""
        xy = np.array([[p.pose.position.x, p.pose.position.y] for p in msg.poses], dtype=np.float64)
        if len(xy) < 4 or not np.all(np.isfinite(xy)):
            self.get_logger().error(f"ignored path with {len(xy)} points (need >= 4 finite points)")
            return
        width = np.full(len(xy), self.cfg["path_half_width_m"])
        try:
            track = Track("path", xy, width, width, source="topic")
            controller = self._build_controller(track, self.controller.model or self.initial_model)
        except (ValueError, MbrlError) as exc:
            self.get_logger().error(f"ignored path: {exc}")
            return
        with self._lock:
            self._pending_controller = controller

    # ------------------------------------------------------------------ the control step
    def _on_tick(self, info: TimerInfo) -> None:
        tic = time.perf_counter()
        self._tick_started = tic
        try:
            self._tick(info, tic)
        finally:
            self._tick_started = None

    def _tick(self, info: TimerInfo, tic: float) -> None:
        clock = self.get_clock()
        now = clock.now()
        now_ns = now.nanoseconds
        late_ms = 0.0 if clock.ros_time_is_active or self._last_tick_ns is None else \
            max(0.0, (now_ns - info.expected_call_time.nanoseconds) * 1e-6)  # the first tick waits for the executor
        self._apply_pending(now_ns)
        elapsed_s = self.dt_s if self._last_tick_ns is None else (now_ns - self._last_tick_ns) * 1e-9
        self._last_tick_ns = now_ns
        steer = self._steering.advance(elapsed_s)
        odom, fresh = self._judge_odometry(info, now_ns)
        with self._odom_lock:  # the measurement time of this odometry (the sender's stamp), for the identification
            measured_ns = self._odom_stamp_ns if self._odom is odom and self._odom_stamp_ns is not None else now_ns
        guarded = False
        if fresh:
            state = odometry_to_state(*odom[0], steer, yaw_ref_rad=self._yaw_ref)
            self._yaw_ref = float(state[S.YAW])
            if self._stopped:
                self.controller.reset(state)
                self._stopped = False
            planned_from = self._interface.predict(state)  # where the car is when this command acts (dead time)
            u, guarded = guard_command(self._controller_step(planned_from), state, self.params, self.dt_s)
            self._stop_speed = float(state[S.V])
        else:
            state = self._state
            u = self._safe_stop(elapsed_s)
        if self._watchdog_fired:  # this tick overran: its command is late, the watchdog already stopped the car
            self._watchdog_fired = False
            fresh = False
            self._stopped = True  # the controller restarts from a reset at the next fresh odometry
            u = self._safe_stop(elapsed_s)
        self._publish(u, float(state[S.V]) if fresh else self._stop_speed, now,
                      steer_rad=float(planned_from[S.STEER]) if fresh else steer)
        publish_s = time.perf_counter()
        if fresh:
            self._identify_actuation(now_ns, measured_ns, state)
        self._steering.set_command(self._interface.steering_target_rad)  # the angle the wheels are sent to
        self._state, self._last_u = state, u
        step_ms = (publish_s - tic) * 1e3
        self.stats.record(now_ns * 1e-9, publish_s, step_ms, late_ms, state, u, len(self.models_used) - 1, not fresh, guarded)
        if self._params_applied_this_tick:
            self._params_applied_this_tick = False
            self.param_swap_step_max_ms = max(self.param_swap_step_max_ms, step_ms)
        if self._want_snapshot:
            self._snapshot()
        self._after_tick.set()

    def _identify_actuation(self, now_ns: int, measured_ns: int, state: np.ndarray) -> None:
        """Feed the online actuator identification (after the command is out) with this tick's state,
        measured at ``measured_ns`` (pairs not one period apart are left out); adopt what it found."""
        if self._actuator_id is None:
            return
        self._actuator_id.observe(now_ns * 1e-9, state, self._last_wire, measured_at_s=measured_ns * 1e-9)
        found = self._actuator_id.poll()
        if found:
            self._interface.adopt(found)
            self.get_logger().info("actuation identified: " + ", ".join(f"{k} {v:.4g}" for k, v in found.items()))

    def _controller_step(self, state: np.ndarray) -> np.ndarray:
        """The controller's command; an exception becomes NaN, which the guard turns into a safe stop."""
        try:
            return self.controller.step(state)
        except Exception as exc:  # the loop never dies on a controller fault
            self._faults += 1
            self.get_logger().error(f"controller raised {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
            return np.full(2, np.nan)

    def _safe_stop(self, elapsed_s: float) -> np.ndarray:
        """Stale odometry: brake from the last known speed, tracking the speed the brake has taken off.

        The speed estimate integrates our own previous stop command over the time it was applied,
        so the brake fades to zero at standstill instead of reversing the car.
        """
        if not self._stopped:
            self._stopped = True
            self.get_logger().warning("odometry stale: safe stop")
        else:
            before = self._stop_speed
            self._stop_speed += self._last_u[U.ACCEL] * elapsed_s
            if before * self._stop_speed <= 0.0 or abs(self._stop_speed) < 1e-3:
                self._stop_speed = 0.0
        probe = np.zeros(STATE_DIM)
        probe[S.V] = self._stop_speed
        return safe_stop_command(probe, self.params, self.dt_s)

    def _publish(self, u: np.ndarray, v_mps: float, now, speed_mps: float | None = None, steer_rad: float = 0.0) -> None:
        """Publish ``u`` in the driver's interface (:class:`CommandInterface`: the speed set-point that yields the
        planned acceleration, the steering angle a rate-limited servo must be sent), from speed ``v_mps`` and
        steering angle ``steer_rad``; ``speed_mps`` overrides the speed field (the final stop)."""
        probe = np.zeros(STATE_DIM)
        probe[S.V], probe[S.STEER] = v_mps, steer_rad
        wire = self._interface.wire_command(u, probe)
        if speed_mps is not None:
            wire[2] = speed_mps
        self._last_wire = wire
        sent = np.array(u, dtype=np.float64)
        sent[U.STEER_CMD], sent[U.ACCEL] = wire[0], wire[1]
        stamp = now.to_msg()
        if self.cfg["command_type"] == "ackermann":
            conv.fill_drive(self._cmd_msg, sent, float(wire[2]), stamp, self.cfg["frame_id"], limits=self.params)
        else:
            conv.fill_twist(self._cmd_msg, sent, float(wire[2]), self.params.wheelbase_m, stamp, self.cfg["frame_id"],
                            limits=self.params)
        self._cmd_pub.publish(self._cmd_msg)

    def _watch_ticks(self) -> None:
        """The tick watchdog, in its own thread: a tick running longer than ``odom_timeout_s`` gets a safe
        stop published for it (repeated every period while it stays blocked)."""
        last = 0.0
        while not self._watchdog_stop.wait(min(self.dt_s, 0.01)):
            started = self._tick_started
            if started is None:
                continue
            now = time.perf_counter()
            if now - started <= self.cfg["odom_timeout_s"] or now - last < self.dt_s:
                continue
            last = now
            try:
                probe = np.zeros(STATE_DIM)
                probe[S.V] = self._stop_speed if self._stopped else float(self._state[S.V])
                u = safe_stop_command(probe, self.params, self.dt_s)
                # hold the steering angle last sent (the car stays on the arc it was planned on; straight wheels
                # in a corner at racing speed leave the track) and brake at the safe-stop deceleration
                u[U.STEER_CMD] = float(self._last_wire[0])
                speed = self._interface.speed_field(float(probe[S.V]), float(u[U.ACCEL]))
                stamp = self.get_clock().now().to_msg()
                if self.cfg["command_type"] == "ackermann":
                    conv.fill_drive(self._watchdog_msg, u, speed, stamp, self.cfg["frame_id"], limits=self.params)
                else:
                    conv.fill_twist(self._watchdog_msg, u, speed, self.params.wheelbase_m, stamp, self.cfg["frame_id"],
                                    limits=self.params)
                self._cmd_pub.publish(self._watchdog_msg)
            except Exception as exc:  # noqa: BLE001 - e.g. the node is going away (publisher destroyed)
                if self._watchdog_stop.is_set():
                    return
                self.get_logger().error(f"watchdog could not publish: {exc}", throttle_duration_sec=1.0)
                continue
            if not self._watchdog_fired:
                self._watchdog_fired = True
                self.watchdog_stops += 1
                self.get_logger().error(f"control tick blocked for {1e3 * (now - started):.0f} ms: watchdog safe stop")

    def destroy_node(self) -> None:
        self._watchdog_stop.set()
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=1.0)
        super().destroy_node()

    def on_shutdown(self) -> None:
        """The last command before the node goes away: straight wheels, speed set-point 0, braking.

        Called by ``runtime.Spinner.stop`` after the executor stopped (no tick can follow it); waits
        briefly until reliable subscribers acknowledged it, so it is not lost with the publisher.
        """
        probe = np.zeros(STATE_DIM)
        probe[S.V] = self._stop_speed if self._stopped else float(self._state[S.V])
        u = safe_stop_command(probe, self.params, self.dt_s)
        self._publish(u, 0.0, self.get_clock().now(), speed_mps=0.0)
        self.final_stop_published = True
        try:
            self._cmd_pub.wait_for_all_acked(Duration(seconds=FINAL_STOP_ACK_S))
        except Exception:  # noqa: BLE001 - best effort: the command was published
            pass
        self.get_logger().info("final safe-stop command published")

    def _apply_pending(self, now_ns: int) -> None:
        """Swap in a model / controller prepared by the loader thread (a reference swap under the lock)."""
        if self._pending_model is None and self._pending_controller is None and self._pending_params is None:
            return
        with self._lock:
            pending_model, self._pending_model = self._pending_model, None
            pending_controller, self._pending_controller = self._pending_controller, None
            pending_params, self._pending_params = self._pending_params, None
        if pending_params is not None:
            self._apply_params(*pending_params)
        if pending_controller is not None:
            pending_controller.reset(self._state)
            self.controller = pending_controller
        if pending_model is not None:
            version, model = pending_model
            if self.controller.model is not None:
                try:
                    self.controller.set_model(model)
                    self.model_swaps += 1
                except Exception as exc:  # a controller that cannot take this model keeps its old one
                    self.get_logger().error(f"model v{version} not swapped: {exc}")
                    return
            self.model_version = version
            self.models_used.append((now_ns * 1e-9, version, model))

    def _apply_params(self, controller: Controller | None, options: dict[str, Any] | None, values: dict[str, Any]) -> None:
        """Take a checked parameter change in, between two steps: the new controller keeps the warm start."""
        if controller is not None:
            old = self.controller
            if controller.model is not None and old.model is not None and controller.model is not old.model:
                controller.set_model(old.model)  # a model swapped in since the change was checked
            for attr in ("U", "u_prev"):
                before, after = getattr(old, attr, None), getattr(controller, attr, None)
                if isinstance(before, np.ndarray) and isinstance(after, np.ndarray) and before.shape == after.shape:
                    after[...] = before
            self.controller = controller  # (while stopped, the tick resets it when odometry returns)
            self.options[self.cfg["controller"]] = options
        for key, value in values.items():
            if key in self.cfg:
                self.cfg[key] = value
        self.runtime_params.update(values)
        self.param_updates += 1
        self._params_applied_this_tick = True
        self.get_logger().info(f"parameters applied at step {self.stats.steps}: "
                               + ", ".join(f"{k}={v!r}" for k, v in values.items()))

    def _snapshot(self) -> None:
        """Copy the plan (and candidates) for the visualisation thread; after the publish, at most path_rate_hz."""
        self._want_snapshot = False
        plan = self.controller.planned_xy()
        self._plan_xy = None if plan is None else np.array(plan, dtype=np.float64)
        if self._cand_pub.get_subscription_count() > 0:
            self._candidates = candidate_snapshot(self.controller, self.cfg["candidates_max"])

    # ------------------------------------------------------------------ visualisation and diagnostics
    def _on_visualization(self) -> None:
        plan, candidates = self._plan_xy, self._candidates
        self._plan_xy, self._candidates = None, None
        self._want_snapshot = True
        stamp = self.get_clock().now().to_msg()
        frame = self.cfg["map_frame_id"]
        if plan is not None and len(plan) >= 2 and np.all(np.isfinite(plan)):
            self._path_pub.publish(conv.path_msg(plan, stamp, frame))
        if candidates is not None and self._cand_pub.get_subscription_count() > 0:
            xy = candidates()
            if xy is not None and np.all(np.isfinite(xy)):
                self._cand_pub.publish(conv.candidates_msg(xy, stamp, frame))

    def _on_diagnostics(self) -> None:
        window = self.stats.window()
        odom = self._odom
        age_s = math.inf if odom is None else (self.get_clock().now().nanoseconds - odom[1]) * 1e-9
        values: dict[str, Any] = {
            "controller": self.cfg["controller"], "rate_target_hz": self.cfg["rate_hz"],
            "rate_hz": window.rate_hz if window else 0.0, "step_p50_ms": window.step_p50_ms if window else 0.0,
            "step_p99_ms": window.step_p99_ms if window else 0.0, "step_max_ms": window.step_max_ms if window else 0.0,
            "tick_delay_p99_ms": window.late_p99_ms if window else 0.0, "deadline_misses": self.stats.deadline_misses,
            "late_commands": self.stats.late_commands,
            "steps": self.stats.steps, "stale_steps": self.stats.stale_steps, "guarded_steps": self.stats.guarded_steps,
            "controller_faults": self._faults, "rejected_odometry": self._rejected_odom, "odometry_age_s": age_s,
            "model_version": self.model_version, "model_swaps": self.model_swaps,
            "model_updates_rejected": self._model_gate.rejected, "watchdog_stops": self.watchdog_stops,
            "process_niceness": self.niceness,
            "model_update_last_rejection": self._model_gate.last_reason,
            "ensemble_spread": ensemble_spread(self.controller.model, self._state, self._last_u),
            "param_updates": self.param_updates, "param_rejections": self.param_rejections,
            "param_swap_step_max_ms": self.param_swap_step_max_ms,
            # stale odometry (docs/ros_interface.md): stops by the input, and stops the node's own lateness would have
            # caused (judged at the tick's start instead of its schedule; odometry waiting in the middleware)
            "stale_input_steps": self.stale_input_steps, "stale_avoided_tick_late": self.stale_avoided_tick_late,
            "stale_avoided_queued": self.stale_avoided_queued, "odometry_taken_in_ticks": self.odometry_taken_in_ticks,
            "tick_delay_max_ms": window.late_max_ms if window else 0.0, "tick_delay_run_max_ms": self.stats.late_max_ms,
            "odometry_refused_stamps": self._bad_stamps, "odometry_superseded": self.odometry_superseded,
            "odometry_stamp_lag_s": self._stamp_check.lag_s,
            "odometry_stamp_time_base": self._stamp_check.time_base,
            **{f"param {k}": v for k, v in self.runtime_params.items()},
            **{f"actuation {k}": v for k, v in self._interface.terms().items()},
        }
        verdict = self._verdict
        stale = age_s > self.cfg["odom_timeout_s"] if verdict is None else not verdict.fresh
        level = DiagnosticStatus.WARN if stale or (window and window.step_p99_ms > 1e3 * self.dt_s) else DiagnosticStatus.OK
        message = f"odometry stale: safe stop ({verdict.reason if verdict else 'no tick yet'})" if stale else "running"
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [conv.diagnostic_status(f"{self.get_name()}: control loop", self.get_fully_qualified_name(),
                                               level, message, values)]
        self._diag_pub.publish(array)


def _merge_pending(older, newer):
    """Two accepted changes not yet applied: the newer controller (built on the older options) and both values."""
    if older is None:
        return newer
    controller, options = (newer[0], newer[1]) if newer[0] is not None else (older[0], older[1])
    return controller, options, {**older[2], **newer[2]}


def _set_nested(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def _plain_value(value: Any) -> Any:
    """Array parameters arrive as array.array / numpy: options want lists."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    try:
        return [v.item() if hasattr(v, "item") else v for v in value]
    except TypeError:
        return value


def candidate_snapshot(controller: Controller, max_count: int) -> Callable[[], np.ndarray | None] | None:
    """A callable giving (K, T, 2) candidate trajectories of the last step, or None if there are none.

    Taken in the control thread right after a publish (cheap copies only); the callable does the
    work later, in the visualisation thread. A controller may offer ``candidate_xy(max_count)``;
    for MPPI's Numba backend the candidates are rebuilt from its last plan and sampled perturbations
    (``U + eps_k``, clipped), rolled out with the kernels' own serial rollout.
    """
    getter = getattr(controller, "candidate_xy", None)
    if getter is not None:
        xy = getter(max_count)
        return None if xy is None else (lambda: np.array(xy[:max_count], dtype=np.float64))
    return _mppi_candidates(controller, max_count)


def _mppi_candidates(controller, max_count: int) -> Callable[[], np.ndarray] | None:
    backend, plan = getattr(controller, "backend", None), getattr(controller, "_plan", None)
    eps = getattr(backend, "eps", None)
    if getattr(backend, "name", "") != "numba" or plan is None or eps is None:
        return None
    x0, plan_u = plan
    count = min(max_count, int(controller.config.samples))
    perturbations = np.array(eps[:, :, :count])  # (T, 2, K)
    solver = controller.solver

    def rollouts() -> np.ndarray:
        xy = np.zeros((count, len(plan_u), 2))
        for k in range(count):  # visualisation only: a few dozen serial rollouts, off the control thread
            controls = solver.clip(plan_u + perturbations[:, :, k]).astype(np.float32)
            xy[k] = solver.nominal_states(x0, controls)[:, [S.X, S.Y]]
        return xy

    return rollouts


def ensemble_spread(model, state: np.ndarray, control: np.ndarray) -> float:
    """Mean std of an ensemble model's velocity corrections at (state, control); NaN for other models."""
    spread = getattr(model, "ensemble_spread", None)
    if spread is None:
        return math.nan
    import torch

    dtype = next(model.buffers()).dtype
    with torch.no_grad():
        value = spread(torch.as_tensor(state, dtype=dtype), torch.as_tensor(control, dtype=dtype))
    return float(value.mean())


def _zero_residual_models(params, dt_s: float, like) -> list:
    """Semi-parametric models with a zero residual, on the physics of ``like`` first, then on every
    other physics of the same integration (they exercise the swap path in the warm-up)."""
    try:
        from mbrl_control.models.semiparametric import PHYSICS, physics_kind, physics_only
    except ImportError:
        return []
    physics = getattr(like, "physics", like)
    try:
        first = physics_kind(physics)
    except ValueError:
        return []
    substeps = int(getattr(physics, "substeps", 1))
    return [physics_only(params, dt_s, kind=kind, substeps=substeps) for kind in (first, *(k for k in PHYSICS if k != first))]


def main(args: list[str] | None = None) -> int:
    from mbrl_control.ros.runtime import run_node

    return run_node(NODE_NAME, lambda context: ControllerNode(context=context), args)


if __name__ == "__main__":
    raise SystemExit(main())
