"""/api/v1/status from given samples (no workers): routes and their match, named servers,
rates and quantiles over the window, and the cache and queue sections that appear only once
their metrics exist."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import yaml

import lb.admin.status as status
from lb.admin.metrics import Samples
from lb.admin.window import CounterWindow
from lb.config import load_config_text
from lb.config.routes import Match

CONFIG = {
    "version": 1,
    "listeners": {
        "web": {"bind": "127.0.0.1:0"},
        "db": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "pg"},
    },
    "routes": [
        {
            "name": "api",
            "match": {"path_prefix": "/api/"},
            "split": [{"pool": "app", "weight": 9}, {"pool": "next", "weight": 1}],
        },
        {"match": {}, "pool": "app"},
    ],
    "pools": {
        "app": {"servers": [{"address": "127.0.0.1:9001"}, {"address": "app.internal:9002"}]},
        "next": {"servers": [{"address": "127.0.0.1:9003"}]},
        "pg": {"servers": [{"address": "127.0.0.1:5432"}]},
    },
}


class FakeProc:
    def __init__(self, pid: int, alive: bool = True) -> None:
        self.pid, self.alive = pid, alive

    def poll(self) -> int | None:
        return None if self.alive else 1


def supervisor() -> Any:
    return SimpleNamespace(
        config=load_config_text(yaml.safe_dump(CONFIG)),
        config_path="/etc/lb/lb.yaml",
        loaded_at=1000.0,
        generation=3,
        count=2,
        stores=SimpleNamespace(redis_status=lambda: {"configured": False}),
        workers=[
            SimpleNamespace(index=0, proc=FakeProc(11), restarts=0, ready=True),
            SimpleNamespace(index=1, proc=FakeProc(12), restarts=2, ready=True),
        ],
    )


def requests(route: str, pool: str, code: str, n: float) -> tuple[dict[str, str], float]:
    return {"listener": "web", "route": route, "pool": pool, "code": code}, n


def buckets(route: str, counts: list[float]) -> Samples:
    bounds = ["0.01", "0.1", "1.0", "+Inf"]
    return [
        ({"listener": "web", "route": route, "le": le}, n)
        for le, n in zip(bounds, counts, strict=True)
    ]


def samples(scale: float = 1.0, extra: dict[str, Samples] | None = None) -> dict[str, Samples]:
    found = {
        "lb_requests_total": [
            requests("api", "app", "200", 90 * scale),
            requests("api", "next", "503", 10 * scale),
            requests("routes[1]", "app", "200", 40 * scale),
        ],
        "lb_upstream_requests_total": [
            ({"pool": "app", "server": "127.0.0.1:9001", "code": "200"}, 100 * scale),
            # A name's resolved servers are labelled NAME:PORT (IP): summed as configured.
            ({"pool": "app", "server": "app.internal:9002 (10.0.0.1)", "code": "200"}, 20 * scale),
            ({"pool": "app", "server": "app.internal:9002 (10.0.0.2)", "code": "502"}, 10 * scale),
            ({"pool": "next", "server": "127.0.0.1:9003", "code": "503"}, 10 * scale),
        ],
        "lb_request_duration_seconds_bucket": buckets(
            "api", [50 * scale, 90 * scale, 100 * scale, 100 * scale]
        ),
        "lb_server_in_flight": [({"pool": "app", "server": "127.0.0.1:9001"}, 3.0)],
        "lb_pool_queue_depth": [({"pool": "app"}, 2.0)],
    }
    found.update(extra or {})
    return found


def document(monkeypatch: pytest.MonkeyPatch, found: dict[str, Samples], **kw: Any) -> Any:
    monkeypatch.setattr(status, "all_samples", lambda: found)
    return status.status_document(supervisor(), **kw)


def test_routes_workers_and_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = document(monkeypatch, samples())
    assert doc["supervisor"] == {
        "pid": doc["pid"],
        "workers": 2,
        "workers_alive": 2,
        "workers_ready": 2,
        "restarts": 2,
    }
    assert [w["pid"] for w in doc["workers"]] == [11, 12]
    assert doc["window"] == {"seconds": None}
    assert doc["admin"] == {"token_required": False}
    api, default = doc["routes"]
    assert api["name"] == "api" and api["listeners"] == ["web"]  # http listeners only
    assert api["match"] == "path /api/*" and api["pool"] is None
    assert api["split"] == [{"pool": "app", "weight": 9}, {"pool": "next", "weight": 1}]
    assert (api["requests"], api["errors_5xx"], api["requests_per_s"]) == (100, 10, None)
    # No window yet: latency from everything since start (rank 50 is the top of 0.01).
    assert api["latency_ms"] == {"p50": 10.0, "p99": pytest.approx(910.0)}
    assert default["name"] == "routes[1]" and default["match"] == "everything"
    assert default["latency_ms"] == {"p50": None, "p99": None}
    app = doc["pools"]["app"]
    assert app["waiting"] == 2
    first, named = app["servers"]
    assert (first["requests"], first["errors_5xx"], first["in_flight"]) == (100, 0, 3)
    assert (named["requests"], named["errors_5xx"], named["in_flight"]) == (30, 10, 0)
    assert doc["splits"]["api"]["arms"][1]["errors_5xx"] == 10
    assert doc["listeners"]["db"] == {
        "bind": "127.0.0.1:0",
        "mode": "tcp",
        "pool": "pg",
        "tls": False,
        "active_connections": 0,
    }
    assert "cache" not in doc and "queues" not in doc


def test_rates_and_latency_over_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    window = CounterWindow()
    clock = iter([100.0, 104.0])
    monkeypatch.setattr(status, "monotonic", lambda: next(clock))
    document(monkeypatch, samples(1.0), window=window)
    doc = document(monkeypatch, samples(2.0), window=window)  # twice the counts, 4 s later
    assert doc["window"] == {"seconds": 4.0}
    api = doc["routes"][0]
    assert api["requests"] == 200
    assert (api["requests_per_s"], api["errors_5xx_per_s"]) == (25.0, 2.5)
    assert api["latency_ms"]["p50"] == 10.0  # from the window's 100 requests
    named = doc["pools"]["app"]["servers"][1]
    assert (named["requests_per_s"], named["errors_5xx_per_s"]) == (7.5, 2.5)


def test_cache_and_queues_appear_with_their_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = [
        ({"route": "api", "result": "HIT"}, 6.0),
        ({"route": "api", "result": "STALE"}, 1.0),
        ({"route": "api", "result": "MISS"}, 3.0),
        ({"route": "api", "result": "BYPASS"}, 5.0),
        ({"route": "files", "result": "BYPASS"}, 2.0),
    ]
    queues = [({"queue": "reports"}, 4.0), ({"queue": "mail"}, 0.0)]
    jobs = [({"queue": "reports", "outcome": "done"}, 7.0)]
    extra = {
        "lb_cache_requests_total": cache,
        "lb_queue_depth": queues,
        "lb_queue_jobs_total": jobs,
    }
    doc = document(monkeypatch, samples(extra=extra))
    assert doc["cache"] == {
        "routes": {
            "api": {"results": {"bypass": 5, "hit": 6, "miss": 3, "stale": 1}, "hit_ratio": 0.7},
            "files": {"results": {"bypass": 2}, "hit_ratio": None},
        }
    }
    assert doc["queues"] == {
        "mail": {"depth": 0, "jobs": {}},
        "reports": {"depth": 4, "jobs": {"done": 7}},
    }


@pytest.mark.parametrize(
    ("match", "summary"),
    [
        ({}, "everything"),
        ({"host": "*.example.com", "path": "/x"}, "host *.example.com, path /x"),
        ({"path_regex": "^/v[12]/", "methods": ["get", "POST"]}, "path ~ ^/v[12]/, GET POST"),
        (
            {"headers": {"x-beta": "1", "x-a": {"present": True}, "x-b": {"present": False}}},
            "header x-beta=1, header x-a present, header x-b absent",
        ),
        ({"cookies": {"plan": {"regex": "^pro"}}}, "cookie plan ~ ^pro"),
    ],
)
def test_match_summary(match: dict[str, Any], summary: str) -> None:
    assert status.match_summary(Match.model_validate(match)) == summary
