"""Durations ("250ms", "5s", "1h") and sizes ("64KiB", "1MiB") as they are written in YAML."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "k": 1024,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


def parse_duration(value: object) -> float:
    """A duration string to seconds. Bare numbers are refused: '30' could mean s or ms."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"duration {value!r}: write a number and a unit, e.g. 250ms, 5s, 2m, 1h")


def parse_size(value: object) -> int:
    """A size to bytes: a bare integer is bytes; units are binary (KiB) or decimal (KB)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError(f"size {value!r}: write bytes or a number and a unit, e.g. 64KiB, 1MiB")


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float:
    """A rate ("100/s", "30/m", "1000/h") to requests per second, above 0."""
    if isinstance(value, str):
        m = _RATE.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) / _RATE_UNITS[m.group(2)]
    raise ValueError(f"rate {value!r}: write requests per unit above 0, e.g. 100/s, 30/m, 1000/h")
