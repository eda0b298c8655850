"""What lb_cache_requests_total counts: results counted per request, and hits counted by the
filter on its own counter (ResponseCache.counter), both added at each flush."""

from __future__ import annotations

from prometheus_client import REGISTRY

from lb.cache.cache import ResponseCache
from lb.config.schema import CacheConfig


def requests(route: str, result: str) -> float:
    value = REGISTRY.get_sample_value("lb_cache_requests_total", {"route": route, "result": result})
    return value or 0.0


def test_counted_results_and_kept_counters_reach_the_metric_at_each_flush() -> None:
    cache = ResponseCache(CacheConfig(), None)
    hits, misses = requests("counts", "hit"), requests("counts", "miss")
    counter = cache.counter(("counts", b"HIT"))
    assert cache.counter(("counts", b"HIT")) is counter  # one per key, whoever asks
    counter[0] += 3
    cache.count("counts", b"HIT")
    cache.count("counts", b"MISS")
    assert requests("counts", "hit") == hits  # nothing before the flush
    cache.flush_metrics()
    assert requests("counts", "hit") == hits + 4
    assert requests("counts", "miss") == misses + 1
    assert counter == [0]
    counter[0] += 1
    cache.flush_metrics()
    cache.flush_metrics()  # a counter is added once
    assert requests("counts", "hit") == hits + 5
