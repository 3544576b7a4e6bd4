"""Starting and stopping rclpy: a context per run, a MultiThreadedExecutor spinning in a thread.

The teardown order matters with the wheels' rclpy: executor.shutdown, join the spin thread,
destroy the nodes, shut the context down. A spin thread still alive at interpreter exit aborts
the process ("terminate called without an active exception"), so :class:`Spinner` always joins.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable, Iterable

from mbrl_control import MbrlError
from mbrl_control.ros.env import ensure_ros_env

ensure_ros_env()

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import (ConditionReachedException, ExternalShutdownException,  # noqa: E402
                              MultiThreadedExecutor, ShutdownException, TimeoutException)
from rclpy.node import Node  # noqa: E402
from rclpy.task import Task  # noqa: E402

GIL_SWITCH_INTERVAL_S = 0.001
"""Hand the GIL over at least every millisecond, so the control loop never waits long for it."""
NO_FULL_COLLECTIONS = 1 << 30
"""Generation-2 threshold that is never reached."""
EXECUTOR_THREADS = 6
"""Enough workers that a slow callback (a model load) never leaves the control timer waiting for one."""


class ControlExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that does not busy-loop on callbacks queued in its thread pool.

    rclpy 9.1's executor yields every task that has not *started* yet on each wake-up; a task
    that sits in the pool's queue (its worker waiting for the GIL) is therefore re-submitted in
    a tight loop that holds the GIL and starves the workers (ros2/rclpy#1452, fixed upstream by
    #1547 after Kilted). Here a task already queued is not submitted again: the spin thread
    waits (GIL released) until a worker has picked it up.

    Callbacks of groups registered with :meth:`run_inline` (the control loop's) run directly in
    the spin thread, right after the wait returns: no hand-over to a pool thread, which on a
    loaded machine costs an extra OS wake-up between the timer firing and the control step.
    """

    QUEUED_WAIT_S = 0.005

    def __init__(self, num_threads: int, context: Context) -> None:
        super().__init__(num_threads=num_threads, context=context)
        self._started: dict[Task, threading.Event] = {}
        self._inline_groups: set[int] = set()

    def run_inline(self, group) -> None:
        """Run this callback group's callbacks in the spin thread (keep them short)."""
        self._inline_groups.add(id(group))

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, entity, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        if entity is not None and id(getattr(entity, "callback_group", None)) in self._inline_groups:
            handler()
            if handler.exception() is not None:
                raise handler.exception()
            return
        started = self._started.get(handler)
        if started is not None:
            started.wait(self.QUEUED_WAIT_S)
            return
        started = self._started[handler] = threading.Event()
        self._executor.submit(self._run, handler, started)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # re-raise a callback's exception in the spin thread

    def _run(self, handler: Task, started: threading.Event) -> None:
        started.set()
        try:
            handler()
        finally:
            self._started.pop(handler, None)


def quiet_garbage_collector() -> tuple[int, int, int]:
    """No full (generation 2) collections while the loop runs: they stop every thread for 0.1-0.5 s.

    Everything alive after start-up is collected once and frozen (never scanned again); young
    objects are still collected (generations 0 and 1, short). Cyclic garbage that lives long
    enough to reach generation 2 is only reclaimed at exit: the control loop creates none per step.
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], NO_FULL_COLLECTIONS)
    return before


def restore_garbage_collector(threshold: tuple[int, int, int]) -> None:
    """Undo :func:`quiet_garbage_collector` (the frozen objects become collectable again)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)


def init_context(args: list[str] | None = None, domain_id: int | None = None) -> Context:
    """A fresh, initialised rclpy context (its own DDS participant; ``domain_id`` None = ROS_DOMAIN_ID)."""
    ensure_ros_env(domain_id)
    context = Context()
    rclpy.init(args=args, context=context, domain_id=domain_id)
    return context


