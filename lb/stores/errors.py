"""Errors the stores raise, the same for every implementation: callers never see redis-py's."""

from __future__ import annotations


class StoreError(Exception):
    """A store could not do what was asked (a bug or a Redis answer we did not expect)."""


class StoreUnavailable(StoreError):
    """The store's server is down or did not answer within its timeout. The caller degrades
    (the cache is bypassed, offload answers 503, a rate limit applies `on_store_error`)."""


class QueueFull(StoreError):
    """A queue already holds `max_length` jobs (waiting or in flight): offload answers 503."""

    def __init__(self, queue: str, max_length: int) -> None:
        super().__init__(f"queue {queue!r} is full ({max_length} jobs)")
        self.queue = queue
        self.max_length = max_length
