"""TLS checks before serving: the keys that go with TLS, and the files the config names.

`tls_problems(config)` is run by `lb.config.validate`, so `lb check`, `lb run` and every reload
refuse a config whose certificates cannot be served, each problem with its config path:

- a file that is missing or unreadable, or holds no PEM certificate (or key);
- a key that does not match its certificate, or that is encrypted;
- a certificate that has expired, or is not valid yet;
- a certificate listed for `names` that it does not cover (a client asking for one of them
  would be refused by its own TLS library).

Unlike the rest of validation these read files. `read_pair` is also what the running proxy
calls before it swaps in rotated certificates, so both say the same thing about a bad pair.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from lb.config.listeners import Listener
from lb.config.problems import Loc
from lb.config.schema import Config
from lb.config.tls import Certificate, ListenerTlsConfig, PoolTls
from lb.core.certnames import covers
from lb.proxy.tls.groups import check_groups

__all__ = [
    "CertificateInfo",
    "TlsFileError",
    "pair_problems",
    "read_ca",
    "read_pair",
    "tls_problems",
]

_HSTS = re.compile(r"^[\x20-\x7e]*\bmax-age=\d+\b[\x20-\x7e]*$", re.IGNORECASE)
_SNI_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9\-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9\-]*[a-z0-9])?$"
)


class TlsFileError(Exception):
    """A certificate, key or CA file lb cannot use; `key` is the config key it came from."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class CertificateInfo:
    names: tuple[str, ...]  # DNS names the certificate holds (its CN when it has no SAN)
    subject: str
    not_before: datetime
    not_after: datetime


def tls_problems(config: Config, now: datetime | None = None) -> Iterator[tuple[Loc, str]]:
    now = now or datetime.now(UTC)
    for name, listener in config.listeners.items():
        loc: Loc = ("listeners", name)
        yield from _listener_keys(listener, loc)
        if listener.tls is not None:
            yield from _listener_files(listener.tls, (*loc, "tls"), now)
    for name, pool in config.pools.items():
        if pool.tls is not None:
            yield from _pool_tls(pool.tls, ("pools", name, "tls"))


# -- keys -------------------------------------------------------------------------------------


def _listener_keys(listener: Listener, loc: Loc) -> Iterator[tuple[Loc, str]]:
    tls = listener.tls
    if tls is not None and listener.mode != "http":
        yield (
            (*loc, "tls"),
            f"only http listeners terminate TLS (this one is mode {listener.mode}); "
            "a tcp listener passes TLS through by SNI with routes",
        )
    if listener.redirect_https:
        if listener.mode != "http":
            yield (
                (*loc, "redirect_https"),
                f"only for http listeners (this one is mode {listener.mode})",
            )
        elif tls is not None:
            yield (
                (*loc, "redirect_https"),
                "this listener is https already; set redirect_https on the plain http listener",
            )
    if listener.hsts is not None:
        if tls is None:
            # RFC 6797 §7.2: "An HSTS Host MUST NOT include the STS header field in HTTP
            # responses conveyed over non-secure transport."
            yield (
                (*loc, "hsts"),
                "only for listeners with tls: browsers ignore HSTS sent over plain http",
            )
        if not _HSTS.match(listener.hsts):
            yield (
                (*loc, "hsts"),
                f"{listener.hsts!r} is not a Strict-Transport-Security value; "
                "e.g. max-age=31536000; includeSubDomains",
            )
    if tls is None:
        return
    tloc = (*loc, "tls")
    if tls.groups is not None:
        problem = check_groups(tls.groups)
        if problem is not None:
            yield (*tloc, "groups"), problem
    if tls.client_ca is None:
        if tls.client_cert is not None:
            yield (
                (*tloc, "client_cert"),
                "needs client_ca: the CAs client certificates must chain to",
            )
        if tls.client_subject_header is not None:
            yield (
                (*tloc, "client_subject_header"),
                "needs client_ca: only a verified client certificate has a subject to pass on",
            )
    for k, cert in enumerate(tls.certificates):
        for j, sni in enumerate(cert.names or []):
            if not _SNI_NAME.match(sni):
                yield (
                    (*tloc, "certificates", k, "names", j),
                    f"{sni!r} is not a server name: use a.example.com or *.example.com",
                )
        if cert.names is not None and not cert.names:
            yield (*tloc, "certificates", k, "names"), "empty: omit names to use the certificate's"


