"""What the config checks report, and how: a `Problem` (a path into the YAML such as
`routes[2].split[1].pool`, a message, a line), the `ConfigError` that carries every problem
of a config that cannot be served, and the helpers every check shares to write paths and
messages ("did you mean", unknown names).

`Skipped` is what the checks leave alone when the YAML failed the schema in places (see
`lb.config.load`): those entries are not in the `Config` being checked.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lb.config.routes import Route
from lb.config.schema import Config

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (a path into the YAML), what, and on which line."""

    path: str  # "routes[2].split[1].pool"; "" for the whole file
    message: str
    line: int | None = None  # 1-based, where known

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return text if self.line is None else f"{text} (line {self.line})"


class ConfigError(Exception):
    """A config that cannot be served; `problems` holds every reason, `str()` one per line."""

    def __init__(self, problems: list[Problem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self, path: str) -> str:
        """What a command prints for a refused file: `PATH: N problem(s)`, then one a line."""
        return "\n".join([f"{path}: {len(self.problems)} problem(s)", *map(str, self.problems)])


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
# The last component of a formatted path: ".key", "[3]", '["odd.key"]', or a bare first key.
_LAST_PART = re.compile(r'(?:\.[A-Za-z0-9_\-]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\]|^[A-Za-z0-9_\-]+)$')


def format_path(loc: Iterable[str | int]) -> str:
    """('routes', 2, 'split', 1, 'pool') -> 'routes[2].split[1].pool'.

    Keys that would make the path ambiguous (a pool named "api.v2") are quoted: pools["api.v2"].
    """
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def parent_path(path: str) -> str:
    """'routes[2].split[1].pool' -> 'routes[2].split[1]'; '' when there is no parent."""
    m = _LAST_PART.search(path)
    return path[: m.start()] if m else ""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'pool'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """`unknown pool 'ap' (did you mean 'api'?)`; without a close name, the names defined."""
    known = list(known)
    hint = did_you_mean(name, known)
    if not hint:
        hint = f" (known {kind}s: {', '.join(known)})" if known else f" (no {kind}s are defined)"
    return f"unknown {kind} {name!r}{hint}"


@dataclass(frozen=True)
class Skipped:
    """Parts of the YAML that failed the schema, left out of the `Config` being checked (see
    `lb.config.load`): checks leave them alone, and a name defined there is not "unknown".

    `route_index[k]` is the YAML index of `config.routes[k]` (routes left out shift the list);
    `sections` are top-level keys left out whole (e.g. `pools` that is not a mapping)."""

    listeners: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    routes: frozenset[int] = frozenset()
    sections: frozenset[str] = frozenset()
    route_index: tuple[int, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.listeners or self.pools or self.routes or self.sections)

    def known(self, kind: str, name: str) -> bool:
        """A listener or pool defined in the YAML but left out: references to it are fine."""
        names = self.listeners if kind == "listener" else self.pools
        return name in names or f"{kind}s" in self.sections

    @property
    def some_routes(self) -> bool:
        return bool(self.routes) or "routes" in self.sections

    @property
    def some_users(self) -> bool:
        """Something that may send traffic to a pool (a route, a listener) was left out."""
        return self.some_routes or bool(self.listeners) or "listeners" in self.sections


def indexed_routes(config: Config, skipped: Skipped) -> list[tuple[int, Route]]:
    """(index in the YAML, route) for the routes being checked."""
    index = skipped.route_index
    if index is None:
        return list(enumerate(config.routes))
    return list(zip(index, config.routes, strict=True))
