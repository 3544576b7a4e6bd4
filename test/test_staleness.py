"""The stale-odometry decision of controller_node as pure functions (mbrl_control/ros/staleness.py).

No ROS, no clocks: every time is an integer of nanoseconds on the node clock. The ROS side (the node
stops when odometry stops, takes odometry waiting in the middleware) is in test_ros_controller.py.
"""

from __future__ import annotations

import math

import pytest

from mbrl_control.ros.staleness import MAX_STAMP_STEP_S, NS, OTHER_TIME_BASE_S, check_stamp, gate_time_ns, judge, rejudge

MS = 1_000_000
T = 1_000 * NS  # some node-clock time
TIMEOUT_S = 0.1
TOL_S = 0.5


def test_fresh_when_received_within_the_timeout_of_an_on_time_tick():
    v = judge(T, T, TIMEOUT_S, T - 60 * MS)
    assert v.fresh and v.reason is None and not v.node_late and not v.queued
    assert v.age_s == pytest.approx(0.060) and v.credit_s == 0.0


def test_stale_when_nothing_was_received_within_the_timeout_of_an_on_time_tick():
    v = judge(T, T, TIMEOUT_S, T - 101 * MS)
    assert not v.fresh and "no odometry for" in v.reason


def test_the_timeout_itself_is_still_fresh():
    assert judge(T, T, TIMEOUT_S, T - 100 * MS).fresh
    assert not judge(T, T, TIMEOUT_S, T - 100 * MS - 1).fresh


def test_never_received_is_stale():
    v = judge(T, T + 5 * MS, TIMEOUT_S, None)
    assert not v.fresh and v.reason == "no odometry yet" and math.isinf(v.age_s)


def test_a_late_tick_is_judged_at_its_scheduled_time():
    # due at T, started 50 ms late; the last message came 80 ms before the schedule: 130 ms at the start
    v = judge(T, T + 50 * MS, TIMEOUT_S, T - 80 * MS)
    assert v.fresh and v.node_late  # the earlier rule (age at the start) would have stopped: the node's lateness
    assert v.age_s == pytest.approx(0.080) and v.age_at_start_s == pytest.approx(0.130)
    assert v.credit_s == pytest.approx(0.050)


def test_a_late_tick_still_stops_when_the_input_is_stale_at_the_schedule():
    v = judge(T, T + 50 * MS, TIMEOUT_S, T - 120 * MS)
    assert not v.fresh and not v.node_late


def test_the_lateness_credit_is_at_most_one_timeout():
    # a schedule far in the past (a clock jump, a bogus expected time) cannot hide a stop for long:
    # started 10 s after its schedule, the receipt 150 ms before the start is judged at start - timeout
    v = judge(T, T + 10 * NS, TIMEOUT_S, T + 10 * NS - 150 * MS)
    assert v.fresh and v.credit_s == pytest.approx(TIMEOUT_S) and v.age_s == pytest.approx(0.050)
    v = judge(T, T + 10 * NS, TIMEOUT_S, T + 10 * NS - 201 * MS)
    assert not v.fresh


def test_a_tick_that_started_before_its_schedule_gets_no_credit():
    v = judge(T + 5 * MS, T, TIMEOUT_S, T - 101 * MS)
    assert not v.fresh and v.credit_s == 0.0


def test_a_receipt_after_the_scheduled_time_is_fresh():
    # taken between the schedule and the late start (or by the tick itself): negative age
    v = judge(T, T + 30 * MS, TIMEOUT_S, T + 20 * MS)
    assert v.fresh and v.age_s < 0


def test_a_receipt_far_after_the_tick_means_the_clock_went_back_and_is_stale():
    # a simulator restarted: the node clock is back at an earlier time than the last receipt;
    # "fresh" until the clock caught up again would be fresh for as long as the jump
    v = judge(T, T, TIMEOUT_S, T + 5 * NS)
    assert not v.fresh and "clock went back" in v.reason


