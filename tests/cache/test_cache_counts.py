"""What lb_cache_requests_total counts: each result counted by the filter on a counter of its
own (ResponseCache.counter), added to the metric at each flush."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from lb.cache import cache as cache_module
from lb.cache.cache import PASS_TTL, ResponseCache
from lb.config.schema import CacheConfig


def requests(route: str, result: str) -> float:
    value = REGISTRY.get_sample_value("lb_cache_requests_total", {"route": route, "result": result})
    return value or 0.0


def test_kept_counters_reach_the_metric_at_each_flush() -> None:
    cache = ResponseCache(CacheConfig(), None)
    hits, misses = requests("counts", "hit"), requests("counts", "miss")
    counter = cache.counter(("counts", b"HIT"))
    assert cache.counter(("counts", b"HIT")) is counter  # one per key, whoever asks
    counter.n += 3
    cache.counter(("counts", b"MISS")).n += 1
    assert requests("counts", "hit") == hits  # nothing before the flush
    cache.flush_metrics()
    assert requests("counts", "hit") == hits + 3
    assert requests("counts", "miss") == misses + 1
    assert counter.n == 0
    counter.n += 1
    cache.flush_metrics()
    cache.flush_metrics()  # a counter is added once
    assert requests("counts", "hit") == hits + 4


def test_a_pass_is_renewed_when_half_spent_and_the_oldest_goes_first(monkeypatch) -> None:
    # A URL never storable is marked on each response; the mark is written again only once
    # half of PASS_TTL is gone (most responses then cost no write), and past MAX_PASSES the
    # URL marked longest ago is forgotten first.
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cache_module, "MAX_PASSES", 3)
    cache = ResponseCache(CacheConfig(), None)
    cache.mark_pass("a")
    assert cache.passes == {"a": 1000.0 + PASS_TTL}
    clock[0] += PASS_TTL / 2 - 1
    cache.mark_pass("a")
    assert cache.passes["a"] == 1000.0 + PASS_TTL  # more than half left: kept as it was
    cache.mark_pass("b")
    clock[0] += 2
    cache.mark_pass("a")
    assert cache.passes["a"] == clock[0] + PASS_TTL  # renewed, and now the newest
    cache.mark_pass("c")
    cache.mark_pass("d")
    assert list(cache.passes) == ["a", "c", "d"]  # b, marked longest ago, went first
