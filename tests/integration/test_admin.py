"""The admin listener and the access log of `lb run` with two workers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import wait_for
from tests.integration.helpers import get_json, lb_with_origins, metric_total, request

ACCESS_LOG_FIELDS = {
    "time",
    "client",
    "request_id",
    "method",
    "path",
    "route",
    "pool",
    "server",
    "status",
    "bytes",
    "duration_ms",
}


def test_metrics_status_healthz_and_access_log_cover_both_workers(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    with lb_with_origins(tmp_path, extra=f"access_log: {{path: {log_path}}}\n") as (lb, origins):
        assert request(lb.admin_port, "/healthz")[:3:2] == (200, b"ok\n")
        sent = 24
        ids = set()
        for i in range(sent):
            status, headers, _ = request(lb.port, f"/m{i}?q=1")
            assert status == 200
            ids.add(headers["x-request-id"])
        # The request ids carry a per-worker prefix: both workers took connections.
        assert len({rid.rsplit("-", 1)[0] for rid in ids}) == 2, ids

        # Workers hand their counts to the shared files a few times a second.
        wait_for(
            lambda: metric_total(lb.metrics(), "lb_requests_total") == sent, 5, what="the counts"
        )
        wait_for(lambda: metric_total(lb.metrics(), "lb_request_duration_seconds_count") == sent, 5)
        text = lb.metrics()
        assert 'lb_requests_total{code="200",listener="web",pool="app",route="default"}' in text
        assert metric_total(text, "lb_request_duration_seconds_count") == sent
        assert metric_total(text, "lb_upstream_requests_total") == sent

        status = lb.status()
        assert [w["alive"] for w in status["workers"]] == [True, True]
        assert status["listeners"]["web"]["bind"] == f"127.0.0.1:{lb.port}"
        assert status["listeners"]["web"]["mode"] == "http"
        servers = status["pools"]["app"]["servers"]
        assert [s["address"] for s in servers] == [o.address for o in origins]
        assert [s["requests"] for s in servers] == [o.total for o in origins]
        assert sum(s["requests"] for s in servers) == sent

        code, headers, page = request(lb.admin_port, "/status")
        assert code == 200 and headers["content-type"].startswith("text/html")
        # The page draws itself from the JSON (tests/integration/test_status_page.py).
        assert b'fetch("/api/v1/status"' in page

        def lines() -> list[dict[str, object]]:
            text = log_path.read_text() if log_path.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        wait_for(lambda: len(lines()) == sent, 5, what="every request in the access log")
        records = lines()
        for record in records:
            assert record.keys() >= ACCESS_LOG_FIELDS, record
        assert {r["request_id"] for r in records} == ids
        first = next(r for r in records if r["path"] == "/m0?q=1" or r["path"] == "/m0")
        assert first["method"] == "GET" and first["status"] == 200
        assert first["route"] == "default" and first["pool"] == "app"
        assert first["server"] in {o.address for o in origins}
        assert first["client"] == "127.0.0.1"
        assert isinstance(first["bytes"], int) and first["bytes"] > 0

        assert request(lb.admin_port, "/nope")[0] == 404


def test_reload_endpoint_answers_422_with_the_problems(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, workers=1) as (lb, _origins):
        good = lb.config.read_text()
        code, _, body = request(lb.admin_port, "/api/v1/reload", method="POST")
        assert code == 200 and json.loads(body) == {"reloaded": True}

        lb.config.write_text(good.replace("routes:", "routs:"))
        code, _, body = request(lb.admin_port, "/api/v1/reload", method="POST")
        assert code == 422
        answer = json.loads(body)
        assert answer["reloaded"] is False
        assert any(p.startswith("routs: unknown key 'routs'") for p in answer["problems"])
        assert "reload refused" in lb.log()
        assert request(lb.port, "/still")[0] == 200


def test_mutating_endpoints_need_the_bearer_token(tmp_path: Path) -> None:
    token = "s3cret"
    with lb_with_origins(tmp_path, workers=1) as (lb, _origins):
        text = lb.config.read_text()
        lb.config.write_text(text.replace("admin: {", f'admin: {{token: "{token}", '))
        # The token takes effect with the reload that sets it.
        assert request(lb.admin_port, "/api/v1/reload", method="POST")[0] == 200
        code, _, body = request(lb.admin_port, "/api/v1/reload", method="POST")
        assert code == 401, body
        wrong = {"authorization": "Bearer nope"}
        assert request(lb.admin_port, "/api/v1/reload", method="POST", headers=wrong)[0] == 401
        right = {"authorization": f"Bearer {token}"}
        assert request(lb.admin_port, "/api/v1/reload", method="POST", headers=right)[0] == 200
        # Reading stays open.
        assert get_json(lb.admin_port, "/api/v1/status")["pools"]["app"]
        assert request(lb.admin_port, "/metrics")[0] == 200
