"""YAML text -> `Config`, or a `ConfigError` listing every problem as `PATH: message (line N)`.

Pure apart from `load_config` reading the file. The steps:

1. Compose the YAML (SafeLoader) into nodes, so every mapping key and sequence item keeps its
   line; duplicate keys are refused here, before PyYAML silently keeps the last one.
2. Build the pydantic models. Each error pydantic reports becomes one `Problem`: its location
   is walked alongside the model types to drop union tags (`str | HeaderCondition` reports
   every branch) and to name the keys a misspelt one could have meant.
3. Run `lb.config.validate` for the cross-field checks. When the models cannot be built, the
   entries that failed (a listener, a route, a pool, or a whole top-level section) are left
   out and the rest is built and cross-checked without them (`_partial_checks`), so schema
   and cross-reference problems come out in one run; a reference to a name that is defined
   but failed is not reported again as unknown.

Every problem found is reported, never only the first; their lines come from the same
path -> line table, falling back to the nearest parent key when the key itself is missing.
"""

from __future__ import annotations

import inspect
import os
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lb.config.schema import Config
from lb.config.validate import (
    Loc,
    Problem,
    Skipped,
    did_you_mean,
    format_path,
    parent_path,
    validate,
)

__all__ = ["ConfigError", "Problem", "load_config", "load_config_text", "summarize"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(Exception):
    """A config that cannot be served; `problems` holds every reason, `str()` one per line."""

    def __init__(self, problems: list[Problem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))


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
    document = _compose(text, source)
    problems = list(document.problems)
    config: Config | None = None
    if document.data is None:
        problems.append(Problem("", "the config is empty: it needs at least version and listeners"))
    else:
        try:
            config = Config.model_validate(document.data, context={"base_dir": base_dir})
        except ValidationError as e:
            problems.extend(_schema_problems(e.errors(), document.data))
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


# -- step 1: YAML with lines ------------------------------------------------------------------


@dataclass
class _Document:
    data: Any
    lines: dict[str, int] = field(default_factory=dict)  # formatted path -> 1-based line
    problems: list[Problem] = field(default_factory=list)


def _compose(text: str, source: str) -> _Document:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return _Document(None)
        # Before construction: building the mapping flattens merge keys (<<) into node.value,
        # after which an explicit key overriding a merged one would look like a duplicate.
        duplicates = list(_duplicates(loader, node, ()))
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        raise ConfigError([_syntax_problem(e)], source) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem("", f"invalid YAML: {e}")], source) from None
    finally:
        loader.dispose()
    document = _Document(data, problems=duplicates)
    _record_lines(loader, node, (), document.lines, set())
    return document


def _syntax_problem(e: yaml.MarkedYAMLError) -> Problem:
    message = e.problem or "cannot parse"
    if e.context:
        message = f"{message} ({e.context})"
    mark = e.problem_mark or e.context_mark
    return Problem("", f"invalid YAML: {message}", mark.line + 1 if mark else None)


def _key(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node)
    return None  # a complex key: no path can name it


