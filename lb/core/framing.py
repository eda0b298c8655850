"""The request framing rules lb enforces before a byte goes to a server (sans-IO): RFC 9112
§6 (one unambiguous body length), §3.2 (Host), §3.2.2 (absolute-form targets), and, for
lenient parsers, the bytes a head may hold. Anything a server behind lb could read differently
from lb is refused with the status the error table gives (request smuggling).
"""

from __future__ import annotations

import re
from typing import Final

from lb.core.errors import HTTPError, Reason
from lb.core.http import RequestHead


def check_request_framing(head: RequestHead) -> None:
    """RFC 9112 §6.1-§6.3 and §3.2, applied strictly: anything a server behind lb could read
    differently from lb is refused (request smuggling). Raises HTTPError(bad_request)."""
    if head.version != "1.1" and head.version != "1.0":
        # HTTP/0.9 (llhttp's reading of a request line without a version), "HTTP/2.0" (an h2
        # preface sent in clear) and the like: lb would forward them as HTTP/1.1.
        raise HTTPError(Reason.bad_request, f"unsupported HTTP version {head.version}")
    repeated = head.repeated
    if repeated is not None:
        for name in (b"content-length", b"transfer-encoding", b"host"):
            if name in repeated:
                raise HTTPError(Reason.bad_request, f"more than one {name.decode()} header")
    index = head.index
    te = index.get(b"transfer-encoding")
    cl = index.get(b"content-length")
    if te is not None:
        if cl is not None:
            # §6.1: "a server MAY reject a request that contains both ... and ought to".
            raise HTTPError(Reason.bad_request, "both Content-Length and Transfer-Encoding")
        if head.version != "1.1":
            raise HTTPError(Reason.bad_request, "Transfer-Encoding in an HTTP/1.0 request")
        check_transfer_coding(te)
        head.chunked = True
    elif cl is not None:
        stripped = cl.strip(b" \t")
        if not stripped.isdigit() or len(stripped) > 18:
            raise HTTPError(Reason.bad_request, "invalid Content-Length")
        head.content_length = int(stripped)
    # §3.2: "A server MUST respond with a 400 ... to any HTTP/1.1 request message that lacks a
    # Host header field and to any request message that contains more than one" (above).
    if b"host" not in index and head.version == "1.1":
        raise HTTPError(Reason.bad_request, "missing Host header")
    target = head.target
    if target[:1] != b"/" and target != b"*":
        _absolute_form(head)


def check_transfer_coding(value: bytes) -> None:
    """A request's Transfer-Encoding must be exactly `chunked`, the one coding lb decodes.

    RFC 9112 §6.3: "If a Transfer-Encoding header field is present in a request and the
    chunked transfer coding is not the final encoding, ... the server MUST respond with the
    400 (Bad Request) status code and then close the connection" (so: chunked first, or
    twice). §6.1: "A server that receives a request message with a transfer coding it does
    not understand SHOULD respond with 501 (Not Implemented)": any other coding (gzip,
    identity, a parameter) gets 501, and the connection closes too, as its body cannot be
    framed. (Read strictly, §6.3 would make a lone `gzip` a 400; 501 names the cause, as
    nginx does.)"""
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    codings = [c for c in codings if c]  # RFC 9110 §5.6.1.2: empty list elements are ignored
    if codings == [b"chunked"]:
        return
    if not codings:
        raise HTTPError(Reason.bad_request, "empty Transfer-Encoding")
    if b"chunked" in codings[:-1]:
        raise HTTPError(Reason.bad_request, "Transfer-Encoding with chunked not last, or twice")
    unknown = ", ".join(c.decode("latin-1") for c in codings if c != b"chunked")
    raise HTTPError(Reason.not_implemented, f"Transfer-Encoding {unknown} is not supported")


# RFC 9112 §3.2.2 absolute-form: an http(s) URI. The authority is host[:port] without
# userinfo (RFC 9110 §4.2.4: "treat its presence as an error").
_ABSOLUTE_FORM: Final = re.compile(
    rb"(?i:https?)://((?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(?::[0-9]*)?)([/?][^#]*)?"
)


def _absolute_form(head: RequestHead) -> None:
    """RFC 9112 §3.2.2: "When a proxy receives a request with an absolute-form of
    request-target, the proxy MUST ignore the received Host header field (if any) and instead
    replace it with the host information of the request-target. A proxy that forwards such a
    request MUST generate a new Host field value based on the received request-target rather
    than forward the received Host field value." So the target's authority becomes the Host
    that routes match and the server gets, and the target goes on in origin-form."""
    m = _ABSOLUTE_FORM.fullmatch(head.target)
    if m is None:
        raise HTTPError(Reason.bad_request, "request target is neither a path nor an http(s) URI")
    authority, rest = m.group(1), m.group(2) or b"/"
    head.target = rest if rest[:1] == b"/" else b"/" + rest  # "http://a?q" -> "/?q"
    head._path = None
    head._host = None
    headers = head.headers
    for i, (name, _) in enumerate(headers):
        if name.lower() == b"host":
            headers[i] = (name, authority)
            break
    else:
        headers.insert(0, (b"Host", authority))
    head.index[b"host"] = authority


_FORBIDDEN_IN_HEAD: Final = (b"\0",)


def check_raw_head(raw: bytes) -> None:
    """For parsers more lenient than llhttp (h11): the head bytes, up to and including the
    blank line, must use CRLF only, have no obs-fold (RFC 9112 §5.2), and no NUL."""
    if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n"):
        raise HTTPError(Reason.bad_request, "bare CR or LF in request head")
    if raw.find(b"\r\n ") >= 0 or raw.find(b"\r\n\t") >= 0:
        raise HTTPError(Reason.bad_request, "obs-fold line folding in request head")
    for bad in _FORBIDDEN_IN_HEAD:
        if raw.find(bad) >= 0:
            raise HTTPError(Reason.bad_request, "NUL byte in request head")
    for byte in raw:
        if byte < 0x20 and byte not in (0x09, 0x0A, 0x0D):
            raise HTTPError(Reason.bad_request, "control character in request head")