# -- files ------------------------------------------------------------------------------------


def _listener_files(tls: ListenerTlsConfig, loc: Loc, now: datetime) -> Iterator[tuple[Loc, str]]:
    for k, cert in enumerate(tls.certificates):
        for key, message in pair_problems(cert, now)[1]:
            yield (*loc, "certificates", k, key), message
    if tls.client_ca is not None:
        try:
            read_ca(tls.client_ca)
        except TlsFileError as err:
            yield (*loc, "client_ca"), err.message


def pair_problems(
    cert: Certificate, now: datetime | None = None
) -> tuple[CertificateInfo | None, list[tuple[str, str]]]:
    """Read one certificate entry and say what is wrong with it, as (config key, message)
    pairs; the info is None when the files cannot be used at all."""
    try:
        info = read_pair(cert)
    except TlsFileError as err:
        return None, [(err.key, err.message)]
    now = now or datetime.now(UTC)
    problems: list[tuple[str, str]] = []
    if info.not_after < now:
        problems.append(
            ("cert", f"{cert.cert}: expired on {_date(info.not_after)} ({info.subject})")
        )
    elif info.not_before > now:
        problems.append(
            ("cert", f"{cert.cert}: not valid until {_date(info.not_before)} ({info.subject})")
        )
    if cert.names:
        missing = [n for n in cert.names if not any(covers(c, n) for c in info.names)]
        if missing:
            held = ", ".join(info.names) or "no DNS names"
            problems.append(
                ("names", f"{cert.cert} does not cover {', '.join(missing)} (it holds {held})")
            )
    return info, problems


def _pool_tls(tls: PoolTls, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if tls.ca is not None:
        if not tls.verify:
            yield (*loc, "ca"), "unused with verify: false; remove it or verify the servers"
        try:
            read_ca(tls.ca)
        except TlsFileError as err:
            yield (*loc, "ca"), err.message
    if tls.sni is not None and not _SNI_NAME.match(tls.sni.lower()):
        yield (*loc, "sni"), f"{tls.sni!r} is not a server name, e.g. app.internal"


def _date(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsFileError(key, f"{path}: no such file") from None
    except IsADirectoryError:
        raise TlsFileError(key, f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise TlsFileError(key, f"{path}: cannot read: {e.strerror or e}") from None


def _certificates(path: str, key: str) -> list[x509.Certificate]:
    data = _read(path, key)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsFileError(key, f"{path}: no PEM certificate in it (BEGIN CERTIFICATE)")
    return certs


def read_ca(path: str, key: str = "ca") -> list[x509.Certificate]:
    """The CA certificates in a PEM bundle; TlsFileError when there are none."""
    return _certificates(path, key)


def read_pair(cert: Certificate) -> CertificateInfo:
    """Read a certificate chain and its key and check that they belong together."""
    chain = _certificates(cert.cert, "cert")
    leaf = chain[0]
    data = _read(cert.key, "key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsFileError(
            "key", f"{cert.key}: the key is encrypted; lb needs it without a passphrase"
        ) from None
    except (ValueError, x509.UnsupportedGeneralNameType) as e:
        raise TlsFileError("key", f"{cert.key}: not a PEM private key ({_first_line(e)})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        matches = private.public_key().public_bytes(der, spki) == leaf.public_key().public_bytes(
            der, spki
        )
    except (ValueError, TypeError):
        matches = False
    if not matches:
        raise TlsFileError(
            "key", f"{cert.key} does not match the certificate in {cert.cert} ({_subject(leaf)})"
        )
    return CertificateInfo(
        names=_dns_names(leaf),
        subject=_subject(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in common[:1])
    return tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "no subject"


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