def test_odometry_that_stops_is_stale_within_one_period_of_the_timeout_even_on_late_ticks():
    """The safe stop still comes: ticks every 20 ms, each started 0-60 ms late; the last receipt at 0."""
    period_ns, last_rx = 20 * MS, 0
    lateness = [(k * 37) % 61 for k in range(40)]  # a spread of starts up to 60 ms late
    first_stale = None
    for k in range(1, 40):
        scheduled = k * period_ns
        v = judge(scheduled, scheduled + lateness[k] * MS, TIMEOUT_S, last_rx)
        if not v.fresh:
            first_stale = k
            break
    assert first_stale is not None
    assert first_stale * period_ns - last_rx > TIMEOUT_S * NS  # the first stop is the first tick due past the timeout
    assert (first_stale - 1) * period_ns - last_rx <= TIMEOUT_S * NS
    for k in range(first_stale, 40):  # and every tick after it stays stopped
        scheduled = k * period_ns
        assert not judge(scheduled, scheduled + lateness[k] * MS, TIMEOUT_S, last_rx).fresh


def test_rejudge_marks_a_tick_rescued_by_odometry_taken_from_the_middleware():
    before = judge(T, T + 10 * MS, TIMEOUT_S, T - 150 * MS)
    assert not before.fresh
    after = rejudge(before, T, T + 10 * MS, TIMEOUT_S, T + 11 * MS)
    assert after.fresh and after.queued and after.node_late
    assert after.age_at_start_s == pytest.approx(before.age_at_start_s)


def test_rejudge_stays_stale_when_nothing_usable_was_taken():
    before = judge(T, T, TIMEOUT_S, T - 150 * MS)
    after = rejudge(before, T, T, TIMEOUT_S, T - 150 * MS)
    assert not after.fresh and not after.queued
    assert not rejudge(judge(T, T, TIMEOUT_S, None), T, T, TIMEOUT_S, None).fresh


def test_rejudge_of_a_fresh_verdict_is_not_queued():
    before = judge(T, T, TIMEOUT_S, T - 10 * MS)
    assert not rejudge(before, T, T, TIMEOUT_S, T).queued


# ------------------------------------------------------------------ header stamps
def test_a_stamp_on_the_node_clock_a_little_behind_its_receipt_is_used():
    c = check_stamp(T - 30 * MS, T, (T - 40 * MS, T - 10 * MS), TIMEOUT_S, TOL_S)
    assert c.ok and c.time_base == "node" and c.lag_s == pytest.approx(0.030)


def test_an_unstamped_message_is_judged_by_its_receive_time_alone():
    c = check_stamp(0, T, (0, T - 10 * MS), TIMEOUT_S, TOL_S)  # also a "repeat" of the previous zero stamp
    assert c.ok and c.time_base == "none" and math.isnan(c.lag_s)


def test_a_repeated_stamp_is_a_resend_not_a_sign_of_life():
    c = check_stamp(T - 50 * MS, T, (T - 50 * MS, T - 10 * MS), TIMEOUT_S, TOL_S)
    assert not c.ok and "repeats" in c.reason and not c.superseded
    # also on another time base (a sender stuck re-sending its last message), and long after the first copy
    assert not check_stamp(7 * NS, T, (7 * NS, T - 10 * MS), TIMEOUT_S, TOL_S).ok
    assert not check_stamp(7 * NS, T, (7 * NS, T - 10 * NS), TIMEOUT_S, TOL_S).ok


def test_an_older_stamp_while_the_newest_is_fresh_is_superseded():
    # a backlog delivered out of order by the callback thread and a tick taking messages: dropped quietly
    c = check_stamp(T - 20 * MS, T, (T - 10 * MS, T - 1 * MS), TIMEOUT_S, TOL_S)
    assert not c.ok and c.superseded


def test_an_older_stamp_once_the_newest_is_stale_is_a_restarted_sender():
    # a simulator started again from time 0: after one timeout without newer stamps its messages are used
    wall = 1_700_000_000 * NS  # the node on the wall clock, the simulator's stamps from 0 (the demo)
    c = check_stamp(5 * NS, wall, (900 * NS, wall - 101 * MS), TIMEOUT_S, TOL_S)
    assert c.ok and not c.superseded and c.time_base == "other"
    assert check_stamp(5 * NS, wall, (900 * NS, wall - 99 * MS), TIMEOUT_S, TOL_S).superseded  # not yet


@pytest.mark.parametrize("ahead_s, ok", [(0.0, True), (0.2, True), (TOL_S, True), (TOL_S + 0.01, False), (30.0, False),
                                         (OTHER_TIME_BASE_S - 1.0, False)])
