"""`python -m benchmarks.hotpath` keeps working: every request fed gets one response written."""

from __future__ import annotations

from benchmarks.hotpath import measure


async def test_hotpath_answers_every_request() -> None:
    # measure() raises unless each of the 200 requests got exactly one response written. How
    # fast that was is the benchmark's to report, not a unit test's to bound.
    await measure(200)


async def test_hotpath_cache_hit_answers_every_request_from_the_cache() -> None:
    # measure() raises unless the entry was stored and each response is an X-Cache HIT.
    await measure(200, case="cache-hit")


async def test_hotpath_cache_miss_answers_every_request_from_the_server() -> None:
    await measure(200, case="cache-miss")
