"""Rate limits under `lb run`: a local limit holds across the worker processes together, it is
counted in lb_rate_limited_total, and `lb check` names a bad rate_limit by its path."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import wait_for
from tests.integration.helpers import lb_with_origins, metric_total, request, run_lb

LIMITED = """  - name: limited
    match: {path_prefix: /limited}
    pool: app
    rate_limit: {rate: 1/h, burst: 4, key: route}
"""


def test_a_local_limit_holds_across_workers(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, workers=2, extra_routes=LIMITED) as (lb, _):
        # Each request on a new connection: the kernel spreads them over both workers,
        # each of which allows its share (burst 4 / 2 workers = 2; 1/h refills nothing here).
        codes = [request(lb.port, f"/limited/{i}")[0] for i in range(20)]
        allowed = codes.count(200)
        assert set(codes) == {200, 429}
        assert 2 <= allowed <= 4
        assert request(lb.port, "/other")[0] == 200  # other routes are not limited
        wait_for(
            lambda: metric_total(lb.metrics(), "lb_rate_limited_total") == 20 - allowed,
            what="lb_rate_limited_total to count every 429",
        )
        assert 'lb_rate_limited_total{route="limited"}' in lb.metrics()


def test_check_names_bad_rate_limits_by_path(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(
        """version: 1
listeners: {web: {bind: "127.0.0.1:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
routes:
  - {name: a, match: {path_prefix: /a}, pool: app, rate_limit: {rate: 100/x}}
  - {name: b, pool: app, rate_limit: {rate: 100/s, scope: shared}}
"""
    )
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 1
    assert (
        "routes[0].rate_limit.rate: rate '100/x': write requests per unit above 0, e.g. 100/s"
        in (result.stdout + result.stderr)
    )
    path.write_text(path.read_text().replace("100/x", "100/m"))
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 1
    assert "routes[1].rate_limit.scope: shared counts in Redis, and there is no redis: section" in (
        result.stdout + result.stderr
    )
