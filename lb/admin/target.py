"""What the admin listener reads and asks of the supervisor that runs it, as a protocol, so
the admin modules do not import the supervisor that starts them."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from lb.config.schema import Config
from lb.stores import Stores


class WorkerView(Protocol):
    index: int
    proc: subprocess.Popen[bytes]
    restarts: int
    ready: bool


class Supervised(Protocol):
    config: Config
    stores: Stores
    config_path: str
    loaded_at: float
    generation: int

    @property
    def workers(self) -> Sequence[WorkerView]: ...

    def reload(self) -> list[str]: ...
    def rearm(self, route: str) -> str | None: ...
    def drain(self, pool: str, address: str, drained: bool) -> str | None: ...
    async def purge_cache(self, kind: str, value: str) -> tuple[int, list[int]]: ...
