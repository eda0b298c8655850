"""RequestMetrics: what a batch of finished requests adds to the Prometheus series."""

from __future__ import annotations

from prometheus_client import REGISTRY

from lb.request_metrics import RequestMetrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_flush_adds_requests_upstream_and_durations() -> None:
    ls, route = "m-web", "m-route"
    before = {
        "req": value("lb_requests_total", listener=ls, route=route, pool="p", code="200"),
        "a": value("lb_upstream_requests_total", pool="p", server="a:1", code="200"),
        "b": value("lb_upstream_requests_total", pool="p", server="b:1", code="200"),
        "count": value("lb_request_duration_seconds_count", listener=ls, route=route),
        "fast": value("lb_request_duration_seconds_bucket", listener=ls, route=route, le="0.001"),
    }
    metrics = RequestMetrics()
    metrics.observe(ls, route, "p", "a:1", 200, 0.0005)
    metrics.observe(ls, route, "p", "a:1", 200, 0.2)
    metrics.observe(ls, route, "p", "b:1", 200, 0.0001)
    metrics.observe(ls, route, "p", "", 200, 0.0)  # answered by lb itself: no server
    metrics.flush()
    assert value("lb_requests_total", listener=ls, route=route, pool="p", code="200") == (
        before["req"] + 4
    )
    assert value("lb_upstream_requests_total", pool="p", server="a:1", code="200") == (
        before["a"] + 2
    )
    assert value("lb_upstream_requests_total", pool="p", server="b:1", code="200") == (
        before["b"] + 1
    )
    assert value("lb_request_duration_seconds_count", listener=ls, route=route) == (
        before["count"] + 4
    )
    fast = value("lb_request_duration_seconds_bucket", listener=ls, route=route, le="0.001")
    assert fast == before["fast"] + 3
    metrics.flush()  # nothing new: nothing added
    assert value("lb_request_duration_seconds_count", listener=ls, route=route) == (
        before["count"] + 4
    )


def test_a_duration_goes_in_the_first_bucket_not_below_it() -> None:
    """Prometheus buckets are `le`: a duration equal to a bound counts in that bound's bucket;
    one past the last finite bound counts only in +Inf."""
    ls, route = "edge-web", "edge-route"

    def bucket(le: str) -> float:
        return value("lb_request_duration_seconds_bucket", listener=ls, route=route, le=le)

    before = {le: bucket(le) for le in ("0.001", "0.0025", "30.0", "+Inf")}
    metrics = RequestMetrics()
    metrics.observe(ls, route, "p", "", 200, 0.001)  # exactly a bound
    metrics.observe(ls, route, "p", "", 200, 0.0010001)  # just past it
    metrics.observe(ls, route, "p", "", 200, 90.0)  # past the last finite bound
    metrics.flush()
    assert bucket("0.001") == before["0.001"] + 1
    assert bucket("0.0025") == before["0.0025"] + 2  # buckets are cumulative
    assert bucket("30.0") == before["30.0"] + 2
    assert bucket("+Inf") == before["+Inf"] + 3
