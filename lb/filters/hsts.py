"""`hsts` on a listener: Strict-Transport-Security on every answer, the server's and lb's own,
unless the server set its own (RFC 6797 §7.2: only over TLS, which `lb check` enforces)."""

from __future__ import annotations

from lb.core.http import ResponseHead
from lb.filters.context import BuildContext
from lb.proxy.http.pipeline import Filter
from lb.proxy.http.session import Session

FIELD = b"strict-transport-security"


class Hsts(Filter):
    name = "hsts"

    def __init__(self, value: bytes) -> None:
        self.value = value

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        if not (from_server and head.has_field(FIELD)):
            session.add_response_field(FIELD, self.value)


def build(ctx: BuildContext) -> Filter | None:
    hsts = ctx.listener.hsts
    return Hsts(hsts) if hsts is not None else None
