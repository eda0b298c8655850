"""`lb check` on TLS: files that cannot be served are reported before serving, each with its
config path and line; and the keys that go with TLS are checked against each other."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from lb.cli import main
from lb.config import ConfigError, load_config, load_config_text, tls_checks

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(root: Path, name: str, leaf: trustme.LeafCert) -> tuple[str, str]:
    cert, key = root / f"{name}.crt", root / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert.name, key.name


def site(cert: str, key: str, extra: str = "", pool_tls: str = "") -> str:
    return f"""version: 1
listeners:
  web:
    bind: 127.0.0.1:8443
    tls:
      certificates:
        - {{cert: {cert}, key: {key}{extra}}}
routes: [{{match: {{}}, pool: app}}]
pools:
  app:
    servers: [{{address: "127.0.0.1:9001"}}]
{pool_tls}"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "lb.yaml"
    path.write_text(text)
    code = main(["check", "-c", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_good_pair_passes_with_paths_relative_to_the_config(tmp_path, ca, capsys) -> None:
    cert, key = write_pair(tmp_path, "site", ca.issue_cert("a.test", "*.b.test"))
    text = site(cert, key, ", names: [a.test, x.b.test, '*.b.test']")
    code, out = check(tmp_path, text, capsys)
    assert code == 0, out
    assert "config OK" in out
    # From another working directory the relative names still resolve next to the config.
    config = load_config(tmp_path / "lb.yaml")
    assert config.listeners["web"].tls is not None
    assert config.listeners["web"].tls.certificates[0].cert == str(tmp_path / "site.crt")


def test_missing_and_unreadable_files(tmp_path, ca, capsys) -> None:
    (tmp_path / "dir.key").mkdir()
    code, out = check(tmp_path, site("nowhere.crt", "dir.key"), capsys)
    assert code == 1
    assert "listeners.web.tls.certificates[0].cert: " in out
    assert "nowhere.crt: no such file (line 7)" in out


def test_a_directory_is_not_a_readable_key(tmp_path, ca, capsys) -> None:
    cert, _ = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    (tmp_path / "dir.key").mkdir()
    code, out = check(tmp_path, site(cert, "dir.key"), capsys)
    assert code == 1
    assert "listeners.web.tls.certificates[0].key: " in out and "is a directory" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_permission(tmp_path, ca, capsys) -> None:
    cert, key = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    (tmp_path / key).chmod(0)
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1 and "cannot read" in out


def test_a_file_that_cannot_be_read_even_as_root(tmp_path, ca, capsys, monkeypatch) -> None:
    """As above, where permissions cannot refuse (root): the read itself fails."""
    cert, key = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    real_open = open

    def refusing_open(path, *args, **kw):
        if str(path).endswith(key):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(tls_checks, "open", refusing_open, raising=False)
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1
    assert "listeners.web.tls.certificates[0].key: " in out
    assert "cannot read: Permission denied" in out


def test_a_key_that_does_not_match_its_certificate(tmp_path, ca, capsys) -> None:
    cert, _ = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    _, other_key = write_pair(tmp_path, "other", ca.issue_cert("a.test"))
    code, out = check(tmp_path, site(cert, other_key), capsys)
    assert code == 1
    assert "listeners.web.tls.certificates[0].key: " in out
    assert "does not match the certificate in" in out


def test_an_expired_certificate(tmp_path, ca, capsys) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    leaf = ca.issue_cert("a.test", not_before=past - timedelta(days=30), not_after=past)
    cert, key = write_pair(tmp_path, "old", leaf)
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1
    assert "listeners.web.tls.certificates[0].cert: " in out
    assert f"expired on {past:%Y-%m-%d}" in out


def test_a_certificate_that_is_not_valid_yet(tmp_path, ca, capsys) -> None:
    future = datetime.now(UTC) + timedelta(days=3)
    leaf = ca.issue_cert("a.test", not_before=future, not_after=future + timedelta(days=30))
    cert, key = write_pair(tmp_path, "new", leaf)
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1 and "not valid until" in out
    assert "listeners.web.tls.certificates[0].cert: " in out


def test_a_certificate_that_covers_none_of_its_names(tmp_path, ca, capsys) -> None:
    cert, key = write_pair(tmp_path, "site", ca.issue_cert("a.test", "*.b.test"))
    code, out = check(tmp_path, site(cert, key, ", names: [c.test, x.y.b.test, b.test]"), capsys)
    assert code == 1
    assert (
        "listeners.web.tls.certificates[0].names: " in out
        and "does not cover c.test, x.y.b.test, b.test (it holds a.test, *.b.test)" in out
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"hello\n", "no PEM certificate"), (b"", "no PEM certificate")],
)
def test_a_file_that_holds_no_certificate(tmp_path, ca, capsys, content, message) -> None:
    _, key = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    (tmp_path / "bad.crt").write_bytes(content)
    code, out = check(tmp_path, site("bad.crt", key), capsys)
    assert code == 1 and message in out


