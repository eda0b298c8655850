"""Config keys of sticky sessions and canaries: sticky, force, rollback, sticky_secret."""

from __future__ import annotations

import pytest

from lb.config import ConfigError, load_config_text

BASE = """
version: 1
listeners: {web: {bind: "127.0.0.1:0"}}
pools:
  v1: {servers: [{address: "127.0.0.1:9001"}]%s}
  v2: {servers: [{address: "127.0.0.1:9002"}]}
routes:
  - name: api
    %s
"""
SPLIT = "split: [{pool: v1, weight: 95}, {pool: v2, weight: 5}]"


def problems(route: str, pool_extra: str = "", top: str = "") -> list[str]:
    try:
        load_config_text(BASE % (pool_extra, route) + top)
    except ConfigError as err:
        return [f"{p.path}: {p.message}" for p in err.problems]
    return []


def test_a_full_canary_route_loads():
    text = BASE % (
        ", sticky: {cookie: lb_srv, ttl: 30m}",
        SPLIT
        + """
    sticky: {cookie: lb_arm, ttl: 1h}
    force: {header: x-canary, arms: {"1": v2, stable: v1}}
    rollback: {max_error_rate: 5%, min_requests: 200, window: 60s}""",
    )
    config = load_config_text(text + 'sticky_secret: "0123456789abcdef0123"\n')
    route = config.routes[0]
    assert route.sticky is not None and (route.sticky.cookie, route.sticky.ttl) == ("lb_arm", 3600)
    assert route.force is not None and route.force.arms == {"1": "v2", "stable": "v1"}
    assert route.rollback is not None
    assert (route.rollback.max_error_rate, route.rollback.min_requests) == (0.05, 200)
    assert route.rollback.window == 60.0
    sticky = config.pools["v1"].sticky
    assert sticky is not None and (sticky.cookie, sticky.ttl) == ("lb_srv", 1800)


def test_defaults_and_numeric_force_values():
    text = BASE % ("", SPLIT + "\n    force: {cookie: canary, arms: {1: v2}}\n    rollback: {}")
    route = load_config_text(text).routes[0]
    assert route.force is not None and route.force.arms == {"1": "v2"}
    assert route.rollback is not None
    assert (route.rollback.max_error_rate, route.rollback.min_requests) == (0.05, 100)


@pytest.mark.parametrize(
    ("route", "pool_extra", "top", "expected"),
    [
        (
            "pool: v1\n    sticky: {cookie: a}",
            "",
            "",
            "routes[0].sticky: only for routes with a split",
        ),
        ("pool: v1\n    rollback: {}", "", "", "routes[0].rollback: only for routes with a split"),
        (
            SPLIT + "\n    force: {header: x-canary, arms: {'1': v3}}",
            "",
            "",
            "routes[0].force.arms.1: 'v3' is not an arm of this route's split",
        ),
        (
            SPLIT + "\n    force: {header: x-c, cookie: c, arms: {'1': v2}}",
            "",
            "",
            "routes[0].force: give exactly one of header or cookie",
        ),
        (
            "split: [{pool: v1}]\n    rollback: {}",
            "",
            "",
            "routes[0].rollback: needs a split of two or more arms",
        ),
        (
            SPLIT + "\n    sticky: {cookie: same}",
            ", sticky: {cookie: same}",
            "",
            "routes[0].sticky.cookie: pools.v1.sticky uses cookie 'same' too",
        ),
        (SPLIT + "\n    rollback: {max_error_rate: 5}", "", "", 'write "5%"'),
        (SPLIT + "\n    rollback: {max_error_rate: 150%}", "", "", 'from "0%" to "100%"'),
        (SPLIT + "\n    sticky: {cookie: 'a b'}", "", "", "not a valid cookie name"),
        (SPLIT + "\n    sticky: {cookie: a, ttl: 0s}", "", "", "routes[0].sticky.ttl"),
        (SPLIT, "", "sticky_secret: short\n", "sticky_secret"),
    ],
)
def test_problems(route, pool_extra, top, expected):
    found = problems(route, pool_extra, top)
    assert any(expected in p for p in found), found
