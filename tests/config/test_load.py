"""Loading YAML into a Config: values parsed, every problem reported with its path and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lb.config import ConfigError, Problem, load_config, load_config_text, summarize
from tests.conftest import config_problems

FULL = """\
version: 1
defaults:
  timeouts: {connect: 2s, request: 30s, idle: 60s}
  health_check: {interval: 2s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3}
  max_header_size: 32KiB

listeners:
  web: {bind: "0.0.0.0:8080", mode: http}
  internal:
    bind: "127.0.0.1:8081"
    max_connections: 1000
    timeouts: {client_header: 5s}
  db: {bind: "0.0.0.0:6432", mode: tcp, pool: postgres}

routes:
  - name: api-canary
    listeners: [web]
    match:
      host: api.example.com
      path_prefix: /v1/
      methods: [get, POST]
      headers: {x-beta: "1", x-debug: {present: true}, x-client: {regex: "^mobile-"}}
      cookies: {plan: premium}
    split:
      - {pool: api-v2, weight: 5}
      - {pool: api-v1, weight: 95}
  - name: uploads
    match: {path_regex: "^/upload/[a-z]+$"}
    pool: api-v1
    max_body_size: 10MiB
    timeouts: {request: 250ms}
  - name: default
    match: {}
    pool: api-v1

pools:
  api-v1:
    balance: least_conn
    health_check: {path: /healthz, expect_status: [200, 204]}
    servers:
      - {address: "127.0.0.1:9001", weight: 3}
      - {address: "app2.internal:9001"}
      - {address: "127.0.0.1:9003", backup: true}
  api-v2:
    balance: hash
    hash_key: "header:x-user-id"
    servers: [{address: "[::1]:9101"}, {address: "127.0.0.1:9102"}]
  postgres:
    health_check: {type: tcp}
    servers: [{address: "127.0.0.1:5432"}, {address: "127.0.0.1:5433", backup: true}]

