"""Choosing a server of a pool for one request: the balancing algorithms, sans-IO.

A pool's runtime state is a list of `ServerState`; the shell owns the numbers in it (it counts
`in_flight`, health checks set `healthy`, the admin API sets `drained`) and a `Balancer` only
reads them, plus the private bookkeeping of its own algorithm. `pick()` returns a server or
None ("503 no healthy backend"); it never blocks and never does I/O.

Rules shared by every algorithm:

- A server is a candidate when it is `available` (healthy, not drained, weight > 0) and not in
  `exclude` (the servers a retry already tried).
- Primaries first: backup servers are considered only when no primary is a candidate.
- `pick()` is O(n) in the number of servers with small constants (it is on the hot path of
  every request), except the hash ring's O(log points) lookup. Nothing is allocated per pick.

The algorithms (`balance:` in a pool's config):

round_robin
    Smooth weighted round robin, exactly as nginx does it (ngx_http_upstream_get_peer in
    src/http/ngx_http_upstream_round_robin.c, since nginx 1.3.1): on each pick every candidate's
    `current` grows by its weight, the candidate with the largest `current` wins (the first one
    on a tie) and loses the total weight of the candidates. Invariant: over any window of
    sum(weights) picks with a stable candidate set, each server is picked exactly `weight`
    times, and the picks of a heavy server are spread out (5,1,1 gives a a b a c a a) rather
    than bunched.
least_conn
    The candidate with the fewest `in_flight` per unit of weight (compared by
    cross-multiplication, so integers only). Ties go through smooth weighted round robin among
    the tied servers, as nginx's ngx_http_upstream_get_least_conn_peer does, so equal servers
    share the load.
random
    Weighted random: P(server) = weight / total weight of the candidates.
p2c
    Power of two choices (Mitzenmacher): draw two distinct candidates, each weighted by weight,
    and take the one with fewer `in_flight` per unit of weight (the first drawn on a tie).
    The most loaded candidate is never picked when there are two or more.
ip_hash, hash
    Consistent hashing of the `key` bytes (the client IP for ip_hash, the configured hash_key
    for hash) on a ring of 64-bit blake2b points, `POINTS_PER_WEIGHT` virtual nodes per unit of
    weight, named by the server's address so a server's points do not depend on the others.
    A key belongs to the first point clockwise of its hash; when that point's server is not a
    candidate, the key walks on to the next point whose server is. Invariant: taking a server
    away (unhealthy, drained, excluded or removed) moves only the keys it had, about 1/n of
    them, each to a surviving server; the others keep theirs. With key None it falls back to
    round_robin. The ring is built when the server list is set (or `rebuild()` is called),
    never per pick.

Changing the server list or a weight: assign `balancer.servers = new_list`, or mutate and call
`balancer.rebuild()`; the in-place flags (`healthy`, `drained`, `in_flight`) need neither, nor
does `effective`, the weight slow start ramps up (lb.core.slow_start): every algorithm reads it
per pick, except the hash ring, built from the configured weights (so slow start does not apply
to hash pools; validation refuses it there).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Collection, Sequence

__all__ = [
    "KINDS",
    "POINTS_PER_WEIGHT",
    "Balancer",
    "HashBalancer",
    "LeastConnBalancer",
    "P2CBalancer",
    "RandomBalancer",
    "RoundRobinBalancer",
    "ServerState",
    "make_balancer",
]

# nginx's consistent hash (ngx_http_upstream_hash_module) uses 160 points per unit of weight;
# enough that 10 equal servers each get their share within a few percent.
POINTS_PER_WEIGHT = 160
# Bound on the ring size, so a pool with huge weights still builds in milliseconds.
_MAX_POINTS = 160_000


class ServerState:
    """One configured server of a pool and its runtime state. Identity is the object itself."""

    __slots__ = (
        "_current",
        "_weight",
        "address",
        "backup",
        "drained",
        "effective",
        "healthy",
        "in_flight",
    )

    def __init__(self, address: str, weight: int = 1, backup: bool = False) -> None:
        if weight < 0:
            raise ValueError(f"server {address}: weight must be >= 0, got {weight}")
        self.address = address
        # The weight balancing uses: the configured one, except while the server slow-starts
        # (lb.core.slow_start), when it is a growing share of it. Setting `weight` resets it.
        self.effective: float = float(weight)
        self._weight = weight
        self.backup = backup
        self.in_flight = 0  # requests/connections using it now; the shell counts them
        self.healthy = True  # set by health checks
        self.drained = False  # set by the admin API
        self._current: float = 0.0  # smooth weighted round robin's running weight

    @property
    def weight(self) -> int:
        """The configured weight."""
        return self._weight

    @weight.setter
    def weight(self, weight: int) -> None:
        self._weight = weight
        self.effective = float(weight)

    @property
    def available(self) -> bool:
        return self.healthy and not self.drained and self.effective > 0

    def __repr__(self) -> str:
        if self.drained:
            status = "drained"
        elif not self.healthy:
            status = "down"
        else:
            status = "up"
        backup = " backup" if self.backup else ""
        w = f"{self.weight}" if self.effective == self.weight else f"{self.effective:.2f}"
        return f"<ServerState {self.address} w={w} in_flight={self.in_flight} {status}{backup}>"


# The candidate test, written out inline in every loop below instead of calling `available`:
#     s.healthy and not s.drained and s.effective > 0 and not (exclude and s in exclude)
# Balancing reads `effective` (a float while a server slow-starts, else the int weight).
# A property call per server per pick is a measurable share of a 3-server pick.


class Balancer:
    """Base class: keeps the server list split into primaries and backups.

    Subclasses implement `_pick_from(group, key, exclude)` for one group; `pick()` tries the
    primaries, then the backups.
    """

    kind = "base"

    def __init__(self, servers: Sequence[ServerState], rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._servers: list[ServerState] = []
        self._primaries: list[ServerState] = []
        self._backups: list[ServerState] = []
        self.servers = list(servers)

    @property
    def servers(self) -> list[ServerState]:
        return self._servers

    @servers.setter
    def servers(self, servers: list[ServerState]) -> None:
        self._servers = servers
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute derived state after the server list or a weight changed."""
        self._primaries = [s for s in self._servers if not s.backup]
        self._backups = [s for s in self._servers if s.backup]

    def pick(
        self, key: bytes | None = None, exclude: Collection[ServerState] = ()
    ) -> ServerState | None:
        """The server for this request, or None when no server can take it."""
        server = self._pick_from(self._primaries, key, exclude)
        if server is None and self._backups:
            server = self._pick_from(self._backups, key, exclude)
        return server

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} servers={self._servers!r}>"


