"""Key-exchange groups on TLS listeners: Mozilla intermediate's X25519, P-256 and P-384 by
default (OpenSSL 3 alone also offers X448 and P-521), or the listener's `tls.groups`."""

from __future__ import annotations

import ssl

import pytest
import trustme

from lb.config import load_config_text
from lb.config.effective import effective
from lb.proxy.tls.groups import DEFAULT_GROUPS, check_groups, set_groups
from tests.conftest import config_problems, handlers
from tests.tls.conftest import Pki, get, one_listener_config, tls_connect

pytestmark = pytest.mark.timeout(30)

REFUSED = (ssl.SSLError, ConnectionError)
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def only(pki: Pki, curve: str, version: str) -> ssl.SSLContext:
    """A client that offers one group (set_ecdh_curve on a client context restricts its
    supported_groups to that one) over one TLS version."""
    v = VERSIONS[version]
    ctx = pki.client_context(minimum_version=v, maximum_version=v)
    ctx.set_ecdh_curve(curve)
    return ctx


async def handshake(address: tuple[str, int], ctx: ssl.SSLContext) -> bool:
    try:
        client = await tls_connect(address, ctx, "a.test")
    except REFUSED:
        return False
    try:
        return (await client.request(get())).status == 200
    except REFUSED:
        return False  # TLS 1.3: the server's refusal may come after the client's Finished
    finally:
        client.close()


def rsa_listener(pki: Pki, address: str) -> str:
    """An RSA certificate: in TLS 1.2 an ECDSA one also needs its own curve among the client's
    groups, which would refuse a one-group client for another reason than lb's groups."""
    pair = pki.pair("rsa", "a.test", key_type=trustme.KeyType.RSA)
    return f"""
listeners:
  web:
    bind: 127.0.0.1:0
    tls: {{certificates: [{pair.yaml}]}}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{address}"}}]}}}}
"""


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_default_groups_are_mozilla_intermediate(pki, origin, lb, version) -> None:
    app = await origin(handlers.fixed())
    worker = await lb(rsa_listener(pki, app.address))
    address = worker.addresses["web"]
    for curve in ("X25519", "prime256v1", "secp384r1"):
        assert await handshake(address, only(pki, curve, version)), curve
    for curve in ("X448", "secp521r1"):
        assert not await handshake(address, only(pki, curve, version)), curve


async def test_tls_groups_replaces_the_default(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    config = one_listener_config(pki, app.address, tls_extra="      groups: [X448, P-521]")
    worker = await lb(config)
    address = worker.addresses["web"]
    assert await handshake(address, only(pki, "X448", "1.3"))
    assert await handshake(address, only(pki, "secp521r1", "1.3"))
    assert not await handshake(address, only(pki, "X25519", "1.3"))


def test_lb_check_refuses_unknown_groups(pki) -> None:
    config = one_listener_config(pki, "127.0.0.1:9", tls_extra="      groups: [X25519, P-999]")
    (problem,) = config_problems("version: 1\n" + config)
    assert problem.startswith("listeners.web.tls.groups: OpenSSL refuses the groups X25519:P-999")
    config = one_listener_config(pki, "127.0.0.1:9", tls_extra="      groups: []")
    assert any("listeners.web.tls.groups" in p for p in config_problems("version: 1\n" + config))


def test_print_shows_the_groups(pki) -> None:
    config = load_config_text("version: 1\n" + one_listener_config(pki, "127.0.0.1:9"))
    tls = effective(config)["listeners"]["web"]["tls"]
    assert tls["groups"] == ["X25519", "P-256", "P-384"]
    assert (tls["min_version"], tls["handshake_timeout"]) == ("1.2", "10s")


def test_groups_helpers() -> None:
    assert check_groups(list(DEFAULT_GROUPS)) is None
    assert check_groups(["X25519:X448"]) is not None  # one name per item
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    options = ctx.options
    set_groups(ctx, ["P-256"])
    assert ctx.options == options  # the pointer probe left the options as they were
