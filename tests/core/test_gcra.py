"""GCRA as a table: what a client sees from a key's successive requests."""

from __future__ import annotations

import math

import pytest

from lb.core.gcra import RateDecision, gcra


def run(rate: float, burst: int, times: list[float], cost: int = 1) -> list[RateDecision]:
    tat: float | None = None
    out = []
    for now in times:
        tat, decision = gcra(tat, now, rate, burst, cost)
        out.append(decision)
    return out


def test_fresh_key_lets_the_burst_through_at_once_then_denies() -> None:
    decisions = run(5, 5, [0.0] * 7)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert decisions[5].retry_after_seconds == pytest.approx(0.2)
    assert decisions[0].retry_after_seconds == 0.0
    assert decisions[4].reset_seconds == pytest.approx(1.0)  # 5 taken at 5/s: full in 1s


@pytest.mark.parametrize(
    ("times", "allowed"),
    [
        pytest.param([0, 0, 0, 0.1], [True, True, False, False], id="not-yet-refilled"),
        pytest.param([0, 0, 0, 0.5], [True, True, False, True], id="one-refilled"),
        pytest.param(
            [0, 0, 10, 10, 10], [True, True, True, True, False], id="idle-refills-to-burst"
        ),
        pytest.param([0, 0.5, 1.0, 1.5, 2.0], [True] * 5, id="steady-at-rate"),
    ],
)
def test_refill_at_rate(times: list[float], allowed: list[bool]) -> None:
    assert [d.allowed for d in run(2, 2, times)] == allowed


def test_denied_request_does_not_consume() -> None:
    tat, first = gcra(None, 0.0, 1, 1)
    assert first.allowed
    tat2, denied = gcra(tat, 0.5, 1, 1)
    assert not denied.allowed and tat2 == tat
    assert denied.retry_after_seconds == pytest.approx(0.5)
    _, later = gcra(tat2, 1.0, 1, 1)
    assert later.allowed


def test_cost_and_peek() -> None:
    tat, d = gcra(None, 0.0, 10, 10, cost=4)
    assert d.allowed and d.remaining == 6
    _, peek = gcra(tat, 0.0, 10, 10, cost=0)
    assert peek.allowed and peek.remaining == 6
    _, never = gcra(tat, 0.0, 10, 10, cost=11)
    assert not never.allowed and math.isinf(never.retry_after_seconds)


def test_invariant_allowed_within_burst_plus_rate_times_duration() -> None:
    rate, burst = 7.0, 3
    times = [i * 0.013 for i in range(400)]
    allowed = [t for t, d in zip(times, run(rate, burst, times), strict=True) if d.allowed]
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + (allowed[j] - start) * rate + 1e-6


@pytest.mark.parametrize(("rate", "burst", "cost"), [(0, 1, 1), (1, 0, 1), (1, 1, -1)])
def test_bad_arguments(rate: float, burst: int, cost: int) -> None:
    with pytest.raises(ValueError):
        gcra(None, 0.0, rate, burst, cost)
