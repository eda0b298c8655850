"""`listeners.NAME`: where lb accepts connections (`bind`), in which `mode` (http, tcp, udp),
and, for tcp listeners, the SNI `routes` of TLS passthrough. The routes that serve http
listeners are the top-level `routes` (`lb.config.routes`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from lb.config.base import Model, Size, Timeouts, split_address
from lb.config.tls import ListenerTlsConfig


class TcpRouteMatch(Model):
    sni: str  # "a.example.com", or "*.example.com" (one or more labels before the suffix)


class TcpRoute(Model):
    """A tcp listener's route: TLS passthrough to `pool` when the ClientHello names `sni`."""

    match: TcpRouteMatch
    pool: str


UnderscoresInHeaders = Literal["drop", "pass", "refuse"]


class Listener(Model):
    bind: str
    mode: Literal["http", "tcp", "udp"] = "http"
    pool: str | None = None  # tcp/udp: where every connection goes
    max_connections: Annotated[int, Field(ge=1)] | None = None
    max_header_size: Size | None = None
    timeouts: Timeouts | None = None
    accept_proxy: bool = False  # the connection starts with a PROXY v1/v2 header
    redirect_https: bool = False  # plain http: answer every request 308 to https://same-host/path
    hsts: str | None = None  # Strict-Transport-Security value, e.g. "max-age=31536000"
    tls: ListenerTlsConfig | None = None  # terminate TLS (http listeners)
    routes: list[TcpRoute] | None = None  # tcp: TLS passthrough by SNI, first match wins
    # Header names with "_": dropped before routing and forwarding [drop], kept, or 400.
    underscores_in_headers: UnderscoresInHeaders | None = None

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        split_address(v)
        return v
