"""The access log: where lines go, how values are escaped, and the lines of refused connections.

A request's line is formatted in the log phase by lb.filters.access_log, from templates built
once per (listener, route); this module holds what those templates share: the escaping, the
NCSA clock, the buffer of lines (`AccessLog`, compiled with the hot path: the log phase of every
request reads it) and `AccessLog.log` for the rare record with no request behind it (a
connection refused before its head was read). The thread that writes the lines is in
lb.access_log_writer.

Formats (`access_log.format`): `json` (one object per line, the default), `combined` (the NCSA
combined format of Apache and nginx, which log tools read) and `text` (`key=value` pairs,
logfmt: a value is quoted, JSON-style, when it holds a space, `=`, a quote or anything but
printable ASCII).

Invariants:
- One request, one line: every value that can come from a client (path, host, request id,
  Referer, User-Agent, target, error detail) is escaped, so no line holds a raw newline, quote
  or control byte, and every line is ASCII. Values lb makes itself (numbers, IP addresses, the
  method, which both parsers only accept as an RFC 9110 token) go in as they are; names from the
  config are escaped once, when the templates are built.
- A request's json or text line is formatted with those of other requests, MAX_DEFERRED at a
  time, from what its log phase kept (the session, the times it ended): the values are those
  at its end.
- The event loop never waits for the disk. Lines are collected in memory and handed over,
  joined, at most every FLUSH_INTERVAL seconds or MAX_BUFFERED lines, to the process's one
  writer thread, which does the os.write (it releases the GIL). A file that does not keep up (a
  stalled disk, a stdout pipe nobody reads) makes lines be dropped past MAX_PENDING bytes
  waiting, counted and warned about, rather than slow requests down or grow without bound.
- One thread writes every line of a process, in the order handed over, so lines keep their
  order across a reopening (SIGHUP): the old file gets its last lines, then is closed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

from lb.access_log_writer import writer_thread
from lb.config.schema import AccessLogConfig

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
MAX_BUFFERED = 256  # lines: a request never waits for more than one join and a queue put
# Requests whose line is formatted later, together: formatting a few dozen lines in one go
# runs on warm caches, where one line at the end of each request (after the accept, the
# parsing, the server's answer) ran cold, at several times the cost. Few enough that the
# batch holds the loop for well under a millisecond.
MAX_DEFERRED = 32
MAX_PENDING = 16 * 1024 * 1024  # bytes handed to the writer thread and not yet written

# JSON: a str as a quoted JSON string, non-ASCII as \uXXXX (the C encoder json.dumps uses).
json_quote: Callable[[str], str] = encode_basestring_ascii

# NCSA: what is not printable ASCII, and the quote and backslash, as \xHH (as nginx does).
_NCSA_UNSAFE = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _hex(match: re.Match[bytes]) -> bytes:
    return b"\\x%02X" % match[0][0]


def ncsa_escape(value: bytes) -> str:
    """Raw bytes (a target, a header value) as they go between quotes in a combined line."""
    if _NCSA_UNSAFE.search(value) is None:
        return value.decode("ascii")
    return _NCSA_UNSAFE.sub(_hex, value).decode("ascii")


# logfmt: a bare value is printable ASCII without space, quote, `=` or backslash.
_LOGFMT_BARE = re.compile(r"[!#-<>-\[\]-~]+")


def logfmt_quote(value: str) -> str:
    return value if _LOGFMT_BARE.fullmatch(value) else encode_basestring_ascii(value)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class NcsaClock:
    """The time as combined lines show it, `26/Nov/2026:15:00:00 +0000` (local time, English
    month whatever the locale), worked out once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            tm = time.localtime(second)
            off = tm.tm_gmtoff // 60
            sign, off = ("-", -off) if off < 0 else ("+", off)
            self._text = (
                f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:{tm.tm_hour:02d}:"
                f"{tm.tm_min:02d}:{tm.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"
            )
            self._second = second
        return self._text


def format_record(fmt: str, record: Mapping[str, Any], clock: NcsaClock | None = None) -> str:
    """One line from a record's fields, in `fmt`: the cold path, for what has no request."""
    if fmt == "json":
        return json.dumps(record, separators=(",", ":"))
    if fmt == "combined":
        status, sent = record.get("status", 0), record.get("bytes", 0)
        stamp = (clock or NcsaClock()).now()
        return f'{record.get("client", "-")} - - [{stamp}] "-" {status} {sent} "-" "-"'
    return " ".join(
        f"{k}={logfmt_quote(v) if isinstance(v, str) else v}" for k, v in record.items()
    )


class LineFormatter(Protocol):
    """A log-phase filter that defers its lines (lb.filters.access_log.LogRequests)."""

    def format_lines(self, requests: list[Any], lines: list[str]) -> None: ...


class AccessLog:
    """One opened access log: lines buffered here, handed to the writer thread in batches.
    The log phase appends to `lines` through `add`, or leaves what a line needs in
    `deferred`, as (formatter, session, time), for `format_deferred` to format
    in a batch; SIGHUP makes a new one and closes this."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.enabled = config.enabled
        self.format = config.format
        self.lines: list[str] = []
        self.deferred: list[tuple[LineFormatter, Any, float]] = []
        self.dropped = 0  # lines lost because the writer fell MAX_PENDING bytes behind
        self._last_flush = time.monotonic()
        self._clock = NcsaClock()
        self._fd = 1
        self._owns_fd = False
        if config.enabled and config.path != "-":
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(config.path, flags, 0o666)
            self._owns_fd = True

    def add(self, line: str) -> None:
        """A formatted line (no newline)."""
        self._format_deferred()  # the lines of requests that ended before it come first
        lines = self.lines
        lines.append(line)
        if len(lines) >= MAX_BUFFERED:
            self.flush()

    def log(self, record: Mapping[str, Any]) -> None:
        """A record without a request behind it (a refused connection), in this log's format."""
        self.add(format_record(self.format, record, self._clock))

    def format_deferred(self) -> None:
        """The deferred requests' lines, formatted and buffered (handed over when enough)."""
        self._format_deferred()
        if len(self.lines) >= MAX_BUFFERED:
            self.flush()

    def _format_deferred(self) -> None:
        # By the filter of the first: it formats each with its own filter's format.
        deferred = self.deferred
        if deferred:
            self.deferred = []
            deferred[0][0].format_lines(deferred, self.lines)

    def maybe_flush(self) -> None:
        if (self.lines or self.deferred) and time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        self._format_deferred()
        lines = self.lines
        if not lines:
            return
        if self._fd < 0:  # closed: its fd number may be another file's by now
            lines.clear()
            return
        count = len(lines)
        lines.append("")  # for the last newline, joined rather than added (one copy less)
        data = "\n".join(lines).encode("ascii", "backslashreplace")
        if writer_thread.pending + len(data) > MAX_PENDING:
            if not self.dropped:
                log.warning(
                    "access log: the writer is %d bytes behind; dropping lines until it catches up",
                    writer_thread.pending,
                )
            self.dropped += count
        else:
            writer_thread.write(self._fd, data)
        lines.clear()

    def close(self, wait: float = 0.0) -> None:
        """Hand over what is buffered, then close the file after it; with `wait`, block up to
        that many seconds until it is written (at exit, not on a reload)."""
        self.flush()
        was_enabled, self.enabled = self.enabled, False
        if self._owns_fd:
            writer_thread.close(self._fd)
            self._owns_fd = False
            self._fd = -1
        if wait > 0 and was_enabled and not writer_thread.drain(wait):
            log.warning("access log: lines still unwritten after %gs; they may be lost", wait)
