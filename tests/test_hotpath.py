"""`python -m benchmarks.hotpath` keeps working: every request fed gets one response written."""

from __future__ import annotations

from benchmarks.hotpath import measure


async def test_hotpath_answers_every_request() -> None:
    seconds = await measure(200)  # raises if a response is missing
    assert 0 < seconds < 0.01
