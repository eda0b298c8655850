"""The pieces every section of the config schema is built from: the strict frozen `Model`,
durations and sizes as they are written in YAML, timeouts, header names, percentages and
HOST:PORT addresses.

Every model forbids unknown keys: a typo in a hand-edited file is an error, never silently
ignored. Durations are parsed to float seconds, sizes to int bytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from lb.config.units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Model):
    """All optional: a listener's or route's `timeouts` override only what they name."""

    connect: Duration | None = None  # TCP connect to a server
    client_header: Duration | None = None  # whole request head from the client, else 408
    request: Duration | None = None  # request sent -> response head, and between reads after
    idle: Duration | None = None  # keep-alive connection with no request in flight
    tunnel: Duration | None = None  # an Upgrade/WebSocket tunnel with no byte either way


class ResolvedTimeouts(Model):
    """`defaults.timeouts`: every timeout has a value. Durations, like everywhere else."""

    connect: Duration = 2.0
    client_header: Duration = 10.0
    request: Duration = 30.0
    idle: Duration = 60.0
    tunnel: Duration = 3600.0  # HAProxy's `timeout tunnel`: a peer that vanished silently

    def merged(self, override: Timeouts | None) -> ResolvedTimeouts:
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes) if changes else self


# An RFC 9110 token: what a header name (and a cookie name) may be.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def fraction(v: Any) -> Any:
    """ "5%" -> 0.05; a bare number is a fraction from 0 to 1 (0.05), never a percentage."""
    given = v
    if isinstance(v, str):
        text = v.strip()
        if not text.endswith("%"):
            raise ValueError(f'{v!r}: write a percentage such as "5%" (or a fraction: 0.05)')
        try:
            v = float(text[:-1]) / 100
        except ValueError:
            raise ValueError(f'{v!r} is not a percentage such as "5%"') from None
    elif isinstance(v, int | float) and not isinstance(v, bool) and 1 < v <= 100:
        raise ValueError(f'{v!r}: write "{v:g}%" (a bare number is a fraction: 0.05 is 5%)')
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError(f'{given!r}: must be a percentage from "0%" to "100%" (or 0 to 1)')
    return float(v)


# The retry condition a route's `retries.on` and a queue's `retry_on` both name.
RETRY_ON_CONNECT_FAILURE: Literal["connect_failure"] = "connect_failure"


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError with a readable reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} must be HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port must be a number from 0 to 65535")
    return host, int(port)


def _address(v: str) -> str:
    split_address(v)
    return v


Address = Annotated[str, AfterValidator(_address)]
