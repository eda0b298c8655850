"""The answer of a listener with `redirect_https`: 308 to the same host and path on https.

308 rather than 301 (RFC 9110 §15.4.9): the client repeats the request with the same method and
body, so a POST stays a POST. The port the client used is dropped (it is the plain listener's),
so the client goes to https on its default port, 443.

The Host header is written back into a response header, so it is accepted only when it is a
plain host name or address: anything else (a path, spaces, a userinfo part) is refused rather
than turned into an open redirect or a header injection.
"""

from __future__ import annotations

import re

from lb.core.http import RequestHead

__all__ = ["https_location", "redirect_response"]

_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9\-_.]*[a-z0-9])?|\[[0-9a-f:.]+\])$")


def https_location(head: RequestHead) -> bytes | None:
    """`https://HOST/target` for the request, or None when its Host cannot be used."""
    host = head.host
    if not host or not _HOST.match(host):
        return None
    target = head.target
    if not target.startswith(b"/"):
        # Absolute form (RFC 9112 §3.2.2) "http://h/p?q": its path and query; "*": the root.
        scheme_end = target.find(b"://")
        slash = target.find(b"/", scheme_end + 3) if scheme_end != -1 else -1
        target = target[slash:] if slash != -1 else b"/"
    return b"https://" + host.encode("ascii") + target


def redirect_response(location: bytes, request_id: bytes, close: bool) -> bytes:
    head = [
        b"HTTP/1.1 308 Permanent Redirect\r\n",
        b"location: " + location + b"\r\n",
        b"content-length: 0\r\n",
        b"x-request-id: " + request_id + b"\r\n",
    ]
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head)
