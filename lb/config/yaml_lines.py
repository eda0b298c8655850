"""Step 1 of loading: YAML text -> its data, a path -> line table and the duplicate keys.

The YAML is composed (SafeLoader) into nodes first, so every mapping key and sequence item
keeps its line (`routes[2].pool` -> 14); duplicate keys are refused here, before PyYAML
silently keeps the last one. Text that is not YAML raises `ConfigError` at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from lb.config.problems import ConfigError, Loc, Problem, format_path

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    data: Any
    lines: dict[str, int] = field(default_factory=dict)  # formatted path -> 1-based line
    problems: list[Problem] = field(default_factory=list)


def compose(text: str, source: str) -> Document:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None)
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
    document = Document(data, problems=duplicates)
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
