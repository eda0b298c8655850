"""Health, sans-IO: check resolution, rise/fall counting, passive outlier ejection."""

from __future__ import annotations

import pytest

from lb.config import load_config_text
from lb.core.health import (
    ActiveCheck,
    HealthCounter,
    OutlierDetector,
    PassivePolicy,
    Transition,
    active_checks,
)

# -- resolving a pool's check -----------------------------------------------------------------


def _config(pools: str, defaults: str = "", tcp_pool: bool = False) -> str:
    text = "version: 1\n"
    if defaults:
        text += f"defaults: {{health_check: {defaults}}}\n"
    text += "listeners:\n  web: {bind: '127.0.0.1:0'}\n"
    if tcp_pool:
        text += "  db: {bind: '127.0.0.1:0', mode: tcp, pool: db}\n"
    text += "routes: [{pool: app}]\npools:\n" + pools
    return text


@pytest.mark.parametrize(
    ("pools", "defaults", "expected"),
    [
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n", "", {}, id="no-health-check-not-checked"
        ),
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n",
            "{interval: 5s}",
            {},
            id="defaults-without-type-or-path-check-nothing",
        ),
        pytest.param(
            "  app: {health_check: {}, servers: [{address: 'a:1'}]}\n",
            "",
            {"app": ActiveCheck("http")},
            id="empty-check-on-routed-pool-is-http-get-slash",
        ),
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n",
            "{path: /up, interval: 500ms}",
            {"app": ActiveCheck("http", interval=0.5, path="/up")},
            id="defaults-path-checks-every-pool",
        ),
        pytest.param(
            "  app: {health_check: {path: /healthz, expect_status: [200, 204], host: x.test,"
            " timeout: 250ms, healthy_threshold: 1, unhealthy_threshold: 5},"
            " servers: [{address: 'a:1'}]}\n",
            "{interval: 3s, timeout: 2s}",
            {
                "app": ActiveCheck(
                    "http",
                    interval=3.0,
                    timeout=0.25,
                    healthy_threshold=1,
                    unhealthy_threshold=5,
                    path="/healthz",
                    host="x.test",
                    expect_status=frozenset({200, 204}),
                )
            },
            id="pool-keys-override-defaults-key-by-key",
        ),
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n"
            "  db: {health_check: {interval: 1s}, servers: [{address: 'b:2'}]}\n",
            "",
            {"db": ActiveCheck("tcp", interval=1.0)},
            id="tcp-listener-pool-defaults-to-tcp",
        ),
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n"
            "  db: {health_check: {path: /ping}, servers: [{address: 'b:2'}]}\n",
            "",
            {"db": ActiveCheck("http", path="/ping")},
            id="path-makes-http-even-for-tcp-pool",
        ),
        pytest.param(
            "  app: {servers: [{address: 'a:1'}]}\n  db: {servers: [{address: 'b:2'}]}\n",
            "{type: tcp}",
            {"app": ActiveCheck("tcp"), "db": ActiveCheck("tcp")},
            id="defaults-type-checks-every-pool",
        ),
    ],
)
def test_active_checks(pools: str, defaults: str, expected: dict[str, ActiveCheck]) -> None:
    config = load_config_text(_config(pools, defaults, tcp_pool="db:" in pools))
    assert active_checks(config) == expected


@pytest.mark.parametrize(
    ("expect", "status", "ok"),
    [
        (None, 200, True),
        (None, 204, True),
        (None, 302, True),
        (None, 404, False),
        (None, 503, False),
        (None, 101, False),
        (frozenset({200}), 200, True),
        (frozenset({200}), 204, False),
        (frozenset({503}), 503, True),
    ],
)
def test_expected_status(expect: frozenset[int] | None, status: int, ok: bool) -> None:
    assert ActiveCheck("http", expect_status=expect).status_ok(status) is ok


# -- rise and fall ----------------------------------------------------------------------------

# Results as a string: "+" a passing check, "-" a failing one. Expected: the transitions, as
# (index of the result that caused it, "UP"/"DOWN", checks in a row).
RISE_FALL = [
    pytest.param(2, 3, True, "+++", [], id="healthy-stays-up"),
    pytest.param(2, 3, True, "+--+--+", [], id="failures-below-fall-never-down"),
    pytest.param(2, 3, True, "+---", [(3, "DOWN", 3)], id="down-after-fall"),
    pytest.param(2, 3, True, "+------", [(3, "DOWN", 3)], id="down-reported-once"),
    pytest.param(2, 3, True, "+---++", [(3, "DOWN", 3), (5, "UP", 2)], id="up-after-rise"),
    pytest.param(2, 3, True, "+---+-++", [(3, "DOWN", 3), (7, "UP", 2)], id="rise-streak-resets"),
    pytest.param(2, 3, True, "-", [(0, "DOWN", 1)], id="unconfirmed-down-at-first-failure"),
    pytest.param(2, 3, True, "-+-++", [(0, "DOWN", 1), (4, "UP", 2)], id="unconfirmed-then-rise"),
    pytest.param(1, 1, True, "+-+-", [(1, "DOWN", 1), (2, "UP", 1), (3, "DOWN", 1)], id="1-1"),
    pytest.param(3, 2, False, "++-+++", [(5, "UP", 3)], id="starts-down"),
]


@pytest.mark.parametrize(("rise", "fall", "up", "results", "expected"), RISE_FALL)
def test_rise_and_fall(
    rise: int, fall: int, up: bool, results: str, expected: list[tuple[int, str, int]]
) -> None:
    counter = HealthCounter(rise, fall, up=up)
    seen = []
    for i, r in enumerate(results):
        change = counter.observe(r == "+")
        if change is not None:
            seen.append((i, "UP" if change.up else "DOWN", change.checks))
            assert counter.up is change.up
    assert seen == expected


