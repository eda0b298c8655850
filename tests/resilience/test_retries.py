"""Retries through a real lb worker: what is retried (connect failures; resets and configured
5xx for idempotent requests with a replayable body), what is not, and the budget; plus the
config keys and the sans-IO retry budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lb.config import ConfigError, load_config_text
from lb.core.retry import MIN_PER_SECOND, WINDOW, RetryBudget, RetryPolicy
from lb.proxy.http.attempts import REPLAY_BUFFER
from tests.conftest import Message, Origin, _record, handlers, one_pool
from tests.integration.helpers import free_port


def closes_unanswered() -> Any:
    """Reads the request, then closes without a byte of answer (a crash mid-request)."""

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str:
        await _record(origin, req, reader)
        return "close"

    return handle


def retried(pool: str = "app") -> float:
    return REGISTRY.get_sample_value("lb_retries_total", {"pool": pool}) or 0.0


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens: connect refused


def pool_of(*addresses: str, retries: dict[str, Any] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "default", "match": {}, "pool": "app"}
    if retries is not None:
        route["retries"] = retries
    return {
        "listeners": {"web": {}},
        "routes": [route],
        "pools": {"app": {"servers": [{"address": a} for a in addresses]}},
    }


GET = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"


async def test_connect_refused_is_retried_on_another_server(proxy, origin, connect):
    good = await origin(handlers.fixed(b"good"))
    worker = await proxy(pool_of(dead_address(), good.address))
    before = retried()
    client = await connect(worker)
    resp = await client.request(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc")
    assert (resp.status, resp.body) == (200, b"good")  # nothing was sent: even POST is safe
    assert good.requests[0].body == b"abc"
    assert retried() == before + 1


async def test_attempts_bound_the_tries(proxy, origin, connect):
    good = await origin(handlers.fixed(b"good"))
    worker = await proxy(
        pool_of(dead_address(), dead_address(), good.address, retries={"attempts": 1})
    )
    client = await connect(worker)
    resp = await client.request(GET)
    assert resp.status == 502 and resp.header("x-lb-error") == "backend_failed"
    assert not good.requests  # two dead servers, one retry: never reached the third


async def test_no_retries_with_attempts_zero(proxy, origin, connect):
    good = await origin()
    worker = await proxy(pool_of(dead_address(), good.address, retries={"attempts": 0}))
    resp = await (await connect(worker)).request(GET)
    assert resp.status == 502 and not good.requests


async def test_reset_before_answer_retries_idempotent_only(proxy, origin, connect):
    crash = await origin(closes_unanswered())
    good = await origin(handlers.fixed(b"good"))
    worker = await proxy(one_pool(crash, good))
    resp = await (await connect(worker)).request(GET)
    assert (resp.status, resp.body) == (200, b"good")
    assert len(crash.requests) == 1  # it was sent there first, then elsewhere
    # A POST may have been acted on by the server that died: never sent twice.
    worker2 = await proxy(one_pool(crash, good))
    post = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi"
    resp = await (await connect(worker2)).request(post)
    assert resp.status == 502 and resp.header("x-lb-error") == "backend_failed"
    assert len(good.requests) == 1


async def test_configured_status_is_retried_and_discarded(proxy, origin, connect):
    busy = await origin(handlers.fixed(b"busy", status=503))
    good = await origin(handlers.fixed(b"good"))
    worker = await proxy(one_pool(busy, good, routes=[_route({"on": [503]})]))
    client = await connect(worker)
    resp = await client.request(GET)
    assert (resp.status, resp.body) == (200, b"good")  # 503 never reached the client
    assert len(busy.requests) == 1
    # A listed status for a non-idempotent method is answered as is.
    worker = await proxy(one_pool(busy, good, routes=[_route({"on": [503]})]))
    client = await connect(worker)
    resp = await client.request(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
    assert (resp.status, resp.body) == (503, b"busy")


async def test_status_not_retried_by_default(proxy, origin, connect):
    busy = await origin(handlers.fixed(b"busy", status=503))
    good = await origin(handlers.fixed(b"good"))
    worker = await proxy(one_pool(busy, good))
    resp = await (await connect(worker)).request(GET)
    assert (resp.status, resp.body) == (503, b"busy")


async def test_last_answer_is_sent_when_attempts_run_out(proxy, origin, connect):
    busy1 = await origin(handlers.fixed(b"busy1", status=502))
    busy2 = await origin(handlers.fixed(b"busy2", status=502))
    worker = await proxy(one_pool(busy1, busy2, routes=[_route({"on": [502], "attempts": 3})]))
    resp = await (await connect(worker)).request(GET)
    assert (resp.status, resp.body) == (502, b"busy2")  # the server's own answer, not lb's


async def test_body_over_replay_buffer_is_not_retried(proxy, origin, connect):
    crash = await origin(closes_unanswered())
    good = await origin(handlers.echo())
    worker = await proxy(one_pool(crash, good))
    client = await connect(worker)
    small = b"s" * 1000
    resp = await client.request(
        b"PUT /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(small), small)
    )
    assert resp.status == 200 and b'"body_len": 1000' in resp.body  # replayed whole
    big = b"b" * (REPLAY_BUFFER + 1000)
    worker = await proxy(one_pool(crash, good))  # a new one: its first pick is `crash` again
    client = await connect(worker)
    resp = await client.request(
        b"PUT /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
    )
    assert resp.status == 502  # not held whole: cannot be sent again


async def test_budget_stops_a_retry_storm(proxy, origin, connect):
    good = await origin()
    dead = dead_address()
    config = pool_of(dead, good.address, retries={"budget": "0%"})
    # Every first try goes to the dead primary; only a retry reaches the backup.
    config["pools"]["app"]["servers"][1]["backup"] = True
    worker = await proxy(config)
    floor = int(MIN_PER_SECOND * WINDOW)
    statuses = []
    for _ in range(floor + 5):
        client = await connect(worker)
        statuses.append((await client.request(GET)).status)
        client.close()
    assert statuses[:floor] == [200] * floor  # the floor: a quiet pool may still retry
    assert statuses[floor:] == [502] * 5  # then the budget (0% of requests) is spent


def _route(retries: dict[str, Any]) -> dict[str, Any]:
    return {"name": "default", "match": {}, "pool": "app", "retries": retries}


# -- the sans-IO parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "policy"),
    [
        (None, RetryPolicy(1, True, frozenset(), 0.2)),
        (
            {"attempts": 2, "on": ["connect_failure", 502, 503]},
            RetryPolicy(2, True, frozenset({502, 503})),
        ),
        ({"on": [504], "budget": "5%"}, RetryPolicy(1, False, frozenset({504}), 0.05)),
    ],
)
def test_policy_from_config(retries: Any, policy: RetryPolicy) -> None:
    route = {"pool": "app"} if retries is None else {"pool": "app", "retries": retries}
    config = load_config_text(_yaml(route))
    assert RetryPolicy.from_config(config.routes[0].retries) == policy


def test_yaml_on_key_is_not_a_boolean() -> None:
    # YAML 1.1 reads `on:` as true; the key still means `on`.
    text = (
        "version: 1\nlisteners: {web: {bind: '127.0.0.1:0'}}\n"
        "pools: {app: {servers: [{address: '127.0.0.1:1'}]}}\n"
        "routes:\n  - pool: app\n    retries:\n      on: [502]\n"
    )
    assert load_config_text(text).routes[0].retries.on == [502]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        ({"on": [404]}, "only 5xx statuses are retried"),
        ({"on": ["timeout"]}, "routes[0].retries.on[0]"),
        ({"attempts": -1}, "routes[0].retries.attempts"),
        ({"budget": "150%"}, "routes[0].retries.budget"),
    ],
)
def test_bad_retries_are_refused(retries: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(_yaml({"pool": "app", "retries": retries}))
    assert message in str(info.value)


def _yaml(route: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "version": 1,
            "listeners": {"web": {"bind": "127.0.0.1:0"}},
            "pools": {"app": {"servers": [{"address": "127.0.0.1:1"}]}},
            "routes": [route],
        }
    )


def test_policy_allows_attempts_extra_tries() -> None:
    policy = RetryPolicy(attempts=2)
    assert [policy.allows(n) for n in range(4)] == [False, True, True, False]


@pytest.mark.parametrize(
    ("requests", "ratio", "granted"),
    [
        (0, 0.2, 30),  # the floor: 3/s over a 10 s window
        (1000, 0.2, 200),  # 20% of the window's requests
        (1000, 0.0, 30),
        (100, 0.5, 50),
    ],
)
def test_budget_grants(requests: int, ratio: float, granted: int) -> None:
    budget = RetryBudget()
    for i in range(requests):
        budget.record(100.0 + i * 0.001)
    n = 0
    while budget.acquire(101.5, ratio) and n < 10_000:
        n += 1
    assert n == granted


def test_budget_forgets_old_requests_and_retries() -> None:
    budget = RetryBudget()
    for _ in range(1000):
        budget.record(0.5)
    assert sum(budget.acquire(0.6, 0.2) for _ in range(300)) == 200
    assert not budget.acquire(5.0, 0.2)  # still within the window
    assert budget.requests == 1000
    # A window later both the requests and the retries have aged out: the floor again.
    assert sum(budget.acquire(11.0, 0.2) for _ in range(100)) == 30
    assert budget.requests == 0


async def test_many_concurrent_failovers(proxy, origin, connect):
    """Every request of a burst meets the dead server first and still gets an answer."""
    good = await origin()
    worker = await proxy(pool_of(dead_address(), good.address))
    clients = [await connect(worker) for _ in range(10)]
    answers = await asyncio.gather(*(c.request(GET) for c in clients))
    assert all(a.status == 200 for a in answers)
