"""Split: weighted canary arm choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lb.core.split import Split


@pytest.mark.parametrize(
    "arms",
    [
        [("api-v2", 5), ("api-v1", 95)],
        [("a", 1), ("b", 1)],
        [("a", 50), ("b", 30), ("c", 20)],
        [("off", 0), ("a", 3), ("b", 1)],
        [("a", 3), ("off", 0), ("b", 7), ("off2", 0)],
    ],
)
def test_picks_follow_weights(arms: list[tuple[str, int]]) -> None:
    split = Split(arms, rng=random.Random(1234))
    n = 10_000
    counts = Counter(split.pick() for _ in range(n))
    total = sum(w for _, w in arms)
    for name, weight in arms:
        share = counts[name] / n
        assert abs(share - weight / total) <= 0.015, (name, share)
        if weight == 0:
            assert counts[name] == 0


def test_single_arm_always_picked() -> None:
    split = Split([("only", 1), ("never", 0)])
    assert {split.pick() for _ in range(1000)} == {"only"}


@pytest.mark.parametrize(
    "arms",
    [[], [("a", 0)], [("a", 0), ("b", 0)], [("a", -1), ("b", 2)]],
)
def test_invalid_arms_rejected(arms: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        Split(arms)


def test_arms_kept_as_tuple() -> None:
    split = Split([("a", 1), ("b", 2)])
    assert split.arms == (("a", 1), ("b", 2))
    assert repr(split) == "<Split a=1 b=2>"


def test_draw_at_top_of_range_never_lands_on_weight_zero_arm() -> None:
    class Top(random.Random):
        def random(self) -> float:
            return 1.0  # beyond what random() returns; stands in for float rounding

    split = Split([("a", 1), ("b", 1), ("off", 0)], rng=Top())
    assert split.pick() == "b"
