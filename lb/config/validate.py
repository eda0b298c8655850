"""Checks on a built `Config` that need more than one field: names that reference each other,
binds that collide, routes that can never match, keys that only make sense in another mode.

Pure: takes a `Config`, returns every `Problem` it finds (never stops at the first), each with a
path such as `routes[2].split[1].pool` and no line; `lb.config.load` attaches the YAML line.
An empty list means the config can be served. The checks of each section live in
`listener_checks`, `route_checks`, `pool_checks` and `tls_checks`; the small ones on `redis`
and `queues` are here.
"""

from __future__ import annotations

from collections.abc import Iterator

from lb.config.listener_checks import bind_problems, listener_problems
from lb.config.pool_checks import pool_problems
from lb.config.problems import Loc, Problem, Skipped, format_path
from lb.config.route_checks import route_problems
from lb.config.schema import Config
from lb.config.tls_checks import tls_problems

__all__ = ["validate"]

_NOTHING_SKIPPED = Skipped()


def validate(config: Config, skipped: Skipped = _NOTHING_SKIPPED) -> list[Problem]:
    """Every cross-field problem in `config`, in the order of the file's sections. `skipped`:
    what failed the schema and is not in `config` (nothing, for a config that passed)."""
    return [Problem(format_path(loc), message) for loc, message in _check(config, skipped)]


def _check(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    yield from listener_problems(config, skipped)
    yield from route_problems(config, skipped)
    yield from pool_problems(config, skipped)
    yield from tls_problems(config)
    yield from bind_problems(config)
    yield from _redis(config)
    yield from _queues(config)


def _redis(config: Config) -> Iterator[tuple[Loc, str]]:
    redis = config.redis
    if redis is None or redis.url is None:
        return
    # A url carries its own database and credentials; a second place to say them would let
    # the two disagree.
    examples = {
        "db": "redis://host:6379/2",
        "username": "redis://user:password@host:6379/0",
        "password": "redis://:password@host:6379/0",
    }
    for key, example in examples.items():
        if getattr(redis, key) is not None:
            yield ("redis", key), f"only with sentinel; with url, put it in the url: {example}"


def _queues(config: Config) -> Iterator[tuple[Loc, str]]:
    for name, queue in config.queues.items():
        loc: Loc = ("queues", name)
        if queue.job_timeout >= queue.ack_timeout:
            yield (
                (*loc, "job_timeout"),
                f"must be under ack_timeout ({queue.ack_timeout:g}s), or a job still running "
                "is given to a second worker",
            )
        if queue.backoff.base > queue.backoff.max:
            yield (*loc, "backoff", "base"), f"over backoff.max ({queue.backoff.max:g}s)"
