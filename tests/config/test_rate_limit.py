"""A route's `rate_limit`: what is accepted, its defaults, and what `lb check` says when wrong."""

from __future__ import annotations

import pytest

from lb.config import load_config_text
from lb.config.units import parse_rate
from tests.conftest import config_problems

BASE = """\
version: 1
listeners: {web: {bind: "0.0.0.0:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
"""


def route(rate_limit: str, extra: str = "") -> str:
    return BASE + extra + f"routes:\n  - {{name: api, pool: app, rate_limit: {rate_limit}}}\n"


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("100/s", 100.0), ("30/m", 0.5), ("7200/h", 2.0), ("2.5/s", 2.5), (" 5 / s ", 5.0)],
)
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


def test_defaults() -> None:
    limit = load_config_text(route("{rate: 100/s}")).routes[0].rate_limit
    assert limit is not None
    assert (limit.rate, limit.burst, limit.effective_burst) == (100.0, None, 100)
    assert (limit.key, limit.scope, limit.on_store_error, limit.headers) == (
        "client_ip",
        "local",
        None,
        False,
    )
    slow = load_config_text(route("{rate: 10/m}")).routes[0].rate_limit
    assert slow is not None and slow.effective_burst == 1  # the rate per second, at least 1


@pytest.mark.parametrize(
    ("rate_limit", "problem"),
    [
        ("{rate: 100}", "routes[0].rate_limit.rate: rate 100: write requests per unit"),
        ("{rate: 10/d}", "routes[0].rate_limit.rate: rate '10/d': write requests per unit"),
        ("{rate: 0/s}", "routes[0].rate_limit.rate: rate '0/s'"),
        ("{rate: fast}", "routes[0].rate_limit.rate: rate 'fast'"),
        ("{burst: 5}", "routes[0].rate_limit.rate: "),
        ("{rate: 1/s, burst: 0}", "routes[0].rate_limit.burst: "),
        ("{rate: 1/s, key: ip}", "routes[0].rate_limit.key: key 'ip': use client_ip, header:NAME"),
        ("{rate: 1/s, key: 'header:'}", "routes[0].rate_limit.key: key 'header:'"),
        ("{rate: 1/s, scope: global}", "routes[0].rate_limit.scope: "),
        ("{rate: 1/s, per: 1s}", "routes[0].rate_limit.per: unknown key"),
    ],
)
def test_bad_values_are_named_by_path(rate_limit: str, problem: str) -> None:
    problems = config_problems(route(rate_limit))
    assert any(p.startswith(problem) for p in problems), problems


def test_shared_needs_redis() -> None:
    problems = config_problems(route("{rate: 1/s, scope: shared}"))
    assert len(problems) == 1
    assert problems[0].startswith("routes[0].rate_limit.scope: shared counts in Redis")
    assert "redis: {url:" in problems[0] and "(line 5)" in problems[0]
    with_redis = "redis: {url: 'redis://127.0.0.1:6379/0'}\n"
    assert load_config_text(route("{rate: 1/s, scope: shared}", with_redis)).redis is not None


def test_on_store_error_is_for_shared_limits_only() -> None:
    problems = config_problems(route("{rate: 1/s, on_store_error: deny}"))
    assert problems == [
        "routes[0].rate_limit.on_store_error: only for scope: shared (a local limit counts in "
        "the worker and never fails) (line 5)"
    ]
