"""Certificates rotate in a running `lb run` through both reload paths, POST /api/v1/reload and
SIGHUP, while a connection opened before keeps working on the certificate it shook hands with."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
from pathlib import Path

import trustme
from cryptography import x509

from tests.conftest import wait_for
from tests.integration.helpers import LbProcess, Origin, free_port, request


class TlsClient:
    """A kept-alive TLS connection to lb, for one name (SNI and Host)."""

    def __init__(self, port: int, ca: trustme.CA, name: str) -> None:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.check_hostname = False  # the serial tells which certificate came: the default too
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname=name)
        self.name = name

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.name}\r\n\r\n".encode())
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        return response.status, response.read()

    def serial(self) -> int:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def close(self) -> None:
        self.sock.close()


def serial_for(port: int, ca: trustme.CA, name: str) -> int:
    client = TlsClient(port, ca, name)
    try:
        return client.serial()
    finally:
        client.close()


def test_reload_and_sighup_rotate_certificates_and_keep_open_connections(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    pairs = {}
    for name in ("a.test", "b.test", "c.test"):
        leaf = ca.issue_cert(name)
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
        pairs[name] = (f"{{cert: '{cert}', key: '{key}'}}", serial)
    port, tls_port, admin_port = free_port(), free_port(), free_port()

    def config(*names: str) -> str:
        certs = ", ".join(pairs[n][0] for n in names)
        return f"""version: 1
listeners:
  web: {{bind: "127.0.0.1:{port}"}}
  websecure: {{bind: "127.0.0.1:{tls_port}", tls: {{certificates: [{certs}]}}}}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{origin.address}"}}]}}}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""

    with Origin("a") as origin:
        path = tmp_path / "lb.yaml"
        path.write_text(config("a.test"))
        with LbProcess(path, port, admin_port, workers=1) as lb:
            old = TlsClient(tls_port, ca, "a.test")
            assert old.get("/before") == (200, b"origin a /before\n")
            # Before any reload, b.test and c.test get the default (first) certificate.
            assert serial_for(tls_port, ca, "b.test") == pairs["a.test"][1]

            path.write_text(config("a.test", "b.test"))
            code, _, body = request(admin_port, "/api/v1/reload", method="POST")
            assert code == 200, body
            # (The answer means the workers were told; each applies it in its own time.)
            wait_for(
                lambda: serial_for(tls_port, ca, "b.test") == pairs["b.test"][1],
                5,
                what=lambda: f"b.test's certificate after POST /api/v1/reload; log:\n{lb.log()}",
            )

            path.write_text(config("a.test", "b.test", "c.test"))
            lb.signal(signal.SIGHUP)
            wait_for(
                lambda: serial_for(tls_port, ca, "c.test") == pairs["c.test"][1],
                5,
                what=lambda: f"c.test's certificate after SIGHUP; log:\n{lb.log()}",
            )

            # The connection opened first is still served, on the certificate it began with.
            assert old.get("/after") == (200, b"origin a /after\n")
            assert old.serial() == pairs["a.test"][1]
            old.close()
