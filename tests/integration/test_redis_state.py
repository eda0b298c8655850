"""`lb run` with `redis:` pointing at a Redis that is down: every route is served as usual, the
state shows down in /api/v1/status and `lb_redis_up`, and turns up by itself once Redis runs,
with no restart or reload."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RedisServer, wait_for
from tests.integration.helpers import get_json, lb_with_origins, request


def redis_gauge(admin_port: int) -> float | None:
    status, _, body = request(admin_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("lb_redis_up "):
            return float(line.split()[1])
    return None


def test_lb_serves_with_redis_down_and_sees_it_come_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    extra = f'redis: {{url: "{redis_server.url}", timeout: 100ms}}\n'
    with lb_with_origins(tmp_path, workers=2, extra=extra) as (lb, _):
        for i in range(10):
            assert request(lb.port, f"/r{i}")[0] == 200
        state = wait_for(
            lambda: (s := get_json(lb.admin_port, "/api/v1/status")["redis"])["up"] is False and s,
            what="/api/v1/status to say redis is down",
        )
        assert state["configured"] is True and "127.0.0.1" in state["url"]
        assert state["last_error"]
        wait_for(lambda: redis_gauge(lb.admin_port) == 0.0, what="lb_redis_up 0")
        redis_server.start()
        wait_for(
            lambda: get_json(lb.admin_port, "/api/v1/status")["redis"]["up"] is True,
            timeout=10,
            what="/api/v1/status to say redis is up again",
        )
        wait_for(lambda: redis_gauge(lb.admin_port) == 1.0, timeout=10, what="lb_redis_up 1")
        assert request(lb.port, "/after")[0] == 200


def test_without_redis_the_status_says_so(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, workers=1) as (lb, _):
        assert get_json(lb.admin_port, "/api/v1/status")["redis"] == {"configured": False}
