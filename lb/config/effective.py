"""The effective config (`lb check --print`): a valid `Config` with every default filled in and
every inherited value resolved, as YAML a user can read and load again.

Pure. Inherited values are resolved the way lb resolves them at run time: a listener's and a
pool's `timeouts` over `defaults.timeouts`, a listener's `max_header_size` and a route's
`max_body_size` from `defaults`, a route's `listeners` (every http listener) and `retries`, a
pool's active `health_check` (`lb.core.health.active_check`) and its waiting-room `queue`.
Durations print as `2s`, sizes as `64KiB`, shares as `20%`. Secrets (`admin.token`,
`sticky_secret`) are never printed, only whether they are set. Keys that only apply
elsewhere stay out (a tcp listener has no `max_header_size`), so the output loads as the
same config.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator

from lb.config.base import fraction
from lb.config.listeners import Listener
from lb.config.pools import Pool, WaitingRoomConfig
from lb.config.routes import Retries, Route
from lb.config.schema import Config
from lb.config.units import parse_duration, parse_size
from lb.core.health import active_check
from lb.proxy.tls.groups import DEFAULT_GROUPS

HIDDEN = "<set: not shown>"


def effective(config: Config) -> dict[str, Any]:
    """The effective config as plain data (str, int, float, bool, None, lists and dicts)."""
    defaults = config.defaults
    http = [name for name, listener in config.listeners.items() if listener.mode == "http"]
    routed = {route.pool for route in config.routes if route.pool is not None}
    routed |= {arm.pool for route in config.routes for arm in route.split or []}
    out: dict[str, Any] = {
        "version": config.version,
        "defaults": _dump(defaults),
        "listeners": {
            name: _listener(listener, config) for name, listener in config.listeners.items()
        },
        "routes": [_route(i, route, config, http) for i, route in enumerate(config.routes)],
        "pools": {
            name: _pool(pool, config, tcp_only=name not in routed)
            for name, pool in config.pools.items()
        },
        "admin": _dump(config.admin) if config.admin is not None else None,
        "access_log": _dump(config.access_log),
        "sticky_secret": HIDDEN if config.sticky_secret is not None else None,
        "redis": _redis(config),
        "cache": _dump(config.cache),
        "queues": {name: _dump(queue) for name, queue in config.queues.items()},
    }
    # defaults.health_check: only what is set; a `path` or `type` printed there would turn
    # checks on for every pool.
    out["defaults"]["health_check"] = _dump(defaults.health_check, keep_none=False)
    if config.admin is not None and config.admin.token is not None:
        out["admin"]["token"] = HIDDEN
    return out


def effective_yaml(config: Config) -> str:
    return yaml.safe_dump(effective(config), sort_keys=False, default_flow_style=False)


def _listener(listener: Listener, config: Config) -> dict[str, Any]:
    out = _dump(listener)
    defaults = config.defaults
    out["timeouts"] = _dump(defaults.timeouts.merged(listener.timeouts))
    if listener.mode == "http":
        out["max_header_size"] = _size(listener.max_header_size or defaults.max_header_size)
        out["underscores_in_headers"] = listener.underscores_in_headers or "drop"
    else:
        del out["max_header_size"], out["underscores_in_headers"]
    if listener.tls is not None:
        out["tls"]["groups"] = list(listener.tls.groups or DEFAULT_GROUPS)
        if listener.tls.client_ca is not None:
            out["tls"]["client_cert"] = listener.tls.client_cert or "required"
    return out


def _route(i: int, route: Route, config: Config, http: list[str]) -> dict[str, Any]:
    out = _dump(route)
    out["name"] = route.name or f"routes[{i}]"
    out["listeners"] = list(route.listeners if route.listeners is not None else http)
    out["match"] = _dump(route.match, keep_none=False)
    max_body = route.max_body_size
    if max_body is None:
        max_body = config.defaults.max_body_size
    out["max_body_size"] = _size(max_body)
    out["retries"] = _dump(route.retries or Retries())
    if route.timeouts is not None:  # over the listener's, which differ per listener
        out["timeouts"] = _dump(route.timeouts, keep_none=False)
    return out


def _redis(config: Config) -> dict[str, Any] | None:
    """`redis`, its secrets not shown (the url's password is masked)."""
    if config.redis is None:
        return None
    out = _dump(config.redis)
    if config.redis.url is not None:
        out["url"] = config.redis.safe_url()
    if config.redis.password is not None:
        out["password"] = HIDDEN
    sentinel = out.get("sentinel")
    if sentinel and sentinel.get("password") is not None:
        sentinel["password"] = HIDDEN
    return out


def _pool(pool: Pool, config: Config, tcp_only: bool) -> dict[str, Any]:
    out = _dump(pool)
    out["timeouts"] = _dump(config.defaults.timeouts.merged(pool.timeouts))
    check = active_check(pool, config.defaults.health_check, tcp_only)
    if check is None:
        out["health_check"] = None
    else:
        out["health_check"] = {
            "type": check.kind,
            "path": check.path if check.kind == "http" else None,
            "host": check.host,
            "expect_status": sorted(check.expect_status) if check.expect_status else None,
            "interval": _duration(check.interval),
            "timeout": _duration(check.timeout),
            "healthy_threshold": check.healthy_threshold,
            "unhealthy_threshold": check.unhealthy_threshold,
        }
        if check.kind == "tcp":
            for key in ("path", "host", "expect_status"):
                del out["health_check"][key]
    limited = any(server.max_connections is not None for server in pool.servers)
    if pool.queue is None and limited:
        out["queue"] = _dump(WaitingRoomConfig())
    return out


# -- models to plain data, durations and sizes written as a user would -------------------------


def _dump(model: BaseModel, keep_none: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and not keep_none:
            continue
        out[name] = _value(value, _unit(field.annotation, field.metadata))
    return out


def _value(value: Any, unit: str | None) -> Any:
    if isinstance(value, BaseModel):
        return _dump(value)
    if isinstance(value, dict):
        return {k: _value(v, None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v, None) for v in value]
    if value is None or unit is None:
        return value
    if unit == "percent":
        return f"{value * 100:g}%"
    return _duration(value) if unit == "duration" else _size(value)


def _unit(annotation: Any, metadata: list[Any] | None = None) -> str | None:
    """'duration', 'size' or 'percent' for such a field (Optional, Annotated again or not)."""
    for item in metadata or ():
        if isinstance(item, BeforeValidator):
            if item.func is parse_duration:
                return "duration"
            if item.func is parse_size:
                return "size"
            if item.func is fraction:
                return "percent"
    origin = get_origin(annotation)
    if origin is Annotated:
        args = get_args(annotation)
        return _unit(args[0], list(args[1:]))
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            unit = _unit(arg)
            if unit is not None:
                return unit
    return None


_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def _duration(seconds: float) -> str:
    for suffix, size in _DURATION_UNITS:
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{suffix}"
    return f"{seconds * 1000:g}ms"


_SIZE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _size(size: int | None) -> str | int | None:
    if size is None:
        return None
    for suffix, unit in _SIZE_UNITS:
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return size
