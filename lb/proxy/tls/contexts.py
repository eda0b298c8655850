"""TLS for listeners and pools: `ssl.SSLContext`s built from the config, and listener
certificates rotated without a restart.

Every handshake starts in one context, `front`; its SNI callback then switches it to the
context of the certificate chosen for the name the client sent (exact, then wildcard, else
the first certificate; see `lb.core.certnames`). Rotation replaces both `front` and the
`NameIndex` the callback reads: connections already open keep the context they shook hands
with, the next handshake uses the new certificates, and no session from before can be resumed
(its client certificate was checked against the old settings).

Rotation happens on reload (SIGHUP, POST /api/v1/reload) and when a certificate, key or CA
file changes (`ListenerTls.refresh`, called about once a second). A new set that cannot be
served (unreadable, key and certificate apart, expired, not covering its names) is refused
with one log line naming the config path, and the certificates in use keep serving.

The hardened defaults are not options: TLS 1.2 at least, ECDHE key exchange with AEAD
ciphers only (TLS 1.3's suites all are), no compression (CRIME), no renegotiation, ALPN
http/1.1. Key-exchange groups: X25519, P-256, P-384 unless `tls.groups` names others
(lb.proxy.tls.groups). Some settings of a handshake come from `front` even after the switch (the
protocol version, the cipher list, whether a client certificate is asked for), so every
context, `front` included, is built by the same function from the same settings.
"""

from __future__ import annotations

import logging
import os
import ssl
from datetime import UTC, datetime

from lb.config.base import split_address
from lb.config.problems import format_path
from lb.config.tls import Certificate, ListenerTlsConfig, PoolTls
from lb.config.tls_checks import TlsFileError, pair_problems, read_ca
from lb.core.certnames import NameIndex
from lb.proxy.tls.groups import DEFAULT_GROUPS, GroupsUnavailable, set_groups

log = logging.getLogger("lb.tls")

# TLS 1.2: forward secrecy (ECDHE) and AEAD (GCM, ChaCha20-Poly1305) only; Mozilla's
# "intermediate" list without its finite-field DHE suites. TLS 1.3's suites need no list.
CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN = ["http/1.1"]
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_HARDENED_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


class TlsSetupError(Exception):
    """Certificates that cannot be served; the message names the config path and the cause."""


def _hardened(ctx: ssl.SSLContext, min_version: str) -> ssl.SSLContext:
    ctx.minimum_version = MIN_VERSIONS[min_version]
    ctx.options |= _HARDENED_OPTIONS
    ctx.set_ciphers(CIPHERS)
    ctx.set_alpn_protocols(ALPN)
    return ctx


def server_context(tls: ListenerTlsConfig, cert: Certificate) -> ssl.SSLContext:
    """One certificate's context, with the listener's protocol and client-certificate settings."""
    ctx = _hardened(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls.min_version)
    # A client's FIN without close_notify reads as EOF and leaves the session writable, so a
    # client that half-closes after its request still gets the answer (nginx does the same;
    # HTTP framing, not TLS, tells a complete request). Not on the pool side: there it would
    # hide a truncated response.
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    if tls.client_ca is not None:
        ctx.load_verify_locations(cafile=tls.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL if tls.client_cert == "optional" else ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert.cert, cert.key)
    _groups(ctx, tls.groups)
    return ctx


_warned_groups = False


def _groups(ctx: ssl.SSLContext, groups: list[str] | None) -> None:
    """The key-exchange groups: the listener's `tls.groups` (lb check has proven them), else
    Mozilla intermediate's X25519, P-256, P-384 when this Python and OpenSSL allow it."""
    global _warned_groups
    try:
        set_groups(ctx, groups or DEFAULT_GROUPS)
    except GroupsUnavailable as e:
        if groups:
            raise TlsSetupError(f"tls.groups cannot be honoured: {e}") from None
        if not _warned_groups:
            _warned_groups = True
            log.warning("TLS groups left at OpenSSL's defaults: %s", e)


def client_context(tls: PoolTls) -> ssl.SSLContext:
    """The context lb connects to a pool's servers with: verifying by default."""
    if tls.verify:
        ctx = ssl.create_default_context(cafile=tls.ca)  # system CAs when ca is None
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return _hardened(ctx, "1.2")


def pool_server_name(tls: PoolTls, address: str) -> str:
    """The name lb sends (SNI) and verifies when connecting to a pool's server at `address`:
    `sni`, else the configured address's host (a name, not the IP it resolves to; an IP is
    verified against the certificate's IP addresses and sends no SNI)."""
    return tls.sni or split_address(address)[0]


