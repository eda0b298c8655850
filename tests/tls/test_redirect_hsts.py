"""redirect_https on a plain listener, and HSTS on a TLS listener."""

from __future__ import annotations

import pytest

from tests.conftest import RawClient, handlers
from tests.tls.conftest import get, tls_connect

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def site(pki, origin, lb):
    app = await origin(handlers.fixed(b"app"))
    own = await origin(handlers.fixed(b"own", headers=[("Strict-Transport-Security", "max-age=1")]))
    pair = pki.pair("site", "example.test")
    worker = await lb(f"""
listeners:
  web: {{bind: "127.0.0.1:0", redirect_https: true}}
  websecure:
    bind: 127.0.0.1:0
    hsts: "max-age=31536000; includeSubDomains"
    tls: {{certificates: [{pair.yaml}]}}
routes:
  - {{match: {{path_prefix: /own}}, pool: own}}
  - {{match: {{}}, pool: app}}
pools:
  app: {{servers: [{{address: "{app.address}"}}]}}
  own: {{servers: [{{address: "{own.address}"}}]}}
""")
    return worker, app


@pytest.mark.parametrize(
    ("request_bytes", "location"),
    [
        (get("example.test:8080", "/a/b?x=1"), "https://example.test/a/b?x=1"),
        (get("Example.TEST", "/"), "https://example.test/"),
        (b"GET http://example.test/p?q HTTP/1.1\r\nHost: example.test\r\n\r\n", None),
        (get("[::1]:8080", "/v6"), "https://[::1]/v6"),
    ],
)
async def test_plain_listener_redirects_every_request(site, connect, request_bytes, location):
    worker, app = site
    client: RawClient = await connect(worker, "web")
    reply = await client.request(request_bytes)
    assert reply.status == 308
    assert reply.header("location") == (location or "https://example.test/p?q")
    assert reply.header("content-length") == "0"
    # Kept alive: the next request on the connection is redirected too.
    assert (await client.request(get("example.test", "/next"))).status == 308
    assert not app.requests  # nothing reached a server


async def test_redirect_of_a_post_keeps_method_semantics(site, connect) -> None:
    worker, app = site
    client = await connect(worker, "web")
    body = b"x" * 10
    reply = await client.request(
        b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\n" + body
    )
    assert reply.status == 308  # 308, not 301: the client repeats the POST
    assert reply.header("location") == "https://example.test/form"
    assert not app.requests


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.0\r\n\r\n", get("evil.test/x", "/"), get("a b", "/"), get("u@evil.test")],
)
async def test_redirect_needs_a_plain_host(site, connect, request_bytes) -> None:
    worker, _ = site
    client = await connect(worker, "web")
    reply = await client.request(request_bytes)
    assert reply.status == 400
    assert reply.header("location") is None


async def test_hsts_on_tls_responses_unless_the_server_sets_it(site, pki) -> None:
    worker, _ = site
    client = await tls_connect(worker.addresses["websecure"], pki.client_context(), "example.test")
    reply = await client.request(get("example.test"))
    assert reply.status == 200 and reply.body == b"app"
    assert reply.all("strict-transport-security") == ["max-age=31536000; includeSubDomains"]
    reply = await client.request(get("example.test", "/own"))
    assert reply.all("strict-transport-security") == ["max-age=1"]
    client.close()


async def test_hsts_on_lbs_own_answers_too(site, pki) -> None:
    worker, app = site
    client = await tls_connect(worker.addresses["websecure"], pki.client_context(), "example.test")
    reply = await client.request(b"GET / HTTP/1.1\r\n\r\n")  # no Host: lb answers 400 itself
    assert reply.status == 400
    assert reply.all("strict-transport-security") == ["max-age=31536000; includeSubDomains"]
    assert not app.requests
    client.close()


async def test_no_hsts_over_plain_http(site, connect) -> None:
    worker, _ = site
    client = await connect(worker, "web")
    reply = await client.request(b"GET / HTTP/1.1\r\n\r\n")
    assert reply.status == 400
    assert reply.all("strict-transport-security") == []


async def test_hsts_on_the_408_for_a_head_not_finished_in_time(pki, origin, lb) -> None:
    app = await origin(handlers.fixed(b"app"))
    pair = pki.pair("site", "example.test")
    worker = await lb(f"""
listeners:
  websecure:
    bind: 127.0.0.1:0
    hsts: "max-age=31536000"
    timeouts: {{client_header: 300ms}}
    tls: {{certificates: [{pair.yaml}]}}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{app.address}"}}]}}}}
""")
    client = await tls_connect(worker.addresses["websecure"], pki.client_context(), "example.test")
    await client.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n")  # the head never ends
    reply = await client.response(timeout=5)
    assert reply.status == 408
    assert reply.all("strict-transport-security") == ["max-age=31536000"]
    client.close()
