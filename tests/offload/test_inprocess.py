"""Queue offload in one `lb run` worker with no Redis: 202 and a job URL, the job run by the
worker's own consumers, its result served from /_lb/jobs/{id}; and what the route refuses."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lb.proxy.proxy import Proxy
from tests.conftest import Message, Origin, RawClient, handlers, wait_until

Start = Callable[..., Awaitable[Proxy]]
Connect = Callable[..., Awaitable[RawClient]]


def offload_config(origin: Origin, mode: str = "always", **queue: Any) -> dict[str, Any]:
    return {
        "listeners": {"web": {}},
        "routes": [
            {
                "name": "reports",
                "match": {"path_prefix": "/reports/"},
                "pool": "app",
                "offload": {"queue": "reports", "mode": mode},
            },
            {"name": "default", "match": {}, "pool": "app"},
        ],
        "pools": {"app": {"servers": [{"address": origin.address}]}},
        "queues": {"reports": {"backoff": {"base": "10ms", "max": "20ms"}, **queue}},
    }


def post(path: str, body: bytes = b"", headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: example.com\r\n{headers}content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: example.com\r\n{headers}\r\n".encode()


async def job_result(client: RawClient, location: str, timeout: float = 5.0) -> Message:
    """GET the job URL until the stored response replaces the status document."""
    last: list[Message] = []

    async def done() -> bool:
        answer = await client.request(get(location))
        last[:] = [answer]
        return answer.header("x-lb-job") is not None and answer.header("retry-after") is None

    async with asyncio.timeout(timeout):
        while not await done():
            await asyncio.sleep(0.02)
    return last[0]


async def test_an_offloaded_request_gets_202_then_its_response(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.echo())
    worker = await proxy(offload_config(o))
    client = await connect(worker)
    accepted = await client.request(post("/reports/q1?x=1", b"the body", "x-user: 7\r\n"))
    assert accepted.status == 202
    document = json.loads(accepted.body)
    location = accepted.header("location")
    assert location == f"/_lb/jobs/{document['id']}" == document["location"]
    assert document["status"] == "queued" and len(document["id"]) == 32  # 128 bits, hex
    assert accepted.header("retry-after") == "1"

    answer = await job_result(client, location)
    assert answer.status == 200 and answer.header("x-lb-job") == document["id"]
    sent = json.loads(answer.body)
    assert (sent["method"], sent["target"], sent["body_len"]) == ("POST", "/reports/q1?x=1", 8)
    names = {name.lower(): value for name, value in sent["headers"]}
    assert names["x-user"] == "7" and names["x-forwarded-for"] == "127.0.0.1"
    assert names["host"] == "example.com"
    assert len(o.requests) == 1
    # The other route is proxied as usual.
    assert (await client.request(get("/other"))).status == 200


async def test_a_body_sent_after_its_head_is_stored_whole_and_one_that_stops_is_408(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.echo())
    config = offload_config(o)
    config["routes"][0]["timeouts"] = {"request": "500ms"}  # the wait for the body
    worker = await proxy(config)
    client = await connect(worker)
    head = b"POST /reports/late HTTP/1.1\r\nhost: example.com\r\ncontent-length: 8\r\n\r\n"
    await client.send(head + b"the ")
    accepted = await client.request(b"body")
    assert accepted.status == 202
    location = accepted.header("location")
    assert location is not None
    sent = json.loads((await job_result(client, location)).body)
    assert sent["body_len"] == 8 and sent["body_sha256"] == hashlib.sha256(b"the body").hexdigest()

    client = await connect(worker)
    await client.send(head + b"the ")  # and no more
    stalled = await client.response(timeout=5)
    assert stalled.status == 408 and stalled.header("x-lb-error") == "request_timeout"
    assert len(o.requests) == 1  # the stalled one was neither queued nor proxied


async def test_prefer_mode_offloads_only_when_asked(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.fixed(b"direct"))
    worker = await proxy(offload_config(o, mode="prefer"))
    client = await connect(worker)
    direct = await client.request(post("/reports/1", b"x"))
    assert direct.status == 200 and direct.body == b"direct"
    accepted = await client.request(post("/reports/1", b"x", "prefer: respond-async\r\n"))
    assert accepted.status == 202


async def test_status_while_running_and_a_failing_job_ends_in_the_dead_letters(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.fixed(b"down", status=503))
    worker = await proxy(offload_config(o, max_attempts=3))
    client = await connect(worker)
    accepted = await client.request(post("/reports/1", b"x"))
    location = accepted.header("location")
    assert location is not None
    last: list[dict[str, Any]] = []

    async def failed() -> bool:
        answer = await client.request(get(location))
        assert answer.status == 200
        last[:] = [json.loads(answer.body)]
        return bool(last[0]["status"] == "failed")

    async with asyncio.timeout(5):
        while not await failed():
            await asyncio.sleep(0.02)
    assert last[0]["attempt"] == 3 and last[0]["reason"] == "server answered 503"
    assert len(o.requests) == 3
    stats = await worker.stores.jobs.stats("reports")
    assert stats.dead == 1
    assert await worker.stores.jobs.replay_dead("reports") == 1
    await wait_until(lambda: len(o.requests) == 6)


async def test_a_repeated_idempotency_key_is_one_job_and_one_origin_call(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.fixed(b"paid"))
    worker = await proxy(offload_config(o))
    client = await connect(worker)
    key = "idempotency-key: pay-1\r\n"
    first = await client.request(post("/reports/pay", b"100", key))
    again = await client.request(post("/reports/pay", b"100", key))
    assert first.status == again.status == 202
    assert first.body == again.body and first.header("location") == again.header("location")
    other = await client.request(post("/reports/pay", b"999", key))
    assert other.status == 422 and other.header("x-lb-error") == "idempotency_conflict"
    location = first.header("location")
    assert location is not None
    answer = await job_result(client, location)
    assert answer.body == b"paid"
    assert len(o.requests) == 1


async def test_refusals(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.never())
    worker = await proxy(offload_config(o, max_length=1, max_body_size=10))
    client = await connect(worker)
    assert (await client.request(post("/reports/1", b"x"))).status == 202
    full = await client.request(post("/reports/2", b"x"))
    assert full.status == 503 and full.header("x-lb-error") == "queue_full"
    assert full.header("retry-after") is not None and b"queue reports" in full.body
    client = await connect(worker)
    big = await client.request(post("/reports/3", b"x" * 11))
    assert big.status == 413 and big.header("x-lb-error") == "body_too_large"
    client = await connect(worker)
    chunked = (
        b"POST /reports/4 HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
    )
    big = await client.request(chunked)
    assert big.status == 413
    client = await connect(worker)
    unknown = await client.request(get("/_lb/jobs/" + "0" * 32))
    assert unknown.status == 404 and unknown.header("x-lb-error") == "job_not_found"
    assert b"result_ttl" in unknown.body


async def test_a_store_error_it_does_not_name_is_503_and_never_proxied(
    proxy: Start,
    origin: Callable[..., Awaitable[Origin]],
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug or a malformed store reply: the job was not stored, so 503 queue_unavailable; the
    request never goes to the pool while the client waits (it may be slow, or unsafe twice)."""
    o = await origin(handlers.echo())
    worker = await proxy(offload_config(o))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a reply the store did not expect")

    monkeypatch.setattr(worker.stores.jobs, "enqueue", broken)
    client = await connect(worker)
    refused = await client.request(post("/reports/1", b"x"))
    assert refused.status == 503 and refused.header("x-lb-error") == "queue_unavailable"
    assert b"did not expect" in refused.body and refused.header("retry-after") is not None
    assert o.requests == []


