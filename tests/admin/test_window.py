"""Quantiles from histogram buckets and the window of counter snapshots (pure tables)."""

from __future__ import annotations

import math

import pytest

from lb.admin.window import CounterWindow, Delta, quantile

INF = math.inf
# Cumulative (le, count): 10 observations, 4 at or under 0.1 s, 9 at or under 0.5 s.
TEN = [(0.1, 4), (0.5, 9), (1.0, 10), (INF, 10)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [], None),  # no histogram
        (0.5, [(0.1, 0), (INF, 0)], None),  # no observations
        (0.5, [(0.1, 3), (1.0, 3)], None),  # no +Inf bucket: not a histogram
        (0.5, [(0.1, 4), (INF, 4)], 0.05),  # all in the first bucket: from 0 to 0.1
        (0.5, TEN, 0.1 + 0.4 * (5 - 4) / (9 - 4)),  # rank 5 falls in (0.1, 0.5]
        (0.4, TEN, 0.1),  # rank 4 is the first bucket's top
        (0.99, TEN, 0.5 + 0.5 * (9.9 - 9) / (10 - 9)),
        (1.0, TEN, 1.0),
        (0.5, [(INF, 10), (1.0, 10), (0.5, 9), (0.1, 4)], 0.18),  # order does not matter
        (0.99, [(0.1, 1), (1.0, 1), (INF, 5)], 1.0),  # in +Inf: the highest finite bound
        (0.5, [(0.1, 0), (0.5, 0), (1.0, 2), (INF, 2)], 0.75),  # empty buckets skipped
        (0.0, [(0.1, 0), (0.5, 2), (INF, 2)], 0.1),  # the first non-empty bucket's bottom
    ],
)
def test_quantile(q: float, buckets: list[tuple[float, float]], expected: float | None) -> None:
    got = quantile(q, buckets)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


# (now, counts given) -> the Delta answered; the window spans 10 s, keeps a snapshot at most
# every 1 s, and needs a base at least 0.5 s old.
STEPS: list[tuple[float, dict[tuple[str, ...], float], Delta | None]] = [
    (100.0, {("a",): 10}, None),  # the first look: nothing to compare with
    (100.2, {("a",): 12}, None),  # too soon after it (and not kept: under min_gap)
    (101.0, {("a",): 20}, Delta(1.0, {("a",): 10})),
    (105.0, {("a",): 60, ("b",): 3}, Delta(5.0, {("a",): 50, ("b",): 3})),  # a new key
    (110.0, {("a",): 100, ("b",): 3}, Delta(10.0, {("a",): 90, ("b",): 3})),  # from 100.0
    (111.5, {("a",): 100, ("b",): 3}, Delta(6.5, {("a",): 40, ("b",): 0})),  # 100, 101 gone
    (112.0, {("a",): 5, ("b",): 3}, Delta(7.0, {("a",): 5, ("b",): 0})),  # a reset: from zero
    (140.0, {("a",): 9}, None),  # a quiet spell: every snapshot is too old
    (141.0, {("a",): 19}, Delta(1.0, {("a",): 10})),
]


def test_counter_window_steps() -> None:
    window = CounterWindow(span=10.0, min_gap=1.0, min_age=0.5)
    for now, counts, expected in STEPS:
        got = window.observe(now, counts)
        if expected is None:
            assert got is None, now
        else:
            assert got is not None, now
            assert got.seconds == pytest.approx(expected.seconds), now
            assert got.counts == expected.counts, now
