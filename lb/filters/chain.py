"""The filters of one (listener, route) chain, in the order their hooks run.

Adding a filter: write its module with a `build(ctx) -> Filter | None` (None: this listener or
route does not use it) and add that function to `BUILDERS` where its hooks should run. A route
that does not use a filter gets none of its code on its request path.
"""

from __future__ import annotations

from collections.abc import Callable

from lb.filters import (
    access_log,
    cache,
    canary,
    hsts,
    jobs,
    metrics,
    offload,
    rate_limit,
    redirect,
    sticky,
)
from lb.filters.context import BuildContext
from lb.proxy.http.pipeline import Filter

BUILDERS: list[Callable[[BuildContext], Filter | None]] = [
    redirect.build,  # answers before anything else is decided
    jobs.build,  # /_lb/jobs/{id}, whichever route the path matched
    rate_limit.build,  # may answer 429 before a pool is chosen
    offload.build,  # stores the request as a job, answers 202
    canary.build,  # chooses the pool: a split's arm
    sticky.build,  # chooses the server within it
    cache.build,  # may answer from the cache; stores what the server sends
    hsts.build,
    metrics.build,  # log phase
    access_log.build,  # log phase
]


def filters_for(ctx: BuildContext) -> list[Filter]:
    return [f for build in BUILDERS if (f := build(ctx)) is not None]