def test_an_encrypted_or_garbled_key(tmp_path, ca, capsys) -> None:
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue_cert("a.test")
    cert, key = write_pair(tmp_path, "site", leaf)
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (tmp_path / key).write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1 and "the key is encrypted" in out
    (tmp_path / key).write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    code, out = check(tmp_path, site(cert, key), capsys)
    assert code == 1 and "not a PEM private key" in out


def test_ca_files_of_listeners_and_pools(tmp_path, ca, capsys) -> None:
    cert, key = write_pair(tmp_path, "site", ca.issue_cert("a.test"))
    text = site(
        cert,
        key,
        "}\n      client_ca: missing-ca.pem\n      client_cert: required\n#",
        "    tls: {ca: nothing.pem, verify: false}\n",
    )
    code, out = check(tmp_path, text, capsys)
    assert code == 1
    assert "listeners.web.tls.client_ca: " in out and "missing-ca.pem: no such file" in out
    assert "pools.app.tls.ca: unused with verify: false" in out
    assert "nothing.pem: no such file" in out


@pytest.mark.parametrize(
    ("listener", "message"),
    [
        (
            "{bind: '0:80', hsts: max-age=60}",
            "listeners.web.hsts: only for listeners with tls",
        ),
        (
            "{bind: '0:80', mode: tcp, pool: app, redirect_https: true}",
            "listeners.web.redirect_https: only for http listeners",
        ),
        (
            "{bind: '0:80', tls: {certificates: [{cert: c, key: k}], client_cert: optional}}",
            "listeners.web.tls.client_cert: needs client_ca",
        ),
        (
            "{bind: '0:80', tls: {certificates: [{cert: c, key: k}], client_subject_header: x-s}}",
            "listeners.web.tls.client_subject_header: needs client_ca",
        ),
        (
            "{bind: '0:80', tls: {certificates: [{cert: c, key: k}], client_subject_header: 'a:'}}",
            "listeners.web.tls.client_subject_header: 'a:' is not a valid header name",
        ),
        (
            "{bind: '0:80', tls: {certificates: [{cert: c, key: k}], min_version: 1.1}}",
            "listeners.web.tls.min_version: must be one of: 1.2, 1.3",
        ),
        (
            "{bind: '0:80', tls: {certificates: []}}",
            "listeners.web.tls.certificates: ",
        ),
        (
            "{bind: '0:80', tls: {certificates: [{cert: c, key: k, names: ['a b']}]}}",
            "listeners.web.tls.certificates[0].names[0]: 'a b' is not a server name",
        ),
        (
            "{bind: '0:80', mode: tcp, pool: app, tls: {certificates: [{cert: c, key: k}]}}",
            "listeners.web.tls: only http listeners terminate TLS",
        ),
    ],
)
def test_tls_keys_that_do_not_go_together(listener: str, message: str) -> None:
    text = f"""version: 1
listeners:
  web: {listener}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "127.0.0.1:9001"}}]}}}}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert any(message in str(p) for p in info.value.problems), info.value.problems


def test_a_redirect_listener_needs_no_route() -> None:
    config = load_config_text(
        """version: 1
listeners:
  web: {bind: '0:80', redirect_https: true}
  api: {bind: '0:81'}
routes: [{listeners: [api], match: {}, pool: app}]
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
"""
    )
    assert config.listeners["web"].redirect_https
