"""The in-process tier's LRU order (lb.cache.local): what a read keeps, and how often."""

from __future__ import annotations

from lb.cache.local import _OVERHEAD, TOUCH_INTERVAL, LocalTier
from lb.core.cache_entry import Entry
from lb.core.cache_policy import StoredMeta

META = StoredMeta(
    request_time=100.0,
    response_time=100.0,
    date_value=100.0,
    age_value=0.0,
    freshness_lifetime=60.0,
)
BODY = b"x" * 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tier_of_four(clock: Clock) -> LocalTier:
    """A tier that holds entries a, b, c, d (stored in that order) and no fifth."""
    size = len(BODY) + _OVERHEAD
    tier = LocalTier(max_bytes=5 * size - 1, clock=clock)
    for key in "abcd":
        tier.set(key, Entry(META, 200, b"OK", (), BODY), ttl=3600)
    return tier


def test_an_entry_read_since_it_was_stored_outlives_one_that_was_not() -> None:
    clock = Clock()
    tier = tier_of_four(clock)
    clock.now += TOUCH_INTERVAL
    assert tier.get("a") is not None  # a: the most recently used now
    tier.set("e", Entry(META, 200, b"OK", (), BODY), ttl=3600)
    assert tier.get("b") is None  # the least recently used went
    assert all(tier.get(key) is not None for key in "acde")


def test_reads_within_a_second_of_the_last_move_leave_the_order_as_it_is() -> None:
    # As Varnish's lru_interval: a hot entry is moved once per interval, not per hit.
    clock = Clock()
    tier = tier_of_four(clock)
    clock.now += TOUCH_INTERVAL / 2
    assert tier.get("a") is not None  # stored half a second ago: not moved
    tier.set("e", Entry(META, 200, b"OK", (), BODY), ttl=3600)
    assert tier.get("a") is None
    assert all(tier.get(key) is not None for key in "bcde")
