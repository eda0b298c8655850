"""A listener's settings at run time, as every connection on it reads them."""

from __future__ import annotations

from dataclasses import dataclass

from lb.config.base import ResolvedTimeouts
from lb.config.tls import ListenerTlsConfig
from lb.core.sni import SniRoutes


@dataclass(frozen=True)
class ListenerSettings:
    name: str
    mode: str
    bind: str
    max_header_size: int
    max_connections: int | None
    timeouts: ResolvedTimeouts
    pool: str | None
    accept_proxy: bool = False
    # Terminates TLS; the proxy owns the contexts (lb.proxy.tls.contexts).
    tls: ListenerTlsConfig | None = None
    redirect_https: bool = False
    hsts: bytes | None = None  # Strict-Transport-Security value added to responses
    subject_header: bytes | None = None  # lower-case name for the client certificate's subject
    sni: SniRoutes | None = None  # tcp listeners with routes: TLS passthrough by server name
    underscores_in_headers: str = "drop"  # header names with "_": drop | pass | refuse
