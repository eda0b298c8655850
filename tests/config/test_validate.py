"""Cross-field checks: each case is a small config and the problems a user should see."""

from __future__ import annotations

import textwrap

import pytest

from lb.config import Config, ConfigError, load_config_text, validate

# Most cases only vary one section; these keep the rest valid.
WEB = 'listeners: {web: {bind: "0.0.0.0:8080"}}'
APP = 'pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}'
TO_APP = "routes: [{name: default, pool: app}]"


def problems(text: str) -> list[str]:
    try:
        load_config_text("version: 1\n" + textwrap.dedent(text))
    except ConfigError as e:
        return [str(p) for p in e.problems]
    return []


CASES = [
    pytest.param(
        "listeners: {}", ["listeners: no listeners: define at least one"], id="no-listeners"
    ),
    # -- references by name --
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{pool: ap}}]",
        ["routes[0].pool: unknown pool 'ap' (did you mean 'app'?) (line 4)"],
        id="unknown-route-pool",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{pool: zzz}}]",
        ["routes[0].pool: unknown pool 'zzz' (known pools: app)"],
        id="unknown-pool-lists-known",
    ),
    pytest.param(
        f"""\
        {WEB}
        {APP}
        routes:
          - name: canary
            split:
              - {{pool: app, weight: 5}}
              - {{pool: api-v3, weight: 95}}
        """,
        ["routes[0].split[1].pool: unknown pool 'api-v3' (known pools: app) (line 8)"],
        id="unknown-split-pool",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{pool: app, listeners: [web, wbe]}}]",
        ["routes[0].listeners[1]: unknown listener 'wbe' (did you mean 'web'?)"],
        id="unknown-route-listener",
    ),
    pytest.param(
        """\
        listeners: {db: {bind: "0.0.0.0:6432", mode: tcp, pool: postgress}}
        pools: {postgres: {servers: [{address: "127.0.0.1:5432"}]}}
        """,
        ["listeners.db.pool: unknown pool 'postgress' (did you mean 'postgres'?) (line 2)"],
        id="unknown-tcp-pool",
    ),
    # -- route targets --
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{pool: app, split: [{{pool: app}}]}}]",
        ["routes[0]: give either pool or split, not both"],
        id="pool-and-split",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{name: nowhere}}]",
        ["routes[0]: needs a pool or a split"],
        id="neither-pool-nor-split",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{split: [{{pool: app, weight: 0}}]}}]",
        ["routes[0].split: every weight is 0"],
        id="split-weights-zero",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{split: []}}]",
        ["routes[0].split: empty"],
        id="split-empty",
    ),
    pytest.param(
        f"{WEB}\n{APP}\nroutes: [{{split: [{{pool: app}}, {{pool: app}}]}}]",
        ["routes[0].split[1].pool: pool 'app' is already split[0]"],
        id="split-same-pool-twice",
    ),
    # -- pools --
    pytest.param(
        f"{WEB}\n{TO_APP}\npools: {{app: {{servers: [{{address: 'a:1'}}]}}, spare: {{}}}}",
        [],
        id="unreferenced-empty-pool-is-fine",
    ),
    pytest.param(
        f"{WEB}\n{TO_APP}\npools: {{app: {{}}}}",
        ["pools.app.servers: no servers, yet routes[0] sends traffic here (line 4)"],
        id="referenced-pool-without-servers",
    ),
    pytest.param(
        f"{WEB}\n{TO_APP}\npools: {{app: {{servers: [{{address: 'a:1', weight: 0}}]}}}}",
        ["pools.app.servers: every server has weight 0, yet routes[0]"],
        id="referenced-pool-all-weight-zero",
    ),
    pytest.param(
        f"""\
        {WEB}
        {TO_APP}
        pools:
          app:
            servers:
              - address: "10.0.0.1:80"
              - address: "10.0.0.2:80"
              - address: "10.0.0.1:80"
        """,
        ["pools.app.servers[2].address: duplicate server '10.0.0.1:80' (also servers[0]) (line 9)"],
        id="duplicate-server",
    ),
    pytest.param(
        f"{WEB}\n{TO_APP}\npools: {{app: {{balance: hash, servers: [{{address: 'a:1'}}]}}}}",
        ["pools.app.balance: hash needs a hash_key"],
        id="hash-without-key",
    ),
    pytest.param(
        f"""\
        {WEB}
        {TO_APP}
        pools:
          app:
            hash_key: client_ip
            servers: [{{address: "a:1"}}]
        """,
        ["pools.app.hash_key: only used by balance: hash (this pool balances by round_robin)"],
        id="hash-key-without-hash",
    ),
    pytest.param(
        f"""\
        {WEB}
        {TO_APP}
        pools:
          app:
            health_check: {{type: tcp, path: /healthz, host: example.com, expect_status: [200]}}
            servers: [{{address: "a:1"}}]
        """,
        [
            "pools.app.health_check.path: only for http health checks; this one is type tcp",
            "pools.app.health_check.host: only for http health checks",
            "pools.app.health_check.expect_status: only for http health checks",
        ],
        id="tcp-health-check-with-http-keys",
    ),
    pytest.param(
        f"""\
        {WEB}
        {TO_APP}
        defaults: {{health_check: {{type: tcp}}}}
        pools: {{app: {{health_check: {{path: /up}}, servers: [{{address: "a:1"}}]}}}}
        """,
        ["pools.app.health_check.path: only for http health checks; this one is type tcp (from"],
        id="tcp-health-check-from-defaults",
    ),
    pytest.param(
        f"""\
        {WEB}
        {TO_APP}
        pools:
          app:
            health_check: {{expect_status: [200, 99, 600]}}
            servers: [{{address: "a:1"}}]
        """,
        [
            "pools.app.health_check.expect_status[1]: 99 is not an HTTP status code (100-599)",
            "pools.app.health_check.expect_status[2]: 600 is not an HTTP status code",
        ],
        id="expect-status-range",
    ),
    # -- binds --
    pytest.param(
        f"""\
        listeners:
          web: {{bind: "0.0.0.0:8080"}}
          web2: {{bind: "0.0.0.0:8080"}}
        {APP}
        {TO_APP}
        """,
        [
            "listeners.web2.bind: '0.0.0.0:8080' collides with listeners.web ('0.0.0.0:8080')"
            " (line 4)"
        ],
        id="same-bind",
    ),
    pytest.param(
        f"""\
        listeners:
          web: {{bind: "0.0.0.0:8080"}}
          local: {{bind: "127.0.0.1:8080"}}
        {APP}
        {TO_APP}
        """,
        ["listeners.local.bind: '127.0.0.1:8080' collides with listeners.web"],
        id="wildcard-bind-collides-with-host",
    ),
    pytest.param(
        f"""\
        listeners:
          a: {{bind: "127.0.0.1:8080"}}
          b: {{bind: "127.0.0.2:8080"}}
          c: {{bind: "127.0.0.1:0"}}
          d: {{bind: "127.0.0.1:0"}}
          dns: {{bind: "0.0.0.0:8080", mode: udp, pool: app}}
        {APP}
        {TO_APP}
        """,
        [],
        id="binds-that-do-not-collide",
    ),
    pytest.param(
        f'{WEB}\n{APP}\n{TO_APP}\nadmin: {{bind: "[::]:8080"}}',
        ["admin.bind: '[::]:8080' collides with listeners.web"],
        id="admin-bind-collides",
    ),
    # -- routes --
    pytest.param(
        f"""\
        {WEB}
        {APP}
        routes:
          - {{name: api, match: {{path_prefix: /api/}}, pool: app}}
          - {{name: default, pool: app}}
          - {{name: late, match: {{host: example.com}}, pool: app}}
        """,
        ["routes[2]: unreachable: routes[1] 'default' matches everything before it (line 7)"],
        id="route-after-catch-all",
    ),
    pytest.param(
        f"""\
        listeners:
          web: {{bind: "0.0.0.0:8080"}}
          internal: {{bind: "127.0.0.1:8081"}}
        {APP}
        routes:
          - {{listeners: [internal], pool: app}}
          - {{match: {{path: /x}}, pool: app}}
          - {{listeners: [internal], match: {{path: /y}}, pool: app}}
        """,
        ["routes[2]: unreachable: routes[0] matches everything"],
        id="catch-all-shadows-only-its-listeners",
    ),
    pytest.param(
        f"""\
        {WEB}
        {APP}
        routes: [{{name: a, pool: app, match: {{path: /a}}}}, {{name: a, pool: app}}]
        """,
        ["routes[1].name: duplicate route name 'a' (first at routes[0])"],
        id="duplicate-route-name",
    ),
    pytest.param(
        f"""\
        listeners:
          web: {{bind: "0.0.0.0:8080"}}
          admin2: {{bind: "127.0.0.1:8081"}}
        {APP}
        routes: [{{listeners: [web], pool: app}}]
        """,
        ["listeners.admin2: no route serves this listener (line 4)"],
        id="listener-without-route",
    ),
    pytest.param(
        f"{WEB}\n{APP}",
        ["listeners.web: no route serves this listener"],
        id="no-routes-at-all",
    ),
    # -- modes --
    pytest.param(
        f"""\
        listeners:
          web: {{bind: "0.0.0.0:8080"}}
          db: {{bind: "0.0.0.0:6432", mode: tcp, pool: app, max_header_size: 8KiB,
                underscores_in_headers: pass}}
        {APP}
        routes: [{{listeners: [web, db], pool: app}}]
        """,
        [
            "listeners.db.max_header_size: only for http listeners (this one is mode tcp)",
            "listeners.db.underscores_in_headers: only for http listeners (this one is mode tcp)",
            "routes[0].listeners[1]: listener 'db' is mode tcp; routes apply only to http",
        ],
        id="tcp-listener-with-http-keys",
    ),
    pytest.param(
        f"""\
        listeners: {{dns: {{bind: "0.0.0.0:53", mode: udp}}}}
        {APP}
        """,
        ["listeners.dns.pool: required: a udp listener sends everything to a pool (line 2)"],
        id="udp-listener-without-pool",
    ),
    pytest.param(
        f"""\
        listeners: {{web: {{bind: "0.0.0.0:8080", pool: app}}}}
        {APP}
        {TO_APP}
        """,
        ["listeners.web.pool: only tcp and udp listeners take a pool"],
        id="http-listener-with-pool",
    ),
    pytest.param(
        f"""\
        listeners: {{db: {{bind: "0.0.0.0:6432", mode: tcp, pool: app}}}}
        {APP}
        """,
        [],
        id="tcp-only-config-needs-no-routes",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_validate(text: str, expected: list[str]) -> None:
    found = problems(text)
    for want in expected:
        assert any(want in p for p in found), f"{want!r} not in {found}"
    assert len(found) == len(expected), found


def test_validate_gives_paths_without_lines() -> None:
    config = Config.model_validate(
        {
            "version": 1,
            "listeners": {"web": {"bind": "0.0.0.0:80"}},
            "routes": [{"split": [{"pool": "nope"}]}],
        }
    )
    [problem] = validate(config)
    assert problem.path == "routes[0].split[0].pool"
    assert problem.line is None
    assert str(problem) == "routes[0].split[0].pool: unknown pool 'nope' (no pools are defined)"


def test_odd_names_are_quoted_in_paths() -> None:
    found = problems(
        f"""\
        {WEB}
        pools: {{"api.v2": {{}}}}
        routes: [{{pool: api.v2}}]
        """
    )
    assert found == [
        'pools["api.v2"].servers: no servers, yet routes[0] sends traffic here (line 3)'
    ]
