"""YAML text -> `Config`, or a `ConfigError` listing every problem as `PATH: message (line N)`.

Pure apart from `load_config` reading the file. The steps:

1. Compose the YAML into data with a path -> line table, refusing duplicate keys
   (`lb.config.yaml_lines`).
2. Build the pydantic models. Each error pydantic reports becomes one `Problem`
   (`lb.config.schema_errors`).
3. Run `lb.config.validate` for the cross-field checks. When the models cannot be built, the
   entries that failed (a listener, a route, a pool, or a whole top-level section) are left
   out and the rest is built and cross-checked without them (`_partial_checks`), so schema
   and cross-reference problems come out in one run; a reference to a name that is defined
   but failed is not reported again as unknown.

Every problem found is reported, never only the first; their lines come from the same
path -> line table, falling back to the nearest parent key when the key itself is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from lb.config.problems import ConfigError, Problem, Skipped, parent_path
from lb.config.schema import Config
from lb.config.schema_errors import schema_problems
from lb.config.validate import validate
from lb.config.yaml_lines import compose

__all__ = ["load_config", "load_config_text", "summarize"]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the config file at `path`; ConfigError when it cannot be served."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            [Problem("", f"cannot read {source}: not UTF-8 text ({e.reason})")], source
        ) from None
    except OSError as e:
        raise ConfigError(
            [Problem("", f"cannot read {source}: {e.strerror or e}")], source
        ) from None
    return load_config_text(text, source, base_dir=os.path.dirname(os.path.abspath(source)))


def load_config_text(text: str, source: str = "<string>", base_dir: str | None = None) -> Config:
    """Parse and check YAML `text`; `source` names it in the error (a file path, usually).
    Relative file names in it (certificates, keys, CAs) are taken from `base_dir` when given,
    else from the working directory."""
    document = compose(text, source)
    problems = list(document.problems)
    config: Config | None = None
    if document.data is None:
        problems.append(Problem("", "the config is empty: it needs at least version and listeners"))
    else:
        try:
            config = Config.model_validate(document.data, context={"base_dir": base_dir})
        except ValidationError as e:
            problems.extend(schema_problems(e.errors(), document.data))
            problems.extend(_partial_checks(document.data, e.errors(), base_dir))
        else:
            problems.extend(validate(config))
    if problems or config is None:
        located = [_locate(p, document.lines) for p in _unique(problems)]
        located.sort(key=lambda p: p.line or 0)  # stable: whole-file problems first
        raise ConfigError(located, source)
    return config


# Top-level keys that must be there for `Config` to build: what stands in for one that failed.
_REQUIRED_STAND_INS: dict[str, Any] = {"version": 1, "listeners": {}}
_NAMED_MAPS = ("listeners", "pools")
_ROUNDS = 3  # leaving entries out cannot fail anew in practice; bounded all the same


def _partial_checks(data: Any, errors: list[ErrorDetails], base_dir: str | None) -> list[Problem]:
    """The cross-field checks on what passed the schema: every listener, route and pool (and
    top-level section) with an error is left out, the rest built and validated. Nothing when
    the file is not a mapping at all."""
    if not isinstance(data, dict):
        return []
    skip: dict[str, set[Any]] = {"listeners": set(), "pools": set(), "routes": set()}
    sections: set[str] = set()
    for _ in range(_ROUNDS):
        for error in errors:
            loc = error["loc"]
            if not loc:
                return []
            top = loc[0]
            if top in skip and len(loc) > 1 and isinstance(data.get(top), dict | list):
                skip[str(top)].add(loc[1])
            else:
                sections.add(str(top))
        pruned, route_index = _pruned(data, skip, sections)
        try:
            config = Config.model_validate(pruned, context={"base_dir": base_dir})
        except ValidationError as e:
            errors = e.errors()
            continue
        skipped = Skipped(
            listeners=frozenset(str(n) for n in skip["listeners"]),
            pools=frozenset(str(n) for n in skip["pools"]),
            routes=frozenset(i for i in skip["routes"] if isinstance(i, int)),
            sections=frozenset(sections),
            route_index=route_index,
        )
        return validate(config, skipped)
    return []


def _pruned(
    data: dict[Any, Any], skip: dict[str, set[Any]], sections: set[str]
) -> tuple[dict[Any, Any], tuple[int, ...]]:
    """`data` without the entries in `skip` and the sections in `sections`; and the YAML index
    of each route kept."""
    pruned = dict(data)
    for key in _NAMED_MAPS:
        entries = pruned.get(key)
        if isinstance(entries, dict):
            pruned[key] = {k: v for k, v in entries.items() if k not in skip[key]}
    route_index: tuple[int, ...] = ()
    routes = pruned.get("routes")
    if isinstance(routes, list):
        kept = [(i, r) for i, r in enumerate(routes) if i not in skip["routes"]]
        route_index = tuple(i for i, _ in kept)
        pruned["routes"] = [r for _, r in kept]
    for key in sections:
        if key in _REQUIRED_STAND_INS:
            pruned[key] = _REQUIRED_STAND_INS[key]
        else:
            pruned.pop(key, None)
    return pruned, route_index


def summarize(config: Config) -> str:
    """The one line `lb check` prints for a good config."""
    servers = sum(len(pool.servers) for pool in config.pools.values())
    counts = [
        _plural(len(config.listeners), "listener"),
        _plural(len(config.routes), "route"),
        _plural(len(config.pools), "pool"),
        _plural(servers, "server"),
    ]
    return f"config OK: {', '.join(counts)}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _locate(problem: Problem, lines: dict[str, int]) -> Problem:
    """Attach the line of the problem's key, or of its nearest parent that is in the file."""
    if problem.line is not None:
        return problem
    path = problem.path
    while path:
        if path in lines:
            return Problem(problem.path, problem.message, lines[path])
        path = parent_path(path)
    return problem
