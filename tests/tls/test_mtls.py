"""Client certificates (mTLS): required or optional, verified against client_ca, and the
verified subject passed to servers in the configured header (never the client's own)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from dataclasses import dataclass

import pytest

from tests.conftest import handlers, wait_until
from tests.l4.conftest import metric
from tests.tls.conftest import Pki, get, tls_connect

pytestmark = pytest.mark.timeout(30)

REFUSED = (ssl.SSLError, ConnectionError)


async def start(pki: Pki, origin, lb, mode: str):
    app = await origin(handlers.echo())
    pair = pki.pair("site", "a.test")
    worker = await lb(f"""
listeners:
  web:
    bind: 127.0.0.1:0
    tls:
      certificates: [{pair.yaml}]
      client_ca: '{pki.ca_file}'
      client_cert: {mode}
      client_subject_header: X-Client-Subject
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{app.address}"}}]}}}}
""")
    return worker, app


def handshake_failures() -> float:
    return metric("lb_connection_errors_total", listener="web", cause="tls_handshake")


def with_client_cert(pki: Pki, ca=None, **kw) -> ssl.SSLContext:
    ctx = pki.client_context(**kw)
    leaf = (ca or pki.ca).issue_cert("client.test", common_name="alice")
    leaf.configure_cert(ctx)
    return ctx


def subjects(reply) -> list[str]:
    return [v for k, v in json.loads(reply.body)["headers"] if k.lower() == "x-client-subject"]


@pytest.mark.parametrize("mode", ["required", "optional"])
async def test_a_verified_client_certificate_is_passed_on(pki, origin, lb, mode) -> None:
    worker, _ = await start(pki, origin, lb, mode)
    client = await tls_connect(worker.addresses["web"], with_client_cert(pki), "a.test")
    # A subject the client writes itself is dropped: only lb sets this header.
    reply = await client.request(get(extra="X-Client-Subject: CN=admin\r\n"))
    assert reply.status == 200
    [subject] = subjects(reply)
    assert subject.startswith("CN=alice") and "admin" not in subject
    client.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("certificate", ["none", "untrusted"])
async def test_required_refuses_at_the_handshake(pki, origin, lb, version, certificate) -> None:
    worker, app = await start(pki, origin, lb, "required")
    if certificate == "none":
        ctx = pki.client_context(maximum_version=version)
    else:
        ctx = with_client_cert(pki, pki.other_ca, maximum_version=version)
    before = handshake_failures()
    if version is ssl.TLSVersion.TLSv1_2:
        with pytest.raises(REFUSED):  # in the handshake itself
            await tls_connect(worker.addresses["web"], ctx, "a.test")
    else:
        # In TLS 1.3 the client finishes its side first and reads the server's alert with its
        # first read.
        with pytest.raises(REFUSED):
            client = await tls_connect(worker.addresses["web"], ctx, "a.test")
            await client.request(get())
    # Refused by lb's handshake, not later by a request: counted as a failed handshake.
    await wait_until(lambda: handshake_failures() == before + 1)
    assert not app.requests


async def test_optional_lets_a_client_without_a_certificate_in(pki, origin, lb) -> None:
    worker, _ = await start(pki, origin, lb, "optional")
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    reply = await client.request(get(extra="X-Client-Subject: CN=admin\r\n"))
    assert reply.status == 200
    assert subjects(reply) == []
    client.close()

    # An untrusted certificate is still refused, even when one is optional.
    with pytest.raises(REFUSED):
        bad = await tls_connect(
            worker.addresses["web"], with_client_cert(pki, pki.other_ca), "a.test"
        )
        await bad.request(get())


@dataclass
class Visit:
    status: bytes  # the response's status line
    session: ssl.SSLSession | None
    resumed: bool


def visit(address: tuple[str, int], ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> Visit:
    """One request on a new connection with a blocking client, offering `session` (asyncio's
    streams cannot offer one)."""
    raw = socket.create_connection(address, timeout=5)
    with raw, ctx.wrap_socket(raw, server_hostname="a.test", session=session) as sock:
        sock.sendall(get(extra="Connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):  # (TLS 1.3 tickets arrive with the answer)
            data += chunk
        return Visit(data.split(b"\r\n", 1)[0], sock.session, sock.session_reused)


@pytest.mark.parametrize("how", ["file_change", "reload"])
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_no_session_from_before_a_client_ca_change_is_resumed(
    pki, origin, lb, version, how
) -> None:
    worker, app = await start(pki, origin, lb, "required")
    address = worker.addresses["web"]
    ctx = with_client_cert(pki, maximum_version=version)
    first = await asyncio.to_thread(visit, address, ctx, None)
    again = await asyncio.to_thread(visit, address, ctx, first.session)
    assert first.status == again.status == b"HTTP/1.1 200 OK"
    assert again.resumed  # sessions are resumed, so what follows tests something

    # The client's CA is no longer trusted: its old session must not let it in unchecked.
    pki.ca_file.write_bytes(pki.other_ca.cert_pem.bytes())
    if how == "file_change":
        assert worker.tls["web"].refresh()  # what the worker's file watch calls
    else:
        worker.reload(worker.runtime.config)  # SIGHUP, POST /api/v1/reload
    served = len(app.requests)
    with pytest.raises(REFUSED):
        await asyncio.to_thread(visit, address, ctx, again.session)
    assert len(app.requests) == served


async def test_a_certificate_chosen_by_sni_still_asks_for_the_client_certificate(
    pki, origin, lb
) -> None:
    # The SNI callback switches each handshake to the chosen certificate's context: the
    # client certificate must be checked there too.
    app = await origin(handlers.echo())
    first, second = pki.pair("a", "a.test"), pki.pair("b", "b.test")
    worker = await lb(f"""
listeners:
  web:
    bind: 127.0.0.1:0
    tls:
      certificates: [{first.yaml}, {second.yaml}]
      client_ca: '{pki.ca_file}'
      client_subject_header: X-Client-Subject
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{app.address}"}}]}}}}
""")
    client = await tls_connect(worker.addresses["web"], with_client_cert(pki), "b.test")
    reply = await client.request(get("b.test"))
    assert reply.status == 200
    [subject] = subjects(reply)
    assert subject.startswith("CN=alice")
    client.close()
    ctx = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(REFUSED):
        await tls_connect(worker.addresses["web"], ctx, "b.test")


async def test_a_reload_that_leaves_tls_alone_keeps_sessions(pki, origin, lb) -> None:
    worker, _ = await start(pki, origin, lb, "required")
    address = worker.addresses["web"]
    ctx = with_client_cert(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    first = await asyncio.to_thread(visit, address, ctx, None)
    worker.reload(worker.runtime.config)  # e.g. a pool weight changed: nothing of the listener
    again = await asyncio.to_thread(visit, address, ctx, first.session)
    assert again.status == b"HTTP/1.1 200 OK"
    assert again.resumed
