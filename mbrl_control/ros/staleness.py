"""Is the odometry stale? controller_node's decision as pure functions (no rclpy, unit-tested alone).

Two times per odometry message, both documented in docs/ros_interface.md ("Stale odometry"):

- the **receive time**: the node clock (sim time under ``use_sim_time``, else the wall clock) when
  the node took the message (the subscription callback, or a tick that took it, see below);
- the **header stamp**: when the sender says the data is from, on *its* clock.

The receive time decides: a stamp is never later than the receipt of its message on a clock both
share, so it can never show the input fresher than the receive time does, and on clocks they do not
share (another machine without NTP/PTP, a simulator's time from 0 against the wall clock as in
``mbrl-control demo``) it can show anything. The stamp is used for what only it can tell
(:func:`check_stamp`): a message that repeats the newest stamp is a re-send, not a sign of life, and a
stamp on the node's time base that is further behind its receipt than ``timeout + tolerance``, or
ahead of it by more than ``tolerance``, is old data or a clock fault: the message is refused, so such
input ends in the safe stop like no input. A stamp more than :data:`OTHER_TIME_BASE_S` away from the
node clock is on another time base: it is not trusted for anything but the repeat check.

The node's own delays are kept out of the decision (:func:`judge`, :func:`gate_time_ns`):

- **tick lateness**: the age of the newest receipt is taken at the tick's *scheduled* time, not when
  the starved tick finally ran (credited up to one timeout, so a bogus schedule after a clock jump
  cannot hide a real stop for more than one more timeout);
- **executor backlog**: before a tick commands the stop, the node takes the odometry that reached the
  middleware but not yet its callback (the executor hands the timer out before a subscription that
  became ready at the same time), and judges again (``queued`` in :class:`Verdict`);
- **bursts**: a backlog delivered microseconds apart is not a position jump (:func:`gate_time_ns`), and
  an older message delivered after a newer one is dropped, not taken as a jump back (``superseded``).
"""

from __future__ import annotations

from dataclasses import dataclass

NS = 1_000_000_000
OTHER_TIME_BASE_S = 3600.0
"""A header stamp further than this from the node clock is on another time base (simulated time from 0
against the wall clock, the demo's case): it is not compared with the node clock."""


MAX_STAMP_STEP_S = 1.0
"""At most this much of the stamp difference between two messages counts in :func:`gate_time_ns`."""


@dataclass(frozen=True)
class StampCheck:
    """What the header stamp of one message says; ``reason`` is None when the message may be used."""

    reason: str | None
    time_base: str  # "node": the stamp is on the node's clock; "other": another time base; "none": no stamp (0)
    lag_s: float  # receive time - stamp (transport, queueing and clock offset); nan without a stamp
    superseded: bool = False  # older than the newest message, which came within the timeout: dropped quietly

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_stamp(stamp_ns: int, receive_ns: int, newest: tuple[int, int] | None, timeout_s: float,
                tolerance_s: float, sim_time: bool = False) -> StampCheck:
    """Check the header stamp of a message received at ``receive_ns`` (node clock).

    ``newest`` is (stamp, receive time) of the newest message used so far (None: none yet). Refused: a
    stamp equal to its stamp (a re-send of the same data), and, for a stamp on the node's time base, one
    more than ``timeout_s + tolerance_s`` behind the receive time (it was already stale when it came) or
    more than ``tolerance_s`` ahead of it (impossible on a shared clock: the sender's clock is off).
    ``superseded``: a stamp older than the newest while that one is still fresh (two threads of the node
    delivered a backlog out of order); an older stamp once the newest is ``timeout_s`` old is a sender
    that started again (a restarted simulator) and is used. A stamp of 0 (a sender that does not stamp)
    is not checked: the receive time alone decides. ``sim_time``: the node clock is ``/clock`` as far as
    the node has processed it, which lags the simulator whenever the node is starved: a stamp ahead of it
    is the node's own delay, not the sender's, and is not refused.
    """
    if stamp_ns == 0:
        return StampCheck(None, "none", float("nan"))
    lag_s = (receive_ns - stamp_ns) / NS
    if newest is not None and newest[0] != 0:
        if stamp_ns == newest[0]:
            return StampCheck("the stamp repeats the newest one (a re-sent message)", _base(lag_s), lag_s)
        if stamp_ns < newest[0] and receive_ns - newest[1] <= timeout_s * NS:
            return StampCheck("older than the newest odometry (delivered out of order)", _base(lag_s), lag_s,
                              superseded=True)
    if abs(lag_s) > OTHER_TIME_BASE_S:
        return StampCheck(None, "other", lag_s)
    if lag_s > timeout_s + tolerance_s:
        return StampCheck(f"the stamp is {lag_s:.3g} s behind the node clock at receipt (old data, or the sender's "
                          f"clock is behind: more than odom_timeout_s + odom_stamp_tolerance_s = "
                          f"{timeout_s + tolerance_s:.3g} s)", "node", lag_s)
    if -lag_s > tolerance_s and not sim_time:
        return StampCheck(f"the stamp is {-lag_s:.3g} s ahead of the node clock at receipt (the sender's clock is "
                          f"ahead by more than odom_stamp_tolerance_s = {tolerance_s:.3g} s)", "node", lag_s)
    return StampCheck(None, "node", lag_s)


