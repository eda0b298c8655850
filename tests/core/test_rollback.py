"""The canary rollback rule and its sliding window, as tables."""

from __future__ import annotations

import pytest

from lb.core.rollback import ArmWindow, RollbackMonitor, should_roll_back, stable_arm


@pytest.mark.parametrize(
    ("arms", "stable"),
    [
        ([("v1", 95), ("v2", 5)], "v1"),
        ([("v2", 5), ("v1", 95)], "v1"),
        ([("a", 50), ("b", 50)], "a"),  # the first of equals
        ([("a", 0), ("b", 1), ("c", 1)], "b"),
    ],
)
def test_stable_arm_is_the_largest_configured_weight(arms, stable):
    assert stable_arm(arms) == stable


@pytest.mark.parametrize(
    ("canary", "stable", "threshold", "min_requests", "expected"),
    [
        ((200, 100), (2000, 0), 0.05, 200, True),  # 50% against 0%
        ((199, 100), (2000, 0), 0.05, 200, False),  # not enough requests yet
        ((200, 100), (2000, 1000), 0.05, 200, False),  # matches the stable arm's rate
        ((200, 20), (2000, 100), 0.05, 200, False),  # 10% - 5% = 5 points: not more than
        ((200, 21), (2000, 100), 0.05, 200, True),  # 10.5% - 5% > 5 points
        ((200, 20), (0, 0), 0.05, 200, True),  # no stable traffic: compared with 0%
        ((200, 0), (2000, 0), 0.0, 200, False),  # no errors never rolls back
        ((1, 1), (0, 0), 0.05, 0, True),  # min_requests 0 behaves as 1
    ],
)
def test_rule(canary, stable, threshold, min_requests, expected):
    assert should_roll_back(*canary, *stable, threshold, min_requests) is expected


def test_window_forgets_old_buckets():
    w = ArmWindow(60.0)
    for t in range(0, 30):
        w.record(t % 2 == 0, float(t))
    assert (w.requests, w.errors) == (30, 15)
    w.advance(65.0)  # buckets of 0-6s and 6-12s... only those older than 60s are gone
    assert w.requests == 24
    w.advance(200.0)
    assert (w.requests, w.errors) == (0, 0)
    w.record(True, 200.5)
    assert (w.requests, w.errors) == (1, 1)


def _monitor(min_requests=20):
    return RollbackMonitor([("stable", 90), ("canary", 10)], 0.05, min_requests, 60.0)


def test_canary_answering_half_5xx_rolls_back_once():
    m = _monitor()
    triggered = []
    for i in range(100):
        m.record("stable", 200, i * 0.1)
        if m.record("canary", 500 if i % 2 else 200, i * 0.1):
            triggered.append(i)
    assert len(triggered) == 1 and triggered[0] >= 19
    assert m.rolled_back == {"canary"}
    assert m.rearm() == ["canary"]
    assert m.rolled_back == set()
    assert m.windows["canary"].requests == 0  # counted afresh after a re-arm


def test_canary_matching_the_stable_error_rate_stays():
    m = _monitor()
    for i in range(400):
        status = 500 if i % 2 else 200
        assert not m.record("stable", status, i * 0.1)
        assert not m.record("canary", status, i * 0.1)
    assert m.rolled_back == set()


def test_stable_arm_and_unknown_arms_never_roll_back():
    m = _monitor(min_requests=1)
    assert not m.record("stable", 500, 0.0)
    assert not m.record("gone", 500, 0.0)
    assert m.rolled_back == set()


def test_old_errors_age_out_of_the_window():
    m = _monitor(min_requests=10)
    for i in range(9):
        m.record("canary", 500, float(i))  # 9 errors, not enough requests
    for i in range(10):
        assert not m.record("canary", 200, 100.0 + i)  # the errors are 90+ seconds old


def test_needs_two_arms():
    with pytest.raises(ValueError):
        RollbackMonitor([("only", 1)], 0.05, 10, 60.0)
