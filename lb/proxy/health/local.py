"""Health checks, a worker process's side: probe for itself (`LocalHealth`, no supervisor), and
carry what was known over a reload. Under `lb run` the supervisor probes instead and workers
read its verdicts (lb.proxy.health.channel, which also picks one of the two)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lb.core.health import active_checks
from lb.proxy.health.probes import ActiveChecker, Target

if TYPE_CHECKING:
    from lb.proxy.runtime import Runtime


# -- the worker's side: probe itself, or read the supervisor's verdicts ------------------------


class WorkerHealth(Protocol):
    def start(self, runtime: Runtime) -> None: ...
    def reload(self, old: Runtime, new: Runtime) -> None: ...
    def stop(self) -> None: ...


def carry_over(old: Runtime, new: Runtime) -> None:
    """After a reload: each pool of `new` takes what its namesake in `old` knew; the old
    pools' readmission timers stop."""
    checked = active_checks(new.config)
    for name, pool in new.pools.items():
        previous = old.pools.get(name)
        if previous is not None:
            pool.health.carry_over(previous.health, active=name in checked)
    for pool in old.pools.values():
        pool.health.close()


class LocalHealth:
    """A worker that probes for itself (no supervisor)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.checker = ActiveChecker(self._changed)

    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._check(runtime)

    def reload(self, old: Runtime, new: Runtime) -> None:
        carry_over(old, new)
        self.runtime = new
        self._check(new)

    def _check(self, runtime: Runtime) -> None:
        self.checker.set_config(runtime.config)
        for target in self.checker.targets.values():
            runtime.pools[target.pool].health.set_active(target.address, target.counter.up)
        for name in {t.pool for t in self.checker.targets.values()}:
            runtime.pools[name].health.publish()

    def stop(self) -> None:
        self.checker.stop()
        if self.runtime is not None:
            for pool in self.runtime.pools.values():
                pool.health.close()

    def _changed(self, target: Target, up: bool) -> None:
        pool = self.runtime.pools.get(target.pool) if self.runtime is not None else None
        if pool is not None:
            pool.health.set_active(target.address, up)