def test_counter_validates_and_reprs() -> None:
    with pytest.raises(ValueError):
        HealthCounter(0, 3)
    counter = HealthCounter(2, 3)
    assert repr(counter) == "<HealthCounter up unconfirmed streak=0 rise=2 fall=3>"
    assert counter.observe(True) is None
    assert counter.observe(False) is None
    assert repr(counter) == "<HealthCounter up streak=1 rise=2 fall=3>"
    assert counter.observe(False) is None
    assert counter.observe(False) == Transition(False, 3)
    assert repr(counter) == "<HealthCounter down streak=0 rise=2 fall=3>"


# -- passive ejection -------------------------------------------------------------------------

# Events: (time, server, "f" failure / "s" success / "r" readmit at that time). Expected after
# each event: the set of servers ejected, and the outcome of a failure ("E<duration>" ejected,
# "C" capped, None).
P = PassivePolicy(consecutive_failures=3, base_ejection=10.0, max_ejected_percent=50)
PASSIVE = [
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f"), (1, "a", "f"), (2, "a", "f")],
        [None, None, "E10"],
        {"a"},
        id="ejected-after-n-failures",
    ),
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f"), (1, "a", "f"), (2, "a", "s"), (3, "a", "f"), (4, "a", "f")],
        [None, None, None, None, None],
        set(),
        id="success-resets-the-streak",
    ),
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f")] * 3 + [(5, "a", "f"), (9, "a", "r"), (10, "a", "r")],
        [None, None, "E10", None, None, None],
        set(),
        id="failures-while-ejected-ignored-then-readmitted",
    ),
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f")] * 3 + [(10, "a", "r")] + [(11, "a", "f")] * 3 + [(31, "a", "r")],
        [None, None, "E10", None, None, None, "E20", None],
        set(),
        id="second-ejection-twice-as-long",
    ),
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f")] * 3 + [(10, "a", "r")] + [(35, "a", "f")] * 3,
        [None, None, "E10", None, None, None, "E10"],
        {"a"},
        id="multiplier-decays-while-back",
    ),
    pytest.param(
        P,
        "abcd",
        [(0, "a", "f")] * 3 + [(0, "b", "f")] * 3 + [(0, "c", "f")] * 4,
        [None, None, "E10", None, None, "E10", None, None, "C", None],
        {"a", "b"},
        id="never-more-than-max-percent-capped-reported-once",
    ),
    pytest.param(
        P,
        "abc",
        [(0, "a", "f")] * 3 + [(0, "b", "f")] * 3 + [(10, "a", "r"), (11, "b", "f")],
        [None, None, "E10", None, None, "C", None, "E10"],
        {"b"},
        id="capped-server-ejected-once-room-frees",
    ),
    pytest.param(
        P,
        "a",
        [(0, "a", "f")] * 5,
        [None, None, "C", None, None],
        set(),
        id="single-server-pool-never-ejected-at-50",
    ),
    pytest.param(
        PassivePolicy(2, 100.0, 100, max_ejection=250.0),
        "ab",
        [(0, "a", "f")] * 2
        + [(100, "a", "r")]
        + [(100, "a", "f")] * 2
        + [(300, "a", "r")]
        # the third ejection would be 300s, capped at 250s
        + [(300, "a", "f")] * 2,
        [None, "E100", None, None, "E200", None, None, "E250"],
        {"a"},
        id="growth-capped",
    ),
]


@pytest.mark.parametrize(("policy", "servers", "events", "outcomes", "ejected"), PASSIVE)
def test_passive_ejection(
    policy: PassivePolicy,
    servers: str,
    events: list[tuple[float, str, str]],
    outcomes: list[str | None],
    ejected: set[str],
) -> None:
    detector = OutlierDetector(policy, list(servers))
    seen: list[str | None] = []
    for now, server, kind in events:
        if kind == "f":
            result = detector.failure(server, now)
            if result is None:
                seen.append(None)
            elif result.ejected:
                seen.append(f"E{result.duration:g}")
            else:
                seen.append("C")
        elif kind == "s":
            detector.success(server)
            seen.append(None)
        else:
            detector.readmit(now)
            seen.append(None)
    assert seen == outcomes
    assert {s for s in servers if detector.is_ejected(s)} == ejected
    assert detector.ejected_count == len(ejected)
    assert detector.ejected_count * 100 <= policy.max_ejected_percent * len(servers)


def test_readmit_times() -> None:
    detector = OutlierDetector(PassivePolicy(1, 10.0, 100), ["a", "b"])
    assert detector.next_readmit() is None
    detector.failure("a", 0.0)
    detector.failure("b", 5.0)
    assert detector.next_readmit() == 10.0
    assert detector.readmit(9.99) == []
    assert detector.readmit(10.0) == ["a"]
    assert detector.next_readmit() == 15.0
    assert detector.readmit(20.0) == ["b"]
    assert detector.next_readmit() is None
    assert detector.failure("unknown", 0.0) is None


def test_carry_over_keeps_shared_servers() -> None:
    old = OutlierDetector(PassivePolicy(1, 10.0, 100), ["a", "b"])
    old.failure("a", 0.0)
    new = OutlierDetector(PassivePolicy(1, 10.0, 100), ["a", "c"])
    new.carry_over(old)
    assert new.is_ejected("a") and not new.is_ejected("c")
    assert new.ejected_count == 1
    assert new.next_readmit() == 10.0
    old.readmit(10.0)  # the old detector no longer shares state with the new one
    assert new.is_ejected("a")
    assert repr(new) == "<OutlierDetector servers=2 ejected=1 after=1>"
