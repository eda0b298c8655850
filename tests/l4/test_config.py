"""The L4 keys of the config: accept_proxy, SNI routes on tcp listeners, send_proxy on pools."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from lb.config import load_config_text
from lb.proxy.runtime import Runtime
from lb.request_metrics import RequestMetrics
from tests.conftest import config_problems

problems = config_problems


def test_l4_keys_load_into_the_runtime() -> None:
    config = load_config_text(
        textwrap.dedent(
            """\
            version: 1
            listeners:
              tls:
                bind: "127.0.0.1:8443"
                mode: tcp
                pool: default
                accept_proxy: true
                routes:
                  - {match: {sni: a.example.com}, pool: a}
                  - {match: {sni: "*.example.com"}, pool: default}
              web: {bind: "127.0.0.1:8080", accept_proxy: true}
            routes: [{pool: a}]
            pools:
              a: {servers: [{address: "127.0.0.1:1"}]}
              default: {send_proxy: v2, servers: [{address: "127.0.0.1:2"}]}
            """
        )
    )
    runtime = Runtime(config, SimpleNamespace(metrics=RequestMetrics(), access_log=None))
    tls = runtime.listeners["tls"]
    assert tls.accept_proxy and runtime.listeners["web"].accept_proxy
    assert tls.sni is not None
    assert tls.sni.pool_for("a.example.com") == "a"
    assert tls.sni.pool_for("b.example.com") == "default"
    assert tls.sni.pool_for(None) == "default"
    assert runtime.pools["default"].send_proxy == "v2"
    assert runtime.pools["a"].send_proxy is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            version: 1
            listeners:
              db:
                bind: "127.0.0.1:6432"
                mode: tcp
                pool: pg
                routes:
                  - {match: {sni: a.example.com}, pool: pgx}
                  - {match: {sni: "a.*.com"}, pool: pg}
                  - {match: {sni: A.example.com}, pool: pg}
            pools: {pg: {servers: [{address: "127.0.0.1:5432"}]}}
            """,
            [
                "listeners.db.routes[0].pool: unknown pool 'pgx' (did you mean 'pg'?)",
                "listeners.db.routes[1].match.sni: 'a.*.com' is not a server name",
                "listeners.db.routes[2].match.sni: unreachable: routes[0] matches",
            ],
        ),
        (
            """\
            version: 1
            listeners:
              web: {bind: "127.0.0.1:80", routes: [{match: {sni: a.b}, pool: app}]}
              dns: {bind: "127.0.0.1:53", mode: udp, pool: app, accept_proxy: true}
            routes: [{pool: app}]
            pools: {app: {servers: [{address: "127.0.0.1:1"}]}}
            """,
            [
                "listeners.web.routes: only tcp listeners route by SNI (this one is mode http)",
                "listeners.dns.accept_proxy: only for tcp and http listeners",
            ],
        ),
        (
            """\
            version: 1
            listeners:
              web: {bind: "127.0.0.1:80"}
            routes: [{pool: app}]
            pools: {app: {send_proxy: v1, servers: [{address: "127.0.0.1:1"}]}}
            """,
            ["pools.app.send_proxy: only for pools of tcp listeners, yet routes[0] (http)"],
        ),
        (
            """\
            version: 1
            listeners:
              db: {bind: "127.0.0.1:1", mode: tcp, pool: p}
            pools: {p: {send_proxy: v3, servers: [{address: "127.0.0.1:1"}]}}
            """,
            ["pools.p.send_proxy"],
        ),
        (
            """\
            version: 1
            listeners:
              db: {bind: "127.0.0.1:1", mode: tcp, pool: p}
            pools: {p: {tls: {verify: false}, servers: [{address: "127.0.0.1:1"}]}}
            """,
            ["pools.p.tls: only for pools that http routes use, yet only listeners.db (tcp/udp)"],
        ),
    ],
    ids=[
        "tcp-routes",
        "wrong-mode",
        "send-proxy-on-http-pool",
        "send-proxy-value",
        "tls-on-tcp-pool",
    ],
)
def test_problems(text: str, expected: list[str]) -> None:
    found = problems(text)
    for want in expected:
        assert any(want in p for p in found), f"{want!r} not in {found}"