async def test_an_expired_result_answers_404(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.fixed(b"soon gone"))
    worker = await proxy(offload_config(o, result_ttl="200ms"))
    client = await connect(worker)
    location = (await client.request(post("/reports/1", b"x"))).header("location")
    assert location is not None
    assert (await job_result(client, location)).body == b"soon gone"

    async with asyncio.timeout(5):
        while (answer := await client.request(get(location))).status != 404:
            await asyncio.sleep(0.02)
    assert answer.header("x-lb-error") == "job_not_found"


async def test_cancel_a_queued_job_and_owner_only_jobs(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin(handlers.fixed(b"mine"))
    worker = await proxy(offload_config(o, owner="header:authorization", concurrency=1))
    # Stop the consumers so the job stays queued, then cancel it.
    await worker.offload.stop(0.1)
    client = await connect(worker)
    mine = "authorization: Bearer alice\r\n"
    location = (await client.request(post("/reports/1", b"x", mine))).header("location")
    assert location is not None
    theirs = await client.request(get(location, "authorization: Bearer mallory\r\n"))
    assert theirs.status == 404
    assert (await client.request(get(location))).status == 404  # no credential: not the owner
    mine_status = await client.request(get(location, mine))
    assert mine_status.status == 200 and json.loads(mine_status.body)["status"] == "queued"
    delete = f"DELETE {location} HTTP/1.1\r\nhost: h\r\n{mine}\r\n".encode()
    cancelled = await client.request(delete)
    assert cancelled.status == 200 and json.loads(cancelled.body)["status"] == "cancelled"
    again = await client.request(delete)
    assert again.status == 409
    assert o.requests == []
