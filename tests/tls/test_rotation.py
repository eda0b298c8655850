"""Certificates rotate without a restart: on file change and on reload. Connections already
open keep their session; a broken new pair is refused with a log line and the old one serves."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from lb.config import load_config_text
from lb.proxy import proxy as server_module
from tests.conftest import handlers, wait_until
from tests.integration.helpers import free_port
from tests.tls.conftest import Pair, Pki, get, peer_serial, serial_of, tls_connect

pytestmark = pytest.mark.timeout(30)


def site_config(origin_address: str, *pairs: Pair) -> str:
    certs = "\n".join(f"        - {p.yaml}" for p in pairs)
    return f"""version: 1
access_log: {{enabled: false}}
listeners:
  web:
    bind: 127.0.0.1:0
    tls:
      certificates:
{certs}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{origin_address}"}}]}}}}
"""


def replace(pki: Pki, target: Pair, *identities: str, **kw: object) -> int:
    """Write a freshly issued certificate and key over `target`'s files; its serial."""
    new = pki.pair("staged", *identities, **kw)
    target.key.write_bytes(new.key.read_bytes())
    target.cert.write_bytes(new.cert.read_bytes())
    return serial_of(new)


async def serial_seen(worker, pki: Pki, name: str = "a.test") -> int:
    client = await tls_connect(worker.addresses["web"], pki.client_context(), name)
    try:
        return peer_serial(client)
    finally:
        client.close()


async def wait_for_serial(worker, pki: Pki, serial: int, timeout: float = 5.0) -> None:
    async def seen() -> bool:
        return await serial_seen(worker, pki) == serial

    await wait_until(seen, timeout, interval=0.05, what=f"new connections to get serial {serial}")


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "CERTIFICATE_CHECK_INTERVAL", 0.05)


async def test_file_change_is_seen_by_new_connections_old_ones_keep_going(
    pki, origin, lb, fast_watch
) -> None:
    app = await origin(handlers.fixed())
    site = pki.pair("site", "a.test")
    first = serial_of(site)
    worker = await lb(site_config(app.address, site))
    old = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    assert (await old.request(get())).status == 200

    second = replace(pki, site, "a.test")
    await wait_for_serial(worker, pki, second)

    # The connection opened before the rotation still works, on its original certificate.
    assert peer_serial(old) == first
    assert (await old.request(get())).status == 200
    old.close()


@pytest.mark.parametrize("breakage", ["mismatch", "expired", "garbage", "missing"])
async def test_a_broken_new_pair_is_refused_and_the_old_one_serves(
    pki, origin, lb, fast_watch, caplog, breakage
) -> None:
    app = await origin(handlers.fixed())
    site = pki.pair("site", "a.test")
    first = serial_of(site)
    worker = await lb(site_config(app.address, site))
    caplog.set_level(logging.ERROR, logger="lb.tls")

    if breakage == "mismatch":  # a new certificate, the old key
        site.cert.write_bytes(pki.pair("other", "a.test").cert.read_bytes())
        expected = "certificates[0].key:"
    elif breakage == "expired":
        past = datetime.now(UTC) - timedelta(days=10)
        replace(pki, site, "a.test", not_before=past - timedelta(days=10), not_after=past)
        expected = "expired on"
    elif breakage == "garbage":
        site.cert.write_bytes(b"not a certificate\n")
        expected = "no PEM certificate"
    else:
        site.key.unlink()
        expected = "no such file"

    await wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records))
    message = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert "listeners.web.tls.certificates[0]" in message
    assert expected in message
    assert await serial_seen(worker, pki) == first
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    assert (await client.request(get())).status == 200
    client.close()

    # Once the files are good again they are picked up.
    fixed = replace(pki, site, "a.test")
    await wait_for_serial(worker, pki, fixed)


async def test_reload_rereads_certificates_and_their_names(pki, origin, lb, monkeypatch) -> None:
    # No file watching here: only the reload (SIGHUP, POST /api/v1/reload) rotates.
    monkeypatch.setattr(server_module, "CERTIFICATE_CHECK_INTERVAL", 3600.0)
    app = await origin(handlers.fixed())
    site = pki.pair("site", "a.test")
    worker = await lb(site_config(app.address, site))

    second = replace(pki, site, "a.test")
    extra = pki.pair("extra", "b.test")
    worker.reload(load_config_text(site_config(app.address, site, extra)))
    assert await serial_seen(worker, pki) == second
    assert await serial_seen(worker, pki, "b.test") == serial_of(extra)


async def test_reload_applies_a_new_handshake_timeout(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    site = pki.pair("site", "a.test")
    worker = await lb(site_config(app.address, site))  # handshake_timeout: 10s, the default
    shorter = site_config(app.address, site).replace(
        "    tls:\n", "    tls:\n      handshake_timeout: 300ms\n"
    )
    worker.reload(load_config_text(shorter))
    reader, writer = await asyncio.open_connection(*worker.addresses["web"])
    writer.write(b"\x16\x03\x01\x02")  # half a record header: the handshake never finishes
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        assert await reader.read(65536) == b""
    assert loop.time() - started < 3
    writer.close()


async def test_a_reload_can_add_and_remove_tls_on_a_listener(pki, origin, lb, connect) -> None:
    app = await origin(handlers.fixed())
    port = free_port()  # the same address each time, as a config would have it
    with_tls = site_config(app.address, pki.pair("site", "a.test")).replace(
        "bind: 127.0.0.1:0", f"bind: 127.0.0.1:{port}"
    )
    plain = with_tls.split("    tls:\n")[0] + "routes:" + with_tls.split("routes:")[1]
    worker = await lb(plain)
    assert (await (await connect(worker)).request(get())).status == 200

    worker.reload(load_config_text(with_tls))
    await worker.listening  # the listener is bound again, now terminating TLS
    assert worker.addresses["web"] == ("127.0.0.1", port)
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    assert (await client.request(get())).status == 200
    client.close()

    worker.reload(load_config_text(plain))
    await worker.listening
    assert worker.addresses["web"] == ("127.0.0.1", port)
    assert (await (await connect(worker)).request(get())).status == 200
