"""`Answer`: a response lb gives itself instead of asking a server (an error, a redirect, a
cache hit, a 202). Built by request filters, turned into a head by the exchange; compiled with
the hot path (setup.py), as a cache hit makes one per request."""

from __future__ import annotations

from lb.core.errors import Reason, closes_connection
from lb.core.http import ResponseHead


class Answer:
    """A response lb gives itself instead of asking a server."""

    __slots__ = ("body", "close", "dated", "detail", "error", "fields", "raw", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: bytes,
        fields: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        *,
        error: Reason | None = None,
        detail: str = "",
        close: bool = False,
        raw: bytes | None = None,
        dated: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.fields = fields or []
        self.body = body
        self.error = error  # lb refused or failed the request: X-LB-Error, counted as an error
        self.detail = detail  # logged, and in an error's body
        self.close = close  # the connection cannot be reused after it
        # The fields already rendered (b"\r\nName: value"...), instead of `fields`: a cache hit.
        self.raw = raw
        self.dated = dated  # `raw` holds a Date field

    @classmethod
    def refuse(cls, reason: Reason, detail: str) -> Answer:
        """lb's own error (DESIGN.md's table): a plain-text body naming the cause."""
        body = f"{reason.status} {reason.phrase}: {detail}\n".encode()
        fields = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"x-lb-error", reason.name.encode()),
        ]
        return cls(
            reason.status,
            reason.phrase.encode(),
            fields,
            body,
            error=reason,
            detail=detail,
            close=closes_connection(reason),
        )

    def head(self) -> ResponseHead:
        # RFC 9110 §8.6: no Content-Length on a 204; a 304's would claim the 200's length.
        length = None if self.status in (204, 304) else len(self.body)
        raw = self.raw
        if raw is not None:
            return ResponseHead(
                self.status,
                self.reason,
                "1.1",
                None,
                keep_alive=not self.close,
                content_length=length,
                chunked=False,
                raw=raw,
                forward=raw,
                dated=self.dated,
            )
        return ResponseHead(
            self.status,
            self.reason,
            "1.1",
            list(self.fields),
            keep_alive=not self.close,
            content_length=length,
            chunked=False,
        )

    def __repr__(self) -> str:
        why = f" {self.error.name}" if self.error is not None else ""
        return f"<Answer {self.status}{why}>"