def certificate_index(tls: ListenerTlsConfig, where: str) -> NameIndex[ssl.SSLContext]:
    """Read and check every certificate of a listener; TlsSetupError names the first bad one."""
    now = datetime.now(UTC)
    entries: list[tuple[tuple[str, ...], ssl.SSLContext]] = []
    for k, cert in enumerate(tls.certificates):
        info, problems = pair_problems(cert, now)
        if problems or info is None:
            key, message = problems[0]
            raise TlsSetupError(f"{where}.certificates[{k}].{key}: {message}")
        try:
            ctx = server_context(tls, cert)
        except (OSError, ssl.SSLError) as e:
            raise TlsSetupError(f"{where}.certificates[{k}]: {cert.cert}: {e}") from None
        entries.append((tuple(cert.names) if cert.names else info.names, ctx))
    if tls.client_ca is not None:
        try:
            read_ca(tls.client_ca)
        except TlsFileError as err:
            raise TlsSetupError(f"{where}.client_ca: {err.message}") from None
    return NameIndex(entries)


def _files(tls: ListenerTlsConfig) -> list[str]:
    files = [f for c in tls.certificates for f in (c.cert, c.key)]
    return [*files, tls.client_ca] if tls.client_ca else files


def file_stamp(files: list[str]) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when a file is rewritten or replaced (renamed over, as tools do)."""
    out = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, -1, -1, -1))
        else:
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class ListenerTls:
    """One listener's certificates at run time. `front` is the context its next handshakes
    start in (lb.proxy.tls.listener reads it for each connection); every load replaces it."""

    def __init__(self, listener: str, tls: ListenerTlsConfig) -> None:
        self.listener = listener
        self.where = format_path(("listeners", listener, "tls"))
        self.config = tls
        self.stamp = file_stamp(_files(tls))
        self.index = certificate_index(tls, self.where)
        self.front = self._front(self.index)
        self.handshake_timeout = tls.handshake_timeout

    def _front(self, index: NameIndex[ssl.SSLContext]) -> ssl.SSLContext:
        """The context every handshake starts in: the first certificate's, freshly built with
        `index`. It holds the listener's session cache and session-ticket keys (OpenSSL keeps
        them in the first context, whatever the SNI callback switches to), so a new one per
        load also ends every session from before."""
        front = index.default
        front.sni_callback = self._choose
        return front

    def _choose(
        self, sslobj: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> int | None:
        # Runs inside every handshake, on the ClientHello (with or without SNI); `sslobj` is
        # the SSLSocket of lb.proxy.tls.listener.
        sslobj.context = self.index.select(server_name)
        return None

    def reload(self, tls: ListenerTlsConfig) -> bool:
        """Rebuild from `tls` (a reload); False, logged, when the new set cannot be served.
        Nothing happens when neither the settings nor their files changed: a reload for
        another part of the config keeps the TLS sessions clients may resume."""
        stamp = file_stamp(_files(tls))
        if tls == self.config and stamp == self.stamp:
            return True
        try:
            index = certificate_index(tls, self.where)
        except TlsSetupError as err:
            if tls == self.config:
                self.stamp = stamp  # tried: wait for the files to change again
            log.error("TLS certificates refused, the ones in use keep serving: %s", err)
            return False
        # A new front, not the old one changed: a session resumed from before would skip the
        # new settings' checks (a client certificate from a CA no longer trusted). Connections
        # already open keep the context they shook hands in.
        self.front = self._front(index)
        self.index = index
        self.config = tls
        self.stamp = stamp
        self.handshake_timeout = tls.handshake_timeout
        log.info(
            "TLS certificates of listener %s loaded (%d)", self.listener, len(tls.certificates)
        )
        return True

    def refresh(self) -> bool:
        """Reload when a file changed since the last load (or failed load)."""
        if file_stamp(_files(self.config)) == self.stamp:
            return False
        return self.reload(self.config)

    def __repr__(self) -> str:
        return f"<ListenerTls {self.listener} certificates={len(self.config.certificates)}>"


def client_subject(transport: object) -> bytes | None:
    """The subject of the client's verified certificate (RFC 4514 text), or None without one.

    OpenSSL fails a handshake whose client certificate does not verify, so any certificate
    here has been verified. Bytes outside printable ASCII are written as RFC 4514 `\\HH`
    escapes: the value goes into a request header and must not carry line breaks."""
    get = getattr(transport, "get_extra_info", None)
    sslobj = get("ssl_object") if get is not None else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return None
    from cryptography import x509  # only on listeners that pass the subject on

    text = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    out = bytearray()
    for byte in text.encode("utf-8"):
        if 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%02X" % byte
    return bytes(out)