def _base(lag_s: float) -> str:
    return "other" if abs(lag_s) > OTHER_TIME_BASE_S else "node"


def gate_time_ns(receive_ns: int, stamp_ns: int, previous: tuple[int, int] | None) -> int:
    """The time the odometry plausibility gate (``conversions.OdometryGate``) gets for a message.

    The gate bounds how far the car can have moved since the last accepted message by the time between
    them. Measured by receipts alone, a backlog that the node delivers in a burst after a stall (messages
    10 ms apart at the sender, microseconds apart here) looks like a jump and is refused. So the gate time
    is the receive time, but never less than the previous accepted message's gate time plus the stamp
    difference (at most :data:`MAX_STAMP_STEP_S`; stamps going back count as 0). ``previous``: (gate
    time, stamp) of the last accepted message; without stamps (0) the receive time alone.
    """
    if previous is None or stamp_ns == 0 or previous[1] == 0:
        return receive_ns
    step = min(max(stamp_ns - previous[1], 0), int(MAX_STAMP_STEP_S * NS))
    return max(receive_ns, previous[0] + step)


@dataclass(frozen=True)
class Verdict:
    """The decision of one tick.

    ``fresh``: the controller may step on the odometry; else the safe stop. ``reason``: why stale (None
    when fresh). ``age_s``: age of the newest receipt at the (credited) scheduled time.
    ``age_at_start_s``: age at the tick's actual start (the rule before issue 14). ``node_late``: fresh,
    but stale by that earlier rule: the node's own lateness, not the input's. ``queued``: fresh only
    thanks to odometry taken from the middleware by this tick (set by the caller, see :func:`rejudge`).
    """

    fresh: bool
    reason: str | None
    age_s: float
    age_at_start_s: float
    credit_s: float
    node_late: bool = False
    queued: bool = False


def judge(scheduled_ns: int, started_ns: int, timeout_s: float, receive_ns: int | None) -> Verdict:
    """Fresh or stale, for a tick due at ``scheduled_ns`` that started at ``started_ns`` (node clock).

    ``receive_ns`` is the receive time of the newest usable odometry (None: none yet). Stale when it is
    older than ``timeout_s`` at the scheduled time; the tick's lateness (start - schedule) is credited
    up to ``timeout_s``. A receive time more than ``timeout_s`` after the tick's start means the node
    clock went back (a simulator restarted): stale, since the age cannot be known.
    """
    credit_ns = min(max(0, started_ns - scheduled_ns), int(timeout_s * NS))
    if receive_ns is None:
        return Verdict(False, "no odometry yet", float("inf"), float("inf"), credit_ns / NS)
    age_ns = started_ns - credit_ns - receive_ns
    age_at_start_s = (started_ns - receive_ns) / NS
    if receive_ns - started_ns > timeout_s * NS:
        return Verdict(False, "the node clock went back past the last receipt", age_ns / NS, age_at_start_s, credit_ns / NS)
    if age_ns > timeout_s * NS:
        return Verdict(False, f"no odometry for {age_ns / NS:.3g} s (odom_timeout_s {timeout_s:.3g} s)", age_ns / NS,
                       age_at_start_s, credit_ns / NS)
    return Verdict(True, None, age_ns / NS, age_at_start_s, credit_ns / NS, node_late=age_at_start_s > timeout_s)


def rejudge(before: Verdict, scheduled_ns: int, started_ns: int, timeout_s: float, receive_ns: int | None) -> Verdict:
    """The verdict again after the tick took odometry that was waiting in the middleware.

    A tick that is fresh now, but was stale on what its callback had delivered, was held up by the
    node's executor (``queued``); ``age_at_start_s`` stays the one of the earlier rule (before taking).
    """
    after = judge(scheduled_ns, started_ns, timeout_s, receive_ns)
    if not after.fresh or before.fresh:
        return after
    return Verdict(True, None, after.age_s, before.age_at_start_s, after.credit_s,
                   node_late=before.age_at_start_s > timeout_s, queued=True)