def test_a_stamp_ahead_of_the_node_clock_is_refused_beyond_the_tolerance(ahead_s, ok):
    c = check_stamp(T + int(ahead_s * NS), T, None, TIMEOUT_S, TOL_S)
    assert c.ok == ok
    if not ok:
        assert "ahead of the node clock" in c.reason and c.time_base == "node"


@pytest.mark.parametrize("behind_s, ok", [(0.05, True), (TIMEOUT_S + TOL_S, True), (TIMEOUT_S + TOL_S + 0.01, False),
                                          (120.0, False), (OTHER_TIME_BASE_S - 1.0, False)])
def test_a_stamp_behind_by_more_than_timeout_plus_tolerance_is_old_data(behind_s, ok):
    c = check_stamp(T - int(behind_s * NS), T, None, TIMEOUT_S, TOL_S)
    assert c.ok == ok
    if not ok:
        assert "behind the node clock" in c.reason


@pytest.mark.parametrize("offset_s", [-1.7e9, -(OTHER_TIME_BASE_S + 1.0), OTHER_TIME_BASE_S + 1.0, 5e9])
def test_a_stamp_on_another_time_base_is_not_compared_with_the_node_clock(offset_s):
    """Simulated time from 0 against the wall clock (the demo), or the other way round: only receipts count."""
    receive = 1_700_000_000 * NS if offset_s < 0 else 100 * NS
    stamp = receive + int(offset_s * NS)
    if stamp <= 0:
        stamp = 12 * NS  # the simulator's time
    c = check_stamp(stamp, receive, None, TIMEOUT_S, TOL_S)
    assert c.ok and c.time_base == "other"


def test_a_stamp_on_another_time_base_never_keeps_the_input_fresh():
    """The stamp does not enter the verdict: a far-future stamp received once is stale a timeout later."""
    receive = T
    assert check_stamp(T + 10_000 * NS, receive, None, TIMEOUT_S, TOL_S).ok
    assert not judge(T + 101 * MS, T + 101 * MS, TIMEOUT_S, receive).fresh


def test_the_gate_time_follows_stamps_through_a_burst():
    """A backlog of messages 10 ms apart at the sender, delivered 0.1 ms apart: the gate sees 10 ms steps."""
    previous = (T, 100 * NS)  # (gate time, stamp) of the last accepted message
    t1 = gate_time_ns(T + 100_000, 100 * NS + 10 * MS, previous)
    assert t1 == T + 10 * MS
    t2 = gate_time_ns(T + 200_000, 100 * NS + 20 * MS, (t1, 100 * NS + 10 * MS))
    assert t2 == T + 20 * MS


def test_the_gate_time_is_never_less_than_the_receive_time():
    previous = (T, 100 * NS)
    assert gate_time_ns(T + 300 * MS, 100 * NS + 10 * MS, previous) == T + 300 * MS  # a stall of the node
    assert gate_time_ns(T + 5 * MS, 100 * NS - 1 * NS, previous) == T + 5 * MS  # stamps going back count as 0
    assert gate_time_ns(T + 5 * MS, 0, previous) == T + 5 * MS  # no stamp: receive time
    assert gate_time_ns(T + 5 * MS, 100 * NS, None) == T + 5 * MS
    # a stamp leaping ahead buys at most MAX_STAMP_STEP_S of travel for the gate
    assert gate_time_ns(T + 5 * MS, 100 * NS + 50 * NS, previous) == T + int(MAX_STAMP_STEP_S * NS)


def test_under_sim_time_a_stamp_ahead_of_the_node_clock_is_the_node_lagging_and_used():
    """The node clock is /clock as far as the node processed it: a starved node's clock lags the simulator."""
    assert check_stamp(T + 3 * NS, T, None, TIMEOUT_S, TOL_S, sim_time=True).ok
    assert not check_stamp(T + 3 * NS, T, None, TIMEOUT_S, TOL_S, sim_time=False).ok
    c = check_stamp(T - 2 * NS, T, None, TIMEOUT_S, TOL_S, sim_time=True)  # behind: still old data
    assert not c.ok and "behind" in c.reason


def test_zero_tolerance_refuses_any_stamp_ahead_of_the_clock():
    assert check_stamp(T, T, None, TIMEOUT_S, 0.0).ok
    assert not check_stamp(T + 1, T, None, TIMEOUT_S, 0.0).ok
    assert not check_stamp(T - int(TIMEOUT_S * NS) - 1, T, None, TIMEOUT_S, 0.0).ok
