"""`lb check --print`: the effective config, every default filled in, loadable again."""

from __future__ import annotations

import textwrap

import yaml

from lb.config import load_config_text
from lb.config.effective import HIDDEN, effective, effective_yaml

CONFIG = """\
version: 1
defaults:
  timeouts: {idle: 90s}
listeners:
  web: {bind: "127.0.0.1:8080", timeouts: {client_header: 5s}}
  db: {bind: "127.0.0.1:6432", mode: tcp, pool: postgres}
routes:
  - {name: api, match: {path_prefix: /api/}, pool: app, retries: {attempts: 2}}
  - {match: {}, pool: app}
pools:
  app:
    health_check: {path: /healthz}
    servers: [{address: "127.0.0.1:9001", max_connections: 10}]
  postgres: {health_check: {}, servers: [{address: "127.0.0.1:5432"}]}
admin: {bind: "127.0.0.1:9901", token: s3cret}
sticky_secret: "0123456789abcdef0123"
"""

TIMEOUTS = {"connect": "2s", "client_header": "10s", "request": "30s", "idle": "90s"}


def test_every_section_has_its_defaults_filled_in() -> None:
    out = effective(load_config_text(CONFIG))
    assert list(out) == [
        "version",
        "defaults",
        "listeners",
        "routes",
        "pools",
        "admin",
        "access_log",
        "sticky_secret",
        "redis",
        "cache",
        "queues",
    ]
    assert out["redis"] is None and out["queues"] == {}
    assert out["cache"]["max_object_size"] == "1MiB" and out["cache"]["collapse_timeout"] == "2s"
    assert out["defaults"] == {
        "timeouts": {**TIMEOUTS, "tunnel": "1h"},
        "health_check": {},
        "max_header_size": "64KiB",
        "max_body_size": None,
        "shutdown_grace": "30s",
    }
    web, db = out["listeners"]["web"], out["listeners"]["db"]
    assert web["timeouts"] == {**TIMEOUTS, "client_header": "5s", "tunnel": "1h"}
    assert (web["mode"], web["max_header_size"], web["underscores_in_headers"]) == (
        "http",
        "64KiB",
        "drop",
    )
    assert (web["accept_proxy"], web["redirect_https"], web["max_connections"]) == (
        False,
        False,
        None,
    )
    assert "max_header_size" not in db and "underscores_in_headers" not in db
    api, default = out["routes"]
    assert api["retries"] == {"attempts": 2, "on": ["connect_failure"], "budget": "20%"}
    assert default["name"] == "routes[1]"
    assert default["listeners"] == ["web"]
    assert default["retries"] == {"attempts": 1, "on": ["connect_failure"], "budget": "20%"}
    assert default["match"] == {} and default["max_body_size"] is None
    app, postgres = out["pools"]["app"], out["pools"]["postgres"]
    assert app["balance"] == "round_robin"
    assert app["servers"] == [
        {"address": "127.0.0.1:9001", "weight": 1, "backup": False, "max_connections": 10}
    ]
    assert app["queue"] == {"max": 100, "timeout": "5s"}
    assert app["timeouts"] == {**TIMEOUTS, "tunnel": "1h"}
    assert app["health_check"] == {
        "type": "http",
        "path": "/healthz",
        "host": None,
        "expect_status": None,
        "interval": "2s",
        "timeout": "1s",
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
    }
    assert postgres["health_check"]["type"] == "tcp"  # only a tcp listener uses it
    assert postgres["queue"] is None
    assert out["admin"] == {"bind": "127.0.0.1:9901", "token": HIDDEN}
    assert out["access_log"] == {"enabled": True, "path": "-", "format": "json"}
    assert out["sticky_secret"] == HIDDEN
    text = effective_yaml(load_config_text(CONFIG))
    assert "s3cret" not in text and "0123456789abcdef" not in text


def test_the_printed_config_loads_as_the_same_config() -> None:
    without_secrets = "\n".join(
        line for line in CONFIG.splitlines() if not line.startswith(("admin", "sticky"))
    )
    config = load_config_text(without_secrets)
    printed = effective_yaml(config)
    assert "&" not in printed  # no YAML anchors: plain to read
    again = load_config_text(printed)
    assert effective(again) == effective(config)


def test_durations_and_sizes_read_as_written() -> None:
    config = load_config_text(
        textwrap.dedent(
            """\
            version: 1
            defaults: {timeouts: {connect: 250ms, request: 2m}, max_body_size: 1500}
            listeners: {web: {bind: "127.0.0.1:8080", max_header_size: 1MiB}}
            routes: [{match: {}, pool: app}]
            pools: {app: {servers: [{address: "a:1"}]}}
            """
        )
    )
    out = effective(config)
    assert out["defaults"]["timeouts"]["connect"] == "250ms"
    assert out["defaults"]["timeouts"]["request"] == "2m"
    assert out["defaults"]["max_body_size"] == 1500
    assert out["routes"][0]["max_body_size"] == 1500
    assert out["listeners"]["web"]["max_header_size"] == "1MiB"
    assert yaml.safe_load(effective_yaml(config)) == out


def test_cache_offload_and_redis_are_printed_without_secrets() -> None:
    text = """
version: 1
listeners: {web: {bind: "127.0.0.1:8080"}}
routes:
  - {name: slow, match: {path_prefix: /r/}, pool: app, offload: {queue: q}}
  - {name: cat, match: {}, pool: app, cache: {default_ttl: 60s}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
queues: {q: {max_attempts: 2}}
redis: {url: "redis://user:s3cret@127.0.0.1:6379/0"}
"""
    out = effective(load_config_text(text))
    assert out["routes"][0]["offload"] == {"queue": "q", "mode": "always"}
    assert out["routes"][1]["cache"]["default_ttl"] == "1m"
    assert out["queues"]["q"]["max_attempts"] == 2
    assert "s3cret" not in str(out) and out["redis"]["url"] == "redis://user:***@127.0.0.1:6379/0"
