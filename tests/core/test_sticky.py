"""Sticky cookie values: opaque, signed, expiring; forged or stale ones are ignored."""

from __future__ import annotations

import pytest

from lb.core.sticky import CookieSigner, derive_secret, set_cookie_value

NOW = 1_700_000_000.0
SIGNER = CookieSigner(b"k" * 32)


def test_issue_then_verify_round_trips_and_hides_the_address():
    ident = SIGNER.ident("server", "app", "10.0.0.7:8080")
    value = SIGNER.issue("lb_srv", ident, int(NOW + 60))
    assert SIGNER.verify("lb_srv", value, NOW) == ident
    assert "10.0.0.7" not in value and "8080" not in value and "app" not in value
    assert len(value) < 64


def test_identity_is_by_name_not_position():
    a = SIGNER.ident("server", "app", "10.0.0.7:8080")
    assert a == CookieSigner(b"k" * 32).ident("server", "app", "10.0.0.7:8080")
    assert a != SIGNER.ident("server", "app", "10.0.0.8:8080")
    assert a != SIGNER.ident("server", "other", "10.0.0.7:8080")
    assert a != SIGNER.ident("arm", "app", "10.0.0.7:8080")


def _valid() -> str:
    return SIGNER.issue("lb_srv", SIGNER.ident("server", "app", "a:1"), int(NOW + 60))


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "a.b.c",
        "x" * 200,
        _valid()[:-1] + ("A" if _valid()[-1] != "A" else "B"),  # signature tampered
        "A" + _valid()[1:],  # id tampered
        _valid().replace(".", ".f", 1),  # expiry tampered
        CookieSigner(b"other secret....").issue(
            "lb_srv", SIGNER.ident("server", "app", "a:1"), int(NOW + 60)
        ),
        "é" * 10,
    ],
)
def test_forged_values_are_ignored(value):
    assert SIGNER.verify("lb_srv", value, NOW) is None


def test_expired_cookie_is_stale():
    ident = SIGNER.ident("arm", "r", "p")
    value = SIGNER.issue("lb_arm", ident, int(NOW + 10))
    assert SIGNER.verify("lb_arm", value, NOW + 9) == ident
    assert SIGNER.verify("lb_arm", value, NOW + 10) is None


def test_a_value_is_bound_to_its_cookie_name():
    value = SIGNER.issue("lb_arm", SIGNER.ident("arm", "r", "p"), int(NOW + 60))
    assert SIGNER.verify("lb_srv", value, NOW) is None


@pytest.mark.parametrize(
    ("configured", "env", "same_as"),
    [
        ("s" * 16, None, ("s" * 16, "t" * 16)),  # the config wins over the environment
        (None, "t" * 16, ("t" * 16, None)),
        (None, None, None),
    ],
)
def test_secret_sources(configured, env, same_as):
    secret = derive_secret(configured, env, b"listeners")
    assert secret == derive_secret(configured, env, b"listeners")  # every instance agrees
    if same_as is not None:
        assert secret == derive_secret(*same_as, b"something else")
    else:
        assert secret != derive_secret(None, None, b"other listeners")


@pytest.mark.parametrize(
    ("secure", "expected"),
    [
        (False, b"lb_srv=v; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax"),
        (True, b"lb_srv=v; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax; Secure"),
    ],
)
def test_set_cookie_attributes(secure, expected):
    assert set_cookie_value("lb_srv", "v", 1800.0, secure) == expected


def test_repr_never_shows_the_key():
    assert "k" * 8 not in repr(SIGNER)
