"""Sticky cookies: opaque, signed names for a server of a pool or an arm of a split (sans-IO).

Theory of operation. lb keeps no table of clients. A sticky cookie carries everything needed
to route its holder again, and only a holder of the secret can make one:

    value = ID "." EXPIRES "." SIG
    ID      = b64url(HMAC-SHA256(secret, kind \\0 scope \\0 name)[:12])
              kind "server": scope is the pool, name the server's configured address;
              kind "arm": scope is the route, name the arm's pool.
    EXPIRES = unix time (seconds, hex) after which the cookie is stale, the cookie's ttl
    SIG     = b64url(HMAC-SHA256(secret, "sig" \\0 cookie-name \\0 ID "." EXPIRES)[:12])

Invariants:

- The value never shows an address or a pool name: ID is a keyed hash, so a client can neither
  read it nor make one up for a server it has never been sent to.
- Identity is (kind, scope, name), never a position: reordering servers, changing weights or
  reloading keeps every cookie valid; renaming or removing the server (or arm) makes its
  cookies match nothing, which is the same as having none.
- Verification is one HMAC and a comparison in constant time. A cookie that is malformed,
  signed with another secret, expired, or names something gone is ignored, never an error:
  the request is balanced as a new client's would be, and a fresh cookie is issued.
- Any lb process holding the same secret issues and accepts the same cookies, so worker
  processes and several lb instances behind one DNS name agree without sharing state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = [
    "SECRET_ENV",
    "CookieSigner",
    "derive_secret",
    "set_cookie_value",
]

SECRET_ENV = "LB_STICKY_SECRET"
_TAG = 12  # bytes of HMAC kept for ID and SIG: 96 bits, 16 base64url characters each


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def derive_secret(configured: str | None, env: str | None, fallback: bytes) -> bytes:
    """The signing key: `sticky_secret` from the config, else $LB_STICKY_SECRET, else a hash of
    `fallback` (the shell passes the parts of the config a reload cannot change, so a reload
    keeps cookies valid and instances sharing a config agree; anyone who has the config can
    compute it, so production should set a secret)."""
    for value in (configured, env):
        if value:
            return hashlib.sha256(b"lb-sticky-secret\0" + value.encode()).digest()
    return hashlib.sha256(b"lb-sticky-derived\0" + fallback).digest()


class CookieSigner:
    """Issues and verifies sticky cookie values under one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("sticky cookies need a non-empty secret")
        self._key = secret

    def ident(self, kind: str, scope: str, name: str) -> str:
        """The opaque ID of a server (kind "server", scope pool) or arm (kind "arm", scope
        route)."""
        msg = b"\0".join((kind.encode(), scope.encode(), name.encode()))
        return _b64(hmac.digest(self._key, msg, "sha256")[:_TAG])

    def _sig(self, cookie: str, body: str) -> str:
        msg = b"sig\0" + cookie.encode("latin-1") + b"\0" + body.encode("ascii")
        return _b64(hmac.digest(self._key, msg, "sha256")[:_TAG])

    def issue(self, cookie: str, ident: str, expires: int) -> str:
        """The cookie value naming `ident` until unix time `expires`."""
        body = f"{ident}.{expires:x}"
        return f"{body}.{self._sig(cookie, body)}"

    def verify(self, cookie: str, value: str | None, now: float) -> str | None:
        """The ID a cookie value names, or None when it is absent, forged or expired."""
        if not value or len(value) > 64:
            return None
        ident, dot, rest = value.partition(".")
        expires, dot2, sig = rest.partition(".")
        if not dot or not dot2 or len(ident) != 16 or len(sig) != 16 or not 0 < len(expires) < 12:
            return None
        try:
            when = int(expires, 16)
            expected = self._sig(cookie, f"{ident}.{expires}")
        except (ValueError, UnicodeEncodeError):
            return None
        if not hmac.compare_digest(expected, sig) or when <= now:
            return None
        return ident

    def __repr__(self) -> str:
        return "<CookieSigner>"  # never the key


def set_cookie_value(name: str, value: str, ttl: float, secure: bool) -> bytes:
    """A Set-Cookie header value (RFC 6265 §4.1): the whole site, hidden from scripts, sent on
    top-level navigations from other sites but not on their subrequests."""
    attrs = f"{name}={value}; Path=/; Max-Age={max(1, int(ttl))}; HttpOnly; SameSite=Lax"
    if secure:
        attrs += "; Secure"
    return attrs.encode("latin-1")