class Spinner:
    """Spins nodes on one MultiThreadedExecutor in a background thread; ``stop`` tears everything down."""

    def __init__(self, context: Context, nodes: Iterable[Node] = (), num_threads: int = EXECUTOR_THREADS) -> None:
        self.context = context
        self.executor = ControlExecutor(num_threads=num_threads, context=context)
        self.nodes: list[Node] = []
        self._thread: threading.Thread | None = None
        self._gc_threshold: tuple[int, int, int] | None = None
        for node in nodes:
            self.add(node)

    def add(self, node: Node) -> Node:
        """Spin ``node``; its ``realtime_callback_groups`` (if any) run in the spin thread."""
        self.nodes.append(node)
        for group in getattr(node, "realtime_callback_groups", ()):
            self.executor.run_inline(group)
        self.executor.add_node(node)
        return node

    def start(self) -> "Spinner":
        """Spin in a background thread, with GIL hand-over and garbage collection set up for a control loop."""
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._gc_threshold = quiet_garbage_collector()
        self._thread = threading.Thread(target=self._spin, name="rclpy-executor", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        """Spin until shutdown; a callback that raises is reported and spinning goes on."""
        while self.context.ok():
            try:
                self.executor.spin()
                return
            except ExternalShutdownException:
                return
            except Exception:  # noqa: BLE001 - one faulty callback must not stop every node
                if not self.context.ok():
                    return
                print("rclpy-executor: a callback raised:\n" + traceback.format_exc(), file=sys.stderr)

    def stop(self, shutdown_context: bool = True) -> None:
        """executor.shutdown -> join -> each node's ``on_shutdown()`` -> destroy nodes -> context shutdown."""
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        for node in reversed(self.nodes):
            hook = getattr(node, "on_shutdown", None)
            if hook is not None and self.context.ok():
                try:
                    hook()  # e.g. controller_node's final safe-stop command; no executor spins any more
                except Exception as exc:  # noqa: BLE001 - the teardown goes on
                    print(f"{node.get_name()}: on_shutdown failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes.clear()
        if self._gc_threshold is not None:
            restore_garbage_collector(self._gc_threshold)
            self._gc_threshold = None
        if shutdown_context and self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "Spinner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


TEARDOWN_TIMEOUT_S = 4.5
"""A node program that has not finished its teardown this long after the stop request exits anyway
(with code 1 and one line): ros2 launch escalates to SIGTERM after 5 s, then to SIGKILL."""


class ShutdownRequest:
    """SIGINT / SIGTERM handler of a node program: the first signal asks for a clean stop, later ones are no-ops.

    A terminal Ctrl-C reaches every node twice (the signal to the process group, and ros2 launch
    forwarding it), and a user may press it again or send SIGTERM: none of those may interrupt the
    teardown (an exception raised inside ``destroy_node`` or a thread join is what printed tracebacks
    and exit code -2 before). While the node is still being built (``interruptible``), the first
    signal raises KeyboardInterrupt once, so a slow start-up (JIT warm-up) can still be cut short.
    ``notice``: a line printed once for a signal that arrives after that (the demo: "still writing").
    """

    def __init__(self, notice: str | None = None) -> None:
        self.event = threading.Event()
        self.signals: list[int] = []
        self.interruptible = True
        self.notice = notice
        self.previous: dict[int, object] = {}

    def __call__(self, signum, frame) -> None:
        self.signals.append(signum)
        self.event.set()
        if self.interruptible:
            self.interruptible = False
            raise KeyboardInterrupt
        if self.notice is not None:
            print(self.notice, file=sys.stderr, flush=True)
            self.notice = None

    def install(self) -> "ShutdownRequest":
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def uninstall(self, ignore_after: bool = False) -> None:
        """The handlers from before :meth:`install`, or SIG_IGN (``ignore_after``: a program about to exit;
        SIG_IGN survives the interpreter's exit, a Python handler does not)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore_after else handler)


def run_node(name: str, make_node: Callable[[Context], Node], args: list[str] | None = None) -> int:
    """Entry point of a console script: init, build the node, spin until SIGINT / SIGTERM, clean teardown.

    A configuration error (:class:`MbrlError`) is printed as one line and gives exit code 2. Any
    number of SIGINTs and SIGTERMs end the program with exit code 0 after one orderly teardown
    (executor stopped, each node's ``on_shutdown`` hook, e.g. the controller's final safe-stop
    command, nodes destroyed, context shut down); see :class:`ShutdownRequest`.
    Run as a program (``args`` None: ``sys.argv``), the process ends with ``os._exit`` right after
    the teardown: every node and the context are released by then, and the native libraries'
    exit-time destructors aborted about one run in 20 on a loaded machine ("terminate called
    without an active exception", after the last Python frame).
    """
    program = args is None
    try:
        code = _run_node(name, make_node, list(sys.argv if program else args), watchdog=program)
    except KeyboardInterrupt:  # a signal in the instant between start-up and its handler's switch (torn down already)
        code = 0
    if program:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_node(name: str, make_node: Callable[[Context], Node], args: list[str], watchdog: bool = False) -> int:
    request = ShutdownRequest()
    previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        request.install()  # before rclpy.init: a Ctrl-C while DDS starts up ends cleanly too
    context = None
    spinner = None
    try:
        try:
            context = init_context(args=args)
            spinner = Spinner(context)
            spinner.add(make_node(context))
        except MbrlError as exc:
            request.interruptible = False
            message = str(exc)
            message = message[len(name) + 2:] if message.startswith(f"{name}: ") else message
            print(f"{name}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # a signal while the node was still starting up
            return 0
        request.interruptible = False
        if request.event.is_set():
            return 0
        spinner.start()
        while not request.event.wait(timeout=0.5):
            if not context.ok() or spinner._thread is None or not spinner._thread.is_alive():
                break
        return 0
    finally:
        request.interruptible = False
        if watchdog and request.event.is_set():
            _exit_after(TEARDOWN_TIMEOUT_S, f"{name}: teardown did not finish within {TEARDOWN_TIMEOUT_S:g} s; exiting")
        if spinner is not None:
            spinner.stop()
        elif context is not None and context.ok():
            rclpy.shutdown(context=context)
        if in_main_thread and not watchdog:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])


def _exit_after(seconds: float, message: str) -> None:
    """A daemon thread that ends the process (code 1, one line on stderr) if it is still alive after ``seconds``."""

    def expire() -> None:
        time.sleep(seconds)
        print(message, file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=expire, name="teardown-watchdog", daemon=True).start()