def _smooth_rr(group: list[ServerState], exclude: Collection[ServerState]) -> ServerState | None:
    """nginx's smooth weighted round robin over the candidates of `group`."""
    if len(group) == 1:
        # A lone candidate is always the pick, and its running weight stays 0: no bookkeeping.
        s = group[0]
        if not s.healthy or s.drained or s.effective <= 0 or (exclude and s in exclude):
            return None
        return s
    best: ServerState | None = None
    best_current: float = 0.0
    total: float = 0.0
    for s in group:
        w = s.effective
        if not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
            continue
        current = s._current + w
        s._current = current
        total += w
        if best is None or current > best_current:
            best = s
            best_current = current
    if best is not None:
        best._current = best_current - total
    return best


class RoundRobinBalancer(Balancer):
    kind = "round_robin"

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        return _smooth_rr(group, exclude)


class LeastConnBalancer(Balancer):
    kind = "least_conn"

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        # Pass 1: the lowest in_flight/weight, as a/b < c/d <=> a*d < c*b for positive weights.
        best: ServerState | None = None
        tied = False
        for s in group:
            w = s.effective
            if not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
                continue
            if best is None:
                best = s
                continue
            lhs = s.in_flight * best.effective
            rhs = best.in_flight * w
            if lhs < rhs:
                best = s
                tied = False
            elif lhs == rhs:
                tied = True
        if best is None or not tied:
            return best
        # Pass 2 (nginx least_conn): smooth weighted round robin among the tied servers only.
        conns, weight = best.in_flight, best.effective
        chosen = best
        chosen_current: float = 0.0
        total: float = 0.0
        first = True
        for s in group:
            w = s.effective
            if not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
                continue
            if s.in_flight * weight != conns * w:
                continue
            current = s._current + w
            s._current = current
            total += w
            if first or current > chosen_current:
                chosen = s
                chosen_current = current
                first = False
        chosen._current = chosen_current - total
        return chosen


class RandomBalancer(Balancer):
    kind = "random"

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        total: float = 0.0
        for s in group:
            w = s.effective
            if not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
                continue
            total += w
        if total == 0:
            return None
        return _weighted_draw(group, exclude, self._rng.random() * total, None)


def _weighted_draw(
    group: list[ServerState],
    exclude: Collection[ServerState],
    point: float,
    skip: ServerState | None,
) -> ServerState | None:
    """The candidate (other than `skip`) whose weight interval contains `point`."""
    last: ServerState | None = None
    for s in group:
        w = s.effective
        if s is skip or not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
            continue
        if point < w:
            return s
        point -= w
        last = s
    return last  # only reached through float rounding at the very top of the range


