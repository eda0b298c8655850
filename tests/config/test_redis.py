"""The top-level `redis` section: what is accepted, and what a user is told when it is wrong."""

from __future__ import annotations

import textwrap

import pytest

from lb.config import ConfigError, load_config_text

BASE = """\
version: 1
listeners: {web: {bind: "0.0.0.0:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
routes: [{pool: app}]
"""


def load(section: str):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + textwrap.dedent(section))


def problems(section: str) -> list[str]:
    try:
        load(section)
    except ConfigError as e:
        return [str(p) for p in e.problems]
    return []


def test_absent_means_in_process_stores() -> None:
    assert load("").redis is None


def test_url_with_defaults() -> None:
    redis = load("redis: {url: 'redis://127.0.0.1:6379/0'}").redis
    assert redis is not None
    assert redis.url == "redis://127.0.0.1:6379/0"
    assert (redis.timeout, redis.probe_interval) == (0.25, 1.0)
    assert (redis.key_prefix, redis.max_connections) == ("lb:", 64)


@pytest.mark.parametrize(
    "url", ["rediss://cache.internal:6380/1", "unix:///run/redis/redis.sock", "redis://h"]
)
def test_other_url_schemes(url: str) -> None:
    assert load(f"redis: {{url: '{url}'}}").redis is not None


def test_sentinel() -> None:
    redis = load(
        """\
        redis:
          sentinel: {master: mymaster, addresses: ["10.0.0.1:26379", "10.0.0.2:26379"]}
          db: 2
          password: secret
          timeout: 500ms
        """
    ).redis
    assert redis is not None and redis.sentinel is not None
    assert redis.sentinel.master == "mymaster"
    assert redis.sentinel.addresses == ["10.0.0.1:26379", "10.0.0.2:26379"]
    assert (redis.db, redis.timeout) == (2, 0.5)


def test_safe_url_hides_the_password() -> None:
    redis = load("redis: {url: 'redis://app:s3cret@h:6379/0'}").redis
    assert redis is not None
    assert redis.safe_url() == "redis://app:***@h:6379/0"
    assert "s3cret" not in str(problems("redis: {url: 'http://app:s3cret@h'}"))


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param(
            "redis: {url: 'http://h:6379'}",
            [
                "redis.url: use redis://host:6379/0, rediss://host:6379/0 (TLS) or "
                "unix:///path/redis.sock (line 5)"
            ],
            id="bad-scheme",
        ),
        pytest.param(
            "redis: {url: 'unix://'}",
            ["redis.url: name a host (or, for unix://, a socket path) (line 5)"],
            id="unix-without-path",
        ),
        pytest.param(
            "redis: {}",
            [
                "redis: give exactly one of url or sentinel, e.g. "
                "{url: 'redis://127.0.0.1:6379/0'} (line 5)"
            ],
            id="neither",
        ),
        pytest.param(
            "redis: {url: 'redis://h', sentinel: {master: m, addresses: ['h:26379']}}",
            [
                "redis: give exactly one of url or sentinel, e.g. "
                "{url: 'redis://127.0.0.1:6379/0'} (line 5)"
            ],
            id="both",
        ),
        pytest.param(
            "redis: {sentinel: {master: m, addresses: ['h:26379', 'h']}}",
            ["redis.sentinel.addresses[1]: address 'h' must be HOST:PORT (line 5)"],
            id="sentinel-address",
        ),
        pytest.param(
            "redis: {sentinel: {addresses: ['h:26379']}}",
            ["redis.sentinel.master: required (line 5)"],
            id="sentinel-master-missing",
        ),
        pytest.param(
            "redis: {url: 'redis://h', db: 2}",
            [
                "redis.db: only with sentinel; with url, put it in the url: "
                "redis://host:6379/2 (line 5)"
            ],
            id="db-beside-url",
        ),
        pytest.param(
            "redis: {url: 'redis://h', timeout: 250}",
            [
                "redis.timeout: duration 250: write a number and a unit, e.g. 250ms, 5s, 2m, 1h "
                "(line 5)"
            ],
            id="bare-number-timeout",
        ),
        pytest.param(
            "redis: {url: 'redis://h', timeout: 0s}",
            ["redis.timeout: must be more than 0 (got '0s') (line 5)"],
            id="zero-timeout",
        ),
        pytest.param(
            "redis: {url: 'redis://h', tiemout: 1s}",
            ["redis.tiemout: unknown key 'tiemout' (did you mean 'timeout'?) (line 5)"],
            id="unknown-key",
        ),
    ],
)
def test_bad_sections(section: str, expected: list[str]) -> None:
    assert problems(section) == expected
