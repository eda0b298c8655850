"""Balancing algorithms, as tables: each test asserts what a user of the pool would notice."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lb.core.balancer import KINDS, Balancer, ServerState, make_balancer


def pool(*weights: int, backups: tuple[int, ...] = ()) -> list[ServerState]:
    """Servers named a, b, c... with these weights, then backups named x, y, z..."""
    primaries = [ServerState(chr(ord("a") + i), w) for i, w in enumerate(weights)]
    return primaries + [
        ServerState(chr(ord("x") + i), w, backup=True) for i, w in enumerate(backups)
    ]


def picks(balancer: Balancer, n: int, key: bytes | None = None) -> str:
    out = []
    for _ in range(n):
        server = balancer.pick(key)
        assert server is not None
        out.append(server.address)
    return "".join(out)


def by_name(servers: list[ServerState]) -> dict[str, ServerState]:
    return {s.address: s for s in servers}


# --- ServerState ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthy", "drained", "weight", "available", "text"),
    [
        (True, False, 3, True, "<ServerState 127.0.0.1:9001 w=3 in_flight=2 up>"),
        (False, False, 3, False, "<ServerState 127.0.0.1:9001 w=3 in_flight=2 down>"),
        (True, True, 3, False, "<ServerState 127.0.0.1:9001 w=3 in_flight=2 drained>"),
        (True, False, 0, False, "<ServerState 127.0.0.1:9001 w=0 in_flight=2 up>"),
    ],
)
def test_server_state(
    healthy: bool, drained: bool, weight: int, available: bool, text: str
) -> None:
    s = ServerState("127.0.0.1:9001", weight)
    s.healthy, s.drained, s.in_flight = healthy, drained, 2
    assert s.available is available
    assert repr(s) == text


def test_server_state_repr_names_backup_and_rejects_negative_weight() -> None:
    assert repr(ServerState("b:1", backup=True)) == "<ServerState b:1 w=1 in_flight=0 up backup>"
    with pytest.raises(ValueError, match="weight"):
        ServerState("a:1", -1)


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("fastest", pool(1))


# --- round_robin ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "sequence"),
    [
        ((5, 1, 1), "aabacaa" * 3),  # nginx's own example
        ((1, 1, 1), "abcabcabc"),
        ((1,), "aaa"),
        ((2, 1), "abaaba"),
        ((0, 1, 1), "bcbc"),
    ],
)
def test_smooth_round_robin_sequence(weights: tuple[int, ...], sequence: str) -> None:
    assert picks(make_balancer("round_robin", pool(*weights)), len(sequence)) == sequence


@pytest.mark.parametrize("weights", [(5, 1, 1), (4, 2, 1), (1, 1, 1, 1, 3), (7,)])
def test_round_robin_weights_exact_over_700(weights: tuple[int, ...]) -> None:
    balancer = make_balancer("round_robin", pool(*weights))
    n = 700
    counts = Counter(picks(balancer, n))
    total = sum(weights)
    assert n % total == 0
    assert [counts[chr(ord("a") + i)] for i in range(len(weights))] == [
        n * w // total for w in weights
    ]


# --- least_conn -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "in_flight", "expected"),
    [
        ((1, 1, 1), (3, 1, 2), "b"),
        ((1, 1, 1), (0, 0, 1), "a"),  # tie between a and b: the rotation starts at a
        ((1, 2), (2, 3), "b"),  # 3/2 < 2/1
        ((1, 3), (1, 3), "b"),  # 1/1 == 3/3: the tie goes through smooth RR, heavier first
        ((3, 1), (4, 1), "b"),  # 1/1 < 4/3
        ((1, 1), (5, 4), "b"),
    ],
)
def test_least_conn_prefers_lowest_in_flight_per_weight(
    weights: tuple[int, ...], in_flight: tuple[int, ...], expected: str
) -> None:
    servers = pool(*weights)
    for s, n in zip(servers, in_flight, strict=True):
        s.in_flight = n
    picked = make_balancer("least_conn", servers).pick()
    assert picked is not None
    assert picked.address == expected


def test_least_conn_ties_rotate() -> None:
    balancer = make_balancer("least_conn", pool(1, 1, 1))
    assert picks(balancer, 6) == "abcabc"


def test_least_conn_weighted_ties_share_by_weight() -> None:
    balancer = make_balancer("least_conn", pool(3, 1))
    assert Counter(picks(balancer, 400)) == {"a": 300, "b": 100}


def test_least_conn_spreads_load_when_requests_stay_open() -> None:
    # Each pick takes a slot and keeps it: the pool fills up evenly per unit of weight.
    servers = pool(2, 1, 1)
    balancer = make_balancer("least_conn", servers)
    for _ in range(40):
        server = balancer.pick()
        assert server is not None
        server.in_flight += 1
    assert [s.in_flight for s in servers] == [20, 10, 10]


# --- random and p2c -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "p2c"])
@pytest.mark.parametrize("weights", [(1, 1, 1), (5, 1, 1), (3, 2, 0, 5), (1, 9)])
def test_random_choice_follows_weights(kind: str, weights: tuple[int, ...]) -> None:
    balancer = make_balancer(kind, pool(*weights), rng=random.Random(42))
    n = 10_000
    counts = Counter(picks(balancer, n))
    total = sum(weights)
    for i, w in enumerate(weights):
        share = counts[chr(ord("a") + i)] / n
        assert abs(share - w / total) < 0.02, (i, share)


def test_random_is_reproducible_with_a_seed() -> None:
    first = picks(make_balancer("random", pool(1, 1, 1), rng=random.Random(7)), 50)
    again = picks(make_balancer("random", pool(1, 1, 1), rng=random.Random(7)), 50)
    assert first == again


@pytest.mark.parametrize(
    ("weights", "in_flight", "expected"),
    [
        ((1, 1), (5, 2), "b"),
        ((1, 1), (0, 1), "a"),
        ((1, 2), (2, 3), "b"),  # 3/2 < 2/1
        ((4, 1), (7, 2), "a"),  # 7/4 < 2/1
    ],
)
def test_p2c_with_two_servers_never_picks_the_more_loaded(
    weights: tuple[int, ...], in_flight: tuple[int, ...], expected: str
) -> None:
    servers = pool(*weights)
    for s, n in zip(servers, in_flight, strict=True):
        s.in_flight = n
    balancer = make_balancer("p2c", servers, rng=random.Random(3))
    assert set(picks(balancer, 1000)) == {expected}


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    servers = pool(1, 1, 1)
    for s, n in zip(servers, (1, 9, 2), strict=True):
        s.in_flight = n
    counts = Counter(picks(make_balancer("p2c", servers, rng=random.Random(5)), 3000))
    assert counts["b"] == 0
    assert counts["a"] > counts["c"] > 0  # c wins only when drawn against b


# --- hash and ip_hash -----------------------------------------------------------------------

KEYS = [b"10.0.%d.%d" % (i // 256, i % 256) for i in range(10_000)]


def mapping(balancer: Balancer) -> dict[bytes, str]:
    out = {}
    for key in KEYS:
        server = balancer.pick(key)
        assert server is not None
        out[key] = server.address
    return out


def ten_servers() -> list[ServerState]:
    return [ServerState(f"10.1.0.{i}:8080") for i in range(10)]


@pytest.mark.parametrize("kind", ["hash", "ip_hash"])
def test_hash_same_key_same_server(kind: str) -> None:
    balancer = make_balancer(kind, ten_servers())
    other = make_balancer(kind, ten_servers())  # another worker process: same ring
    for key in KEYS[:200]:
        assert balancer.pick(key) is balancer.pick(key)
        first, second = balancer.pick(key), other.pick(key)
        assert first is not None and second is not None
        assert first.address == second.address


def test_hash_removing_one_of_ten_moves_only_its_keys() -> None:
    servers = ten_servers()
    balancer = make_balancer("hash", servers)
    before = mapping(balancer)
    removed = servers[3]
    balancer.servers = [s for s in servers if s is not removed]
    after = mapping(balancer)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert 0.05 <= len(moved) / len(KEYS) <= 0.15
    assert all(before[k] == removed.address for k in moved)
    assert removed.address not in after.values()


@pytest.mark.parametrize("how", ["unhealthy", "drained", "excluded"])
def test_hash_taking_a_server_away_moves_only_its_keys(how: str) -> None:
    servers = ten_servers()
    balancer = make_balancer("hash", servers)
    before = mapping(balancer)
    gone = servers[7]
    exclude: tuple[ServerState, ...] = ()
    if how == "unhealthy":
        gone.healthy = False
    elif how == "drained":
        gone.drained = True
    else:
        exclude = (gone,)
    after = {}
    for key in KEYS:
        server = balancer.pick(key, exclude)
        assert server is not None
        after[key] = server.address
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone.address}
    assert 0.05 <= len(moved) / len(KEYS) <= 0.15
    # Moved keys spread over the survivors rather than piling onto one neighbour.
    assert len({after[k] for k in moved}) >= 5
    # Back up: every key goes home.
    gone.healthy, gone.drained = True, False
    assert mapping(balancer) == before


def test_hash_distribution_follows_weight() -> None:
    servers = [ServerState("s1:80", 1), ServerState("s2:80", 2), ServerState("s3:80", 3)]
    counts = Counter(mapping(make_balancer("hash", servers)).values())
    for s in servers:
        assert abs(counts[s.address] / len(KEYS) - s.weight / 6) < 0.05, counts


def test_hash_equal_weights_roughly_even() -> None:
    counts = Counter(mapping(make_balancer("hash", ten_servers())).values())
    assert all(700 <= c <= 1300 for c in counts.values()), counts


def test_hash_without_key_falls_back_to_round_robin() -> None:
    assert picks(make_balancer("hash", pool(5, 1, 1)), 7) == "aabacaa"


def test_hash_all_primaries_down_uses_backups_consistently() -> None:
    servers = pool(1, 1, backups=(1, 1))
    for s in servers[:2]:
        s.healthy = False
    balancer = make_balancer("ip_hash", servers)
    first = {k: balancer.pick(k) for k in KEYS[:100]}
    assert {s.address for s in first.values() if s} == {"x", "y"}
    assert all(balancer.pick(k) is s for k, s in first.items())


# --- rules shared by every algorithm --------------------------------------------------------

ALL = pytest.mark.parametrize("kind", KINDS)
KEY_OR_NONE = pytest.mark.parametrize("key", [None, b"203.0.113.9"])


@ALL
@KEY_OR_NONE
def test_backup_only_when_no_primary_can_take_it(kind: str, key: bytes | None) -> None:
    servers = pool(1, 1, backups=(1,))
    s = by_name(servers)
    balancer = make_balancer(kind, servers, rng=random.Random(1))
    for _ in range(50):
        picked = balancer.pick(key)
        assert picked is not None and not picked.backup
    s["a"].healthy = False
    s["b"].drained = True
    assert balancer.pick(key) is s["x"]
    s["b"].drained = False
    assert balancer.pick(key) is s["b"]
    assert balancer.pick(key, exclude={s["b"]}) is s["x"]  # retry: every primary tried


@ALL
@KEY_OR_NONE
def test_drained_unhealthy_and_weight_zero_are_skipped(kind: str, key: bytes | None) -> None:
    servers = pool(1, 1, 1, 0)
    s = by_name(servers)
    s["a"].healthy = False
    s["b"].drained = True
    balancer = make_balancer(kind, servers, rng=random.Random(1))
    assert {balancer.pick(key) for _ in range(50)} == {s["c"]}


@ALL
@KEY_OR_NONE
def test_retry_excludes_the_failed_server(kind: str, key: bytes | None) -> None:
    servers = pool(1, 1, 1)
    balancer = make_balancer(kind, servers, rng=random.Random(1))
    for _ in range(30):
        first = balancer.pick(key)
        assert first is not None
        second = balancer.pick(key, exclude=(first,))
        assert second is not None and second is not first
        third = balancer.pick(key, exclude=[first, second])
        assert third is not None and third not in (first, second)
        assert balancer.pick(key, exclude={first, second, third}) is None


@ALL
@KEY_OR_NONE
@pytest.mark.parametrize(
    "state",
    ["empty", "all_unhealthy", "all_drained", "all_weight_zero", "backups_down_too"],
)
def test_none_when_nothing_can_take_it(kind: str, key: bytes | None, state: str) -> None:
    if state == "empty":
        servers: list[ServerState] = []
    elif state == "all_weight_zero":
        servers = pool(0, 0)
    else:
        servers = pool(1, 2, backups=(1,) if state == "backups_down_too" else ())
        for s in servers:
            if state == "all_drained":
                s.drained = True
            else:
                s.healthy = False
    assert make_balancer(kind, servers).pick(key) is None


@ALL
def test_only_backups_configured(kind: str) -> None:
    servers = pool(backups=(1,))
    assert make_balancer(kind, servers).pick(b"k") is servers[0]


@ALL
def test_assigning_servers_rebuilds(kind: str) -> None:
    balancer = make_balancer(kind, pool(1, 1))
    new = [ServerState("n:1")]
    balancer.servers = new
    assert balancer.servers is new
    assert balancer.pick(b"k") is new[0]
    assert balancer.pick() is new[0]
    assert kind in repr(balancer)
