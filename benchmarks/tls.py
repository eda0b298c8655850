"""The certificate the TLS cases are served with: one self-signed ECDSA P-256 certificate for
127.0.0.1 and localhost, made once per run in the work dir and given to every subject (lb gets
the cert and key files, haproxy one PEM holding both), so they shake hands with the same key.

P-256 rather than RSA-2048: it is what a site tuned for handshakes per second serves, and it
keeps the benchmark measuring the proxies more than one signature algorithm.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lb.proxy.tls.contexts import CIPHERS

__all__ = ["CIPHERS", "TlsFiles", "certificate"]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    pem: Path  # cert then key, for haproxy's `crt`


def certificate(workdir: Path) -> TlsFiles:
    files = TlsFiles(workdir / "bench.crt", workdir / "bench.key", workdir / "bench.pem")
    if files.pem.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.pem.write_bytes(cert_pem + key_pem)
    return files