class P2CBalancer(Balancer):
    kind = "p2c"

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        total: float = 0.0
        count = 0
        only: ServerState | None = None
        for s in group:
            w = s.effective
            if not s.healthy or s.drained or w <= 0 or (exclude and s in exclude):
                continue
            total += w
            count += 1
            only = s
        if count <= 1:
            return only
        rand = self._rng.random
        a = _weighted_draw(group, exclude, rand() * total, None)
        assert a is not None
        b = _weighted_draw(group, exclude, rand() * (total - a.effective), a)
        assert b is not None
        # Lower in_flight/weight wins; cross-multiplied, so no division.
        return b if b.in_flight * a.effective < a.in_flight * b.effective else a


def _point(data: bytes) -> int:
    """A stable 64-bit hash: blake2b, never Python's per-process randomized hash()."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _Ring:
    """A consistent-hash ring of one group: sorted points and the server owning each."""

    __slots__ = ("owners", "points")

    def __init__(self, group: list[ServerState]) -> None:
        total_weight = sum(s.weight for s in group if s.weight > 0)
        per_weight = POINTS_PER_WEIGHT
        if total_weight * per_weight > _MAX_POINTS:
            per_weight = max(1, _MAX_POINTS // total_weight)
        pairs: list[tuple[int, int, ServerState]] = []
        for index, s in enumerate(group):
            prefix = s.address.encode()
            for i in range(s.weight * per_weight):
                # The index only orders two servers sharing an address (and so every point).
                pairs.append((_point(b"%s-%d" % (prefix, i)), index, s))
        pairs.sort(key=lambda p: (p[0], p[1]))
        self.points = [p[0] for p in pairs]
        self.owners = [p[2] for p in pairs]

    def lookup(
        self, key: bytes, group: list[ServerState], exclude: Collection[ServerState]
    ) -> ServerState | None:
        owners = self.owners
        n = len(owners)
        if n == 0:
            return None
        i = bisect.bisect_left(self.points, _point(key))
        if i == n:
            i = 0
        s = owners[i]
        if s.healthy and not s.drained and s.effective > 0 and not (exclude and s in exclude):
            return s  # the common case: the key's own server can take it
        # Walk clockwise to the next candidate, after making sure there is one to find
        # (a plain loop: any() over a generator costs twice as much for a few servers).
        for c in group:
            if c.healthy and not c.drained and c.effective > 0 and not (exclude and c in exclude):
                break
        else:
            return None
        while True:
            i += 1
            if i == n:
                i = 0
            s = owners[i]
            if s.healthy and not s.drained and s.effective > 0 and not (exclude and s in exclude):
                return s


class HashBalancer(Balancer):
    """Consistent hashing on `key`: `ip_hash` and `hash` differ only in the key the shell passes."""

    def __init__(
        self,
        servers: Sequence[ServerState],
        rng: random.Random | None = None,
        kind: str = "hash",
    ) -> None:
        self.kind = kind
        super().__init__(servers, rng)

    def rebuild(self) -> None:
        super().rebuild()
        self._primary_ring = _Ring(self._primaries)
        self._backup_ring = _Ring(self._backups)

    def pick(
        self, key: bytes | None = None, exclude: Collection[ServerState] = ()
    ) -> ServerState | None:
        if key is None:
            return super().pick(None, exclude)  # round robin, through _pick_from
        server = self._primary_ring.lookup(key, self._primaries, exclude)
        if server is None and self._backups:
            server = self._backup_ring.lookup(key, self._backups, exclude)
        return server

    def _pick_from(
        self, group: list[ServerState], key: bytes | None, exclude: Collection[ServerState]
    ) -> ServerState | None:
        return _smooth_rr(group, exclude)


_FACTORIES: dict[str, Callable[[list[ServerState], random.Random | None], Balancer]] = {
    "round_robin": RoundRobinBalancer,
    "least_conn": LeastConnBalancer,
    "random": RandomBalancer,
    "p2c": P2CBalancer,
    "ip_hash": lambda servers, rng: HashBalancer(servers, rng, kind="ip_hash"),
    "hash": lambda servers, rng: HashBalancer(servers, rng, kind="hash"),
}
KINDS = tuple(_FACTORIES)


def make_balancer(
    kind: str, servers: list[ServerState], rng: random.Random | None = None
) -> Balancer:
    """The balancer for a pool's `balance:` value; `rng` makes random and p2c reproducible."""
    try:
        factory = _FACTORIES[kind]
    except KeyError:
        raise ValueError(f"unknown balance {kind!r}: expected one of {', '.join(KINDS)}") from None
    return factory(servers, rng)