admin: {bind: "127.0.0.1:9901"}
access_log: {format: text}
"""


problems = config_problems


def test_full_example_loads() -> None:
    config = load_config_text(FULL)
    assert config.defaults.timeouts.connect == 2.0
    assert config.defaults.timeouts.client_header == 10.0  # not given: the default
    assert config.defaults.max_header_size == 32 * 1024
    assert config.listeners["db"].pool == "postgres"
    assert config.listeners["internal"].timeouts is not None
    assert config.listeners["internal"].timeouts.client_header == 5.0
    canary = config.routes[0]
    assert canary.match.methods == ["GET", "POST"]
    assert canary.split is not None and [arm.weight for arm in canary.split] == [5, 95]
    assert config.routes[1].max_body_size == 10 * 1024 * 1024
    assert config.routes[1].timeouts is not None and config.routes[1].timeouts.request == 0.25
    assert config.routes[2].match.is_catch_all()
    assert config.pools["api-v1"].servers[2].backup is True
    assert summarize(config) == "config OK: 3 listeners, 3 routes, 3 pools, 7 servers"


def test_summary_singular() -> None:
    config = load_config_text(
        'version: 1\nlisteners: {db: {bind: "0.0.0.0:1", mode: tcp, pool: p}}\n'
        'pools: {p: {servers: [{address: "a:1"}]}}\n'
    )
    assert summarize(config) == "config OK: 1 listener, 0 routes, 1 pool, 1 server"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(FULL)
    assert len(load_config(path).pools) == 3


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/lb.yaml")
    assert str(info.value) == "cannot read /nonexistent/lb.yaml: No such file or directory"
    assert info.value.source == "/nonexistent/lb.yaml"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0)],
)
def test_durations(written: str, seconds: float) -> None:
    config = load_config_text(
        f'version: 1\ndefaults: {{timeouts: {{request: "{written}"}}}}\n'
        'listeners: {db: {bind: "0.0.0.0:1", mode: tcp, pool: p}}\n'
        'pools: {p: {servers: [{address: "a:1"}]}}\n'
    )
    assert config.defaults.timeouts.request == seconds


@pytest.mark.parametrize(
    ("written", "size"),
    [("64KiB", 65536), ("1MiB", 1048576), ("2GiB", 2 * 1024**3), ("1KB", 1000), ("512", 512)],
)
def test_sizes(written: str, size: int) -> None:
    config = load_config_text(
        f"version: 1\ndefaults: {{max_header_size: {written}}}\n"
        'listeners: {db: {bind: "0.0.0.0:1", mode: tcp, pool: p}}\n'
        'pools: {p: {servers: [{address: "a:1"}]}}\n'
    )
    assert config.defaults.max_header_size == size


VALID_TAIL = """\
listeners: {web: {bind: "0.0.0.0:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
routes: [{pool: app}]
"""

CASES = [
    pytest.param(
        "version: 1\ndefaults: {timeouts: {connect: 30}}\n" + VALID_TAIL,
        [
            "defaults.timeouts.connect: duration 30: write a number and a unit,"
            " e.g. 250ms, 5s, 2m, 1h (line 2)"
        ],
        id="bare-number-duration",
    ),
    pytest.param(
        "version: 1\ndefaults:\n  health_check:\n    interval: 5 sec\n" + VALID_TAIL,
        ["defaults.health_check.interval: duration '5 sec': write a number and a unit"],
        id="bad-duration-unit",
    ),
    pytest.param(
        "version: 1\ndefaults:\n  max_body_size: 1.5MiB\n" + VALID_TAIL,
        [
            "defaults.max_body_size: size '1.5MiB': write bytes or a number and a unit,"
            " e.g. 64KiB, 1MiB (line 3)"
        ],
        id="bad-size",
    ),
    pytest.param(
        "version: 1\n"
        'listeners: {web: {bind: "0.0.0.0:8080"}}\n'
        "pools: {app: {servers: [{address: '127.0.0.1:9001'}]}}\n"
        "routes:\n"
        "  - pol: app\n",
        # Cross-field checks need built models: they run once the schema problems are fixed.
        ["routes[0].pol: unknown key 'pol' (did you mean 'pool'?) (line 5)"],
        id="unknown-key-did-you-mean",
    ),
    pytest.param(
        "version: 1\nlistener: {}\n",
        [
            "listeners: required",
            "listener: unknown key 'listener' (did you mean 'listeners'?) (line 2)",
        ],
        id="top-level-typo",
    ),
    pytest.param(
        "version: 1\nlisteners: {web: {bind: '0.0.0.0:80', mode: htp}}\n",
        ["listeners.web.mode: must be one of: http, tcp, udp (got 'htp') (did you mean 'http'?)"],
        id="literal",
    ),
    pytest.param(
        "version: 2\n" + VALID_TAIL,
        ["version: must be one of: 1 (got 2) (line 1)"],
        id="version",
    ),
    pytest.param(
        "version: 1\nlisteners:\n  web: {mode: http}\n",
        ["listeners.web.bind: required (line 3)"],
        id="missing-key",
    ),
    pytest.param(
        "version: 1\nlisteners: {web: {bind: 'localhost'}}\n",
        ["listeners.web.bind: address 'localhost' must be HOST:PORT (line 2)"],
        id="bad-bind",
    ),
    pytest.param(
        "version: 1\nlisteners: [web]\n",
        ["listeners: must be a mapping (got a list) (line 2)"],
        id="wrong-type",
    ),
    pytest.param(
        "version: 1\nlisteners: {web: {bind: '0.0.0.0:80', max_connections: 0}}\n",
        ["listeners.web.max_connections: must be 1 or more (got 0)"],
        id="bound",
    ),
    pytest.param(
        VALID_TAIL.replace("routes: [{pool: app}]", "routes:\n  - pool: app\n    match:\n")
        + "      headers:\n"
        "        x-a: 3\n"
        "        x-b: {regx: '^a'}\n"
        "        x-c: {present: true, regex: a}\n"
        "        x-d: {regex: '('}\n",
        [
            "routes[0].match.headers.x-a: must be a string or a mapping with present or regex "
            "(got 3) (line 8)",
            "routes[0].match.headers.x-b.regx: unknown key 'regx' (did you mean 'regex'?) (line 9)",
            "routes[0].match.headers.x-c: give exactly one of present or regex",
            "routes[0].match.headers.x-d.regex: invalid regex '('",
            "version: required",
        ],
        id="union-collapsed-to-one-message-per-path",
    ),
    pytest.param(
        "version: 1\n"
        "listeners:\n"
        "  web: {bind: '0.0.0.0:80'}\n"
        "  web: {bind: '0.0.0.0:81'}\n"
        "pools: {app: {servers: [{address: 'a:1'}]}}\n"
        "routes: [{pool: app}]\n",
        ["listeners.web: duplicate key 'web' (first at line 3); keep only one (line 4)"],
        id="duplicate-key",
    ),
    pytest.param(
        "version: 1\n"
        "listeners:\n"
        "  web: {bind: '0.0.0.0:80', hsts: max-age=1}\n"
        "pools:\n"
        "  app: {servers: [{address: 'a:1', max_connections: 5}], passive: {}}\n"
        "routes:\n"
        "  - pool: app\n"
        "    cache: {default_ttl: 60s}\n",
        [
            "listeners.web.hsts: only for listeners with tls: browsers ignore HSTS",
        ],
        id="hsts-beside-cache-and-queues",
    ),
    pytest.param(
        "version: 1\nlisteners: {web: {bind: '0.0.0.0:80'}}\nrutes: []\n  bad: indent\n",
        ["invalid YAML: expected <block end>, but found '<block mapping start>'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "version: 1\nlisteners: {web: {bind: nowhere, tls: {}}}\n",
        [
            "listeners.web.bind: address 'nowhere' must be HOST:PORT (line 2)",
            "listeners.web.tls.certificates: required (line 2)",
        ],
        id="schema-problems-together",
    ),
    pytest.param(
        VALID_TAIL.replace("{pool: app}", "{pool: app, match: {headers: {1: a}}}") + "version: 1\n",
        ["routes[0].match.headers[1]: key must be a string (got 1) (line 3)"],
        id="non-string-key",
    ),
    pytest.param(
        "version: 1\nlisteners: &loop [*loop]\n",
        ["listeners: must be a mapping (got a list) (line 2)"],
        id="recursive-alias",
    ),
    pytest.param("", ["the config is empty"], id="empty-file"),
    pytest.param("- a\n- b\n", ["must be a mapping (got a list)"], id="top-level-list"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problems(text: str, expected: list[str]) -> None:
    found = problems(text)
    for want in expected:
        assert any(want in p for p in found), f"{want!r} not in {found}"


def test_every_problem_is_reported_in_line_order() -> None:
    text = """\
    version: 1
    listeners:
      web: {bind: "0.0.0.0:8080", mode: htp}
      db: {bind: "0.0.0.0:6432", mode: tcp}
    routes:
      - {pool: app, listners: [web]}
    pools:
      app:
        balance: hash
        servers: [{address: "127.0.0.1", weight: -1}]
    """
    found = problems(text)
    assert found == [
        "listeners.web.mode: must be one of: http, tcp, udp (got 'htp') (did you mean 'http'?)"
        " (line 3)",
        # A cross-field problem of a listener that passed the schema, in the same run.
        "listeners.db.pool: required: a tcp listener sends everything to a pool (line 4)",
        "routes[0].listners: unknown key 'listners' (did you mean 'listeners'?) (line 6)",
        "pools.app.servers[0].address: address '127.0.0.1' must be HOST:PORT (line 10)",
        "pools.app.servers[0].weight: must be 0 or more (got -1) (line 10)",
    ]


def test_cross_field_problems_are_all_reported_too() -> None:
    text = """\
    version: 1
    listeners:
      web: {bind: "0.0.0.0:8080"}
      db: {bind: "0.0.0.0:8080", mode: tcp}
    routes:
      - {name: a, pool: ap}
      - {name: a, split: [{pool: app, weight: 0}]}
    pools:
      app: {balance: hash, servers: [{address: "a:1"}]}
    """
    assert problems(text) == [
        "listeners.db.pool: required: a tcp listener sends everything to a pool (line 4)",
        "listeners.db.bind: '0.0.0.0:8080' collides with listeners.web ('0.0.0.0:8080') (line 4)",
        "routes[0].pool: unknown pool 'ap' (did you mean 'app'?) (line 6)",
        "routes[1].name: duplicate route name 'a' (first at routes[0]) (line 7)",
        "routes[1].split: every weight is 0: give at least one arm a weight above 0 (line 7)",
        "routes[1]: unreachable: routes[0] 'a' matches everything before it (line 7)",
        "pools.app.balance: hash needs a hash_key: client_ip, path, header:NAME or cookie:NAME"
        " (line 9)",
    ]


def test_schema_and_cross_reference_problems_come_out_together() -> None:
    """Issue 16: one run reports a schema error and an unknown pool elsewhere."""
    text = """\
    version: 1
    listeners:
      web: {bind: "0.0.0.0:8080", max_connections: none}
    routes:
      - {name: api, match: {path_prefix: /api/}, pool: api-v3}
      - {name: default, pool: app}
    pools:
      app: {servers: [{address: "a:1"}]}
    """
    assert problems(text) == [
        "listeners.web.max_connections: must be a whole number (got 'none') (line 3)",
        "routes[0].pool: unknown pool 'api-v3' (known pools: app) (line 5)",
    ]


def test_cross_checks_skip_what_failed_the_schema() -> None:
    """Entries that failed are left out of the cross-checks: a reference to one is not
    "unknown", a route after a broken one keeps its index, and a listener whose only route
    is broken is not "served by no route"."""
    text = """\
    version: 1
    listeners:
      web: {bind: "0.0.0.0:8080", mode: htp}
      admin-web: {bind: "0.0.0.0:8081"}
    routes:
      - {listeners: [web, admin-web], match: {path: 1}, pool: app}
      - {listeners: [web], pool: broken}
      - {listeners: [web], pool: nowhere}
    pools:
      app: {servers: [{address: "a:1"}]}
      broken: {balance: round, servers: [{address: "a:1"}]}
      tcp-only: {tls: {verify: maybe}, servers: [{address: "a:1"}]}
    """
    assert problems(text) == [
        "listeners.web.mode: must be one of: http, tcp, udp (got 'htp') (did you mean 'http'?)"
        " (line 3)",
        "routes[0].match.path: must be a string (got 1) (line 6)",
        "routes[2].pool: unknown pool 'nowhere' (known pools: app) (line 8)",
        "pools.broken.balance: must be one of: round_robin, least_conn, random, p2c, ip_hash,"
        " hash (got 'round') (did you mean 'round_robin'?) (line 11)",
        "pools.tcp-only.tls.verify: must be true or false (got 'maybe') (line 12)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a list\n", ["must be a mapping (got a list)"]),
        (
            "version: 2\nlisteners: {web: {bind: 'a:1'}}\n",
            ["version: must be one of: 1", "listeners.web: no route serves this listener"],
        ),
        ("version: 1\nlisteners: [web]\n", ["listeners: must be a mapping (got a list)"]),
        ("version: 1\n", ["listeners: required"]),
    ],
)
def test_top_level_failures_add_no_noise(text: str, expected: list[str]) -> None:
    """A failed required section stands in: no "no listeners" on top of its own error; the
    other sections are still cross-checked."""
    found = problems(text)
    assert len(found) == len(expected), found
    for want, got in zip(expected, found, strict=True):
        assert want in got, found


def test_yaml_syntax_error_has_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("version: 1\nlisteners:\n  web: {bind: '0.0.0.0:80'\nroutes: []\n")
    [problem] = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("invalid YAML: ")
    assert problem.line == 4


def test_merge_keys_are_not_duplicates() -> None:
    config = load_config_text(
        textwrap.dedent(
            """\
            version: 1
            listeners:
              web: {bind: "0.0.0.0:8080"}
            routes: [{pool: b, match: {path: /b}}, {pool: a}]
            pools:
              a: &base {balance: least_conn, servers: [{address: "a:1"}]}
              b:
                <<: *base
                balance: random
            """
        )
    )
    assert config.pools["b"].balance == "random"
    assert config.pools["b"].servers[0].address == "a:1"


def test_error_text_is_one_problem_per_line() -> None:
    error = ConfigError(
        [Problem("routes[2].split[1].pool", "unknown pool 'api-v3'", 14), Problem("", "empty")]
    )
    assert str(error) == "routes[2].split[1].pool: unknown pool 'api-v3' (line 14)\nempty"
