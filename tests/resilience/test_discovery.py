"""Discovery: a server given as a name is resolved at start and every `resolve_interval`;
a DNS change (here: the LB_RESOLVE_OVERRIDES file) moves the traffic, the vanished address
is drained."""

from __future__ import annotations

from pathlib import Path

import pytest

from lb.config.base import ResolvedTimeouts
from lb.config.pools import Pool, Server
from lb.proxy.pool.pool import PoolRuntime
from tests.conftest import wait_for
from tests.integration.helpers import LbProcess, free_port, request
from tests.resilience.helpers import Origin, shared_port


def test_a_dns_change_moves_traffic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = shared_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("app.test 127.0.0.1\n")
    monkeypatch.setenv("LB_RESOLVE_OVERRIDES", str(hosts))
    with Origin("one", "127.0.0.1", port), Origin("two", "127.0.0.2", port):
        lb_port, admin_port = free_port(), free_port()
        path = tmp_path / "lb.yaml"
        path.write_text(
            f"""version: 1
listeners:
  web: {{bind: "127.0.0.1:{lb_port}", mode: http}}
routes:
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{resolve_interval: 200ms, servers: [{{address: "app.test:{port}"}}]}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""
        )
        with LbProcess(path, lb_port, admin_port, workers=2) as lb:
            for i in range(6):
                assert request(lb_port, f"/{i}")[2].startswith(b"origin one")
            hosts.write_text("app.test 127.0.0.2\n")

            def moved() -> bool:
                return all(request(lb_port, "/x")[2].startswith(b"origin two") for _ in range(6))

            wait_for(moved, 5, what="traffic on the new address")
            for i in range(10):
                code, _, body = request(lb_port, f"/after/{i}")
                assert code == 200 and body.startswith(b"origin two"), body
            assert f"app.test:{port} (127.0.0.2)" in lb.metrics()


def test_set_resolved_joins_new_addresses_and_drains_vanished_ones() -> None:
    config = Pool(servers=[Server(address="app.test:80", weight=2), Server(address="10.0.0.9:80")])
    pool = PoolRuntime("app", config, ResolvedTimeouts())
    assert [s.address for s in pool.servers] == ["app.test:80", "10.0.0.9:80"]
    assert pool.set_resolved("app.test:80", ["10.0.0.1", "10.0.0.2"])
    first = pool.members["app.test:80"][0]
    first.state.in_flight = 1  # a request in flight
    assert [(s.address, s.host, s.state.weight) for s in pool.servers] == [
        ("app.test:80 (10.0.0.1)", "10.0.0.1", 2),
        ("app.test:80 (10.0.0.2)", "10.0.0.2", 2),
        ("10.0.0.9:80", "10.0.0.9", 1),
    ]
    assert not pool.set_resolved("app.test:80", ["10.0.0.1", "10.0.0.2"])  # no change
    assert pool.set_resolved("app.test:80", ["10.0.0.2", "10.0.0.3"])
    assert first.state.drained and first.state.in_flight == 1  # it finishes its request
    assert [s.host for s in pool.servers] == ["10.0.0.2", "10.0.0.3", "10.0.0.9"]
    picks = {pool.balancer.pick().address for _ in range(10)}  # type: ignore[union-attr]
    assert "app.test:80 (10.0.0.1)" not in picks and len(picks) == 3
    # A drained configured name drains every server it resolves to, new ones included.
    assert pool.set_drained("app.test:80", True)
    pool.set_resolved("app.test:80", ["10.0.0.4"])
    assert all(s.state.drained for s in pool.members["app.test:80"])
    # A reload keeps the resolved servers (same objects) and the drain.
    again = PoolRuntime("app", config, ResolvedTimeouts(), previous=pool)
    assert again.members["app.test:80"] == pool.members["app.test:80"]
    assert again.drained == {"app.test:80"}
