"""The access log: one line per request, JSON by default, buffered.

Lines are collected in memory and written at most every FLUSH_INTERVAL seconds or every
MAX_BUFFERED lines, so leaving the log on costs one dict and one json.dumps per request rather
than a system call.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

from lb.config.schema import AccessLogConfig

FLUSH_INTERVAL = 0.5
MAX_BUFFERED = 256


class AccessLog:
    def __init__(self, config: AccessLogConfig) -> None:
        self.enabled = config.enabled
        self._json = config.format == "json"
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()
        self._file: IO[str] | None = None
        self._fd = 1
        if config.enabled and config.path != "-":
            self._file = open(config.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._fd = self._file.fileno()

    def log(self, record: dict[str, Any]) -> None:
        if self._json:
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = " ".join(f"{k}={v}" for k, v in record.items())
        self._buffer.append(line)
        if len(self._buffer) >= MAX_BUFFERED:
            self.flush()

    def maybe_flush(self) -> None:
        if self._buffer and time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        data = ("\n".join(self._buffer) + "\n").encode()
        self._buffer.clear()
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            pass  # a closed stdout must not take the proxy down

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
