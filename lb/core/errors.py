"""Errors lb answers itself, each with its status and the `X-LB-Error` reason (DESIGN.md).

The parsers and the proxy raise or return these; the I/O shell turns them into a response with
a short plain-text body naming the cause. Nothing here does I/O.
"""

from __future__ import annotations

from enum import Enum, unique


@unique
class Reason(Enum):
    """(status, text). The member name is the `X-LB-Error` value users grep their logs for.

    Values must differ (`unique`): two equal tuples would make one member an alias of the
    other, answering the other's name. A third item tells apart reasons sharing a status."""

    bad_request = (400, "Bad Request")
    request_timeout = (408, "Request Timeout")
    no_route = (404, "Not Found")
    job_not_found = (404, "Not Found", "job")  # /_lb/jobs/{id}: unknown, or its result expired
    body_too_large = (413, "Content Too Large")
    headers_too_large = (431, "Request Header Fields Too Large")
    idempotency_conflict = (422, "Unprocessable Content")  # a key reused for another request
    rate_limited = (429, "Too Many Requests")
    backend_failed = (502, "Bad Gateway")
    no_healthy_server = (503, "Service Unavailable")
    queue_full = (503, "Service Unavailable", "queue")  # every server full, queue too
    queue_timeout = (503, "Service Unavailable", "wait")  # waited in the pool's queue too long
    # rate_limit.on_store_error: deny, and Redis did not answer within its timeout
    rate_limit_unavailable = (503, "Service Unavailable", "rate_limit")
    queue_unavailable = (503, "Service Unavailable", "store")  # offload: Redis down
    backend_timeout = (504, "Gateway Timeout")
    not_implemented = (501, "Not Implemented")  # a transfer coding lb cannot decode

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def phrase(self) -> str:
        return self.value[1]


class HTTPError(Exception):
    """A request lb must refuse; `detail` names the cause for the body and the log."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"HTTPError({self.reason.name}, {self.detail!r})"


def error_response(
    reason: Reason,
    detail: str,
    request_id: bytes | None = None,
    close: bool = False,
    hsts: bytes | None = None,
) -> bytes:
    """The complete response bytes; always `Connection: close` for 400/408/413/431/501, whose
    connection cannot be trusted to be in sync any more, and when the caller closes anyway
    (`close`, e.g. a request body left unread). `hsts`: the listener's
    Strict-Transport-Security value, which lb's own answers carry as proxied ones do."""
    body = f"{reason.status} {reason.phrase}: {detail}\n".encode()
    close = close or reason in _CLOSES
    head = [
        f"HTTP/1.1 {reason.status} {reason.phrase}\r\n".encode(),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-lb-error: " + reason.name.encode() + b"\r\n",
    ]
    if request_id:
        head.append(b"x-request-id: " + request_id + b"\r\n")
    if hsts is not None:
        head.append(b"strict-transport-security: " + hsts + b"\r\n")
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


_CLOSES = frozenset(
    {
        Reason.bad_request,
        Reason.request_timeout,
        Reason.headers_too_large,
        Reason.body_too_large,
        Reason.not_implemented,  # the body's length is unknown: the stream cannot go on
    }
)


def closes_connection(reason: Reason) -> bool:
    return reason in _CLOSES
