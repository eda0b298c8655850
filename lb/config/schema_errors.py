"""Step 2 of loading: the errors pydantic reports while building `Config` -> `Problem`s.

Each error's location is walked alongside the model types, to drop union tags
(`str | HeaderCondition` reports every branch, and only the one the user meant is kept) and
to name the keys a misspelt one could have meant. Messages say what is accepted, with the
value that was given, in the words of the YAML rather than pydantic's.
"""

from __future__ import annotations

import inspect
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from lb.config.problems import Loc, Problem, did_you_mean, format_path
from lb.config.schema import Config


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


def schema_problems(errors: list[ErrorDetails], data: Any) -> list[Problem]:
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