def _duplicates(
    loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, active: frozenset[int] = frozenset()
) -> Iterator[Problem]:
    if id(node) in active:  # a recursive alias (&a [*a])
        return
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = _key(loader, key_node)
            line = key_node.start_mark.line + 1
            try:
                seen = key in first
            except TypeError:  # unhashable: construction reports it
                continue
            if seen:
                yield Problem(
                    format_path((*loc, key)),
                    f"duplicate key {key!r} (first at line {first[key]}); keep only one",
                    line,
                )
            else:
                first[key] = line
            yield from _duplicates(loader, value_node, (*loc, key), active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(loader, item, (*loc, i), active)


def _record_lines(
    loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, lines: dict[str, int], active: set[int]
) -> None:
    if id(node) in active:  # a recursive alias (&a [*a]): its lines are recorded already
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        # Merged (<<) pairs come first: a key written in this mapping overrides their line.
        for key_node, value_node in node.value:
            key = _key(loader, key_node)
            if isinstance(key, str | int) and not isinstance(key, bool):
                lines[format_path((*loc, key))] = key_node.start_mark.line + 1
                _record_lines(loader, value_node, (*loc, key), lines, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[format_path((*loc, i))] = item.start_mark.line + 1
            _record_lines(loader, item, (*loc, i), lines, active)
    active.discard(id(node))


# -- step 2: pydantic errors -> problems -------------------------------------------------------


@dataclass
class _Located:
    """One pydantic error, its location walked along the model types."""

    error: ErrorDetails
    loc: Loc  # the path in the YAML, union tags removed
    owner: Any  # the type holding the last key (a model: its fields are the known keys)
    annotation: Any  # the type expected at `loc`
    union_at: Loc | None = None  # where a union was met, if one was
    union: tuple[Any, ...] = ()  # its branches
    union_input: Any = None  # the YAML value there
    branch: Any = None  # the branch this error came from


def _schema_problems(errors: list[ErrorDetails], data: Any) -> list[Problem]:
    located = [_walk(error, data) for error in errors]
    problems: list[Problem] = []
    unions: dict[Loc, list[_Located]] = {}
    for item in located:
        if item.union_at is None:
            problems.append(Problem(format_path(item.loc), _message(item)))
        else:
            unions.setdefault(item.union_at, []).append(item)
    for union_at, items in unions.items():
        problems.extend(_union_problems(union_at, items))
    return problems


def _union_problems(union_at: Loc, items: list[_Located]) -> list[Problem]:
    """pydantic reports every branch of `str | Model` that failed: keep what the user meant.

    A mapping was meant for the model branch, so its errors (an unknown key, a bad value) are
    the useful ones; anything else gets one message naming the shapes that are accepted.
    """
    first = items[0]
    if isinstance(first.union_input, dict):
        model_items = [i for i in items if _is_model(i.branch)]
        if model_items:
            branch = model_items[0].branch
            return [
                Problem(format_path(i.loc), _message(i)) for i in model_items if i.branch is branch
            ]
    shapes = " or ".join(_describe_type(b) for b in first.union)
    return [Problem(format_path(union_at), f"must be {shapes} (got {_show(first.union_input)})")]


def _walk(error: ErrorDetails, data: Any) -> _Located:
    """Follow the error's location from `Config` down, keeping only keys the user wrote."""
    loc: list[str | int] = []
    annotation: Any = Config
    owner: Any = None
    raw = data
    item = _Located(error, (), None, Config)
    for part in error["loc"]:
        if part == "[key]":  # the mapping key just walked failed (e.g. a number): its type
            annotation = get_args(owner)[0] if get_origin(owner) is dict else Any
            continue
        annotation = _unwrap(annotation)
        if _is_union(annotation):
            # This part is a union tag (e.g. 'str', 'HeaderCondition'), not a key.
            branches = tuple(a for a in get_args(annotation) if a is not type(None))
            if item.union_at is None:
                item.union_at, item.union, item.union_input = tuple(loc), branches, raw
            tag = _FUNCTION_TAG.sub(r"\1", str(part))
            branch = next((b for b in branches if _type_name(b) == tag), None)
            item.branch = branch
            annotation = branch if branch is not None else Any
            continue
        owner = annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            model_field = annotation.model_fields.get(str(part))
            annotation = model_field.annotation if model_field else Any
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            annotation = Any
        loc.append(part)
        raw = _child(raw, part)
    item.loc, item.owner, item.annotation = tuple(loc), owner, annotation
    return item


# A branch whose model has validators is tagged 'function-after[_check(), HeaderCondition]'.
_FUNCTION_TAG = re.compile(r"^function-\w+\[.*, (\w+)\]$")


def _child(raw: Any, part: str | int) -> Any:
    if isinstance(raw, dict):
        return raw.get(part)
    if isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw):
        return raw[part]
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional: `Annotated[int, Field(ge=1)] | None` -> int."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif _is_union(annotation):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    """The tag pydantic puts in an error location for one branch of a union."""
    annotation = _unwrap(annotation)
    return getattr(annotation, "__name__", repr(annotation))


def _describe_type(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        return f"a mapping with {' or '.join(annotation.model_fields)}"
    return {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
    }.get(annotation, _type_name(annotation))


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}

_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", "must be {} or more"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be {} or less"),
    "less_than": ("lt", "must be less than {}"),
}


def _message(item: _Located) -> str:
    error = item.error
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error["input"]
    if kind == "extra_forbidden":
        key = str(item.loc[-1]) if item.loc else "?"
        known = item.owner.model_fields if _is_model(item.owner) else ()
        return f"unknown key {key!r}{did_you_mean(key, known)}"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        literal = _unwrap(item.annotation)
        if get_origin(literal) is Literal:
            options = [str(a) for a in get_args(literal)]
            hint = did_you_mean(value, options) if isinstance(value, str) else ""
            return f"must be one of: {', '.join(options)} (got {_show(value)}){hint}"
        return f"must be {ctx.get('expected', 'one of the allowed values')} (got {_show(value)})"
    if kind in ("value_error", "assertion_error"):
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        return message
    if kind in _BOUND_MESSAGES:
        name, template = _BOUND_MESSAGES[kind]
        return f"{template.format(ctx.get(name))} (got {_show(value)})"
    prefix = "key " if "[key]" in error["loc"] else ""
    if kind in _TYPE_MESSAGES:
        return f"{prefix}{_TYPE_MESSAGES[kind]} (got {_show(value)})"
    message = error["msg"]
    return prefix + message[:1].lower() + message[1:]


def _show(value: Any) -> str:
    """A YAML value as a user would recognise it in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
