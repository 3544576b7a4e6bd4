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
        """executor.shutdown -> join -> destroy nodes -> context shutdown (each step at most once)."""
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
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


def run_node(name: str, make_node: Callable[[Context], Node], args: list[str] | None = None) -> int:
    """Entry point of a console script: init, build the node, spin until Ctrl-C, clean teardown.

    A configuration error (:class:`MbrlError`) is printed as one line and gives exit code 2.
    Run as a program (``args`` None: ``sys.argv``), the process ends with ``os._exit`` right after
    the teardown: every node and the context are released by then, and the native libraries'
    exit-time destructors aborted about one run in 20 on a loaded machine ("terminate called
    without an active exception", after the last Python frame).
    """
    code = _run_node(name, make_node, list(sys.argv if args is None else args))
    if args is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_node(name: str, make_node: Callable[[Context], Node], args: list[str]) -> int:
    context = init_context(args=args)
    spinner = Spinner(context)
    try:
        spinner.add(make_node(context))
    except MbrlError as exc:
        message = str(exc)
        message = message[len(name) + 2:] if message.startswith(f"{name}: ") else message
        print(f"{name}: error: {message}", file=sys.stderr)
        spinner.stop()
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the node was still starting up
        spinner.stop()
        return 0
    spinner.start()
    # Ctrl-C / launch's SIGINT, then SIGTERM: a clean teardown (also when a shell started us with SIGINT ignored)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while context.ok() and spinner._thread is not None and spinner._thread.is_alive():
            spinner._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        spinner.stop()
    return 0


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
