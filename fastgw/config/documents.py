"""Config documents: a file's text, and that text parsed as YAML or JSON into plain data.

Syntax errors carry their line and column; a key given twice is an error (not the last one
silently winning). Nothing here knows what the document means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fastgw.errors import ConfigError


def read_text(path: str | Path) -> str:
    """The UTF-8 text of the file at `path`; raises ConfigError at "(file)"."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror or exc}")]) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: not UTF-8 ({exc.reason})")]) from exc


def check_not_empty(text: str) -> None:
    if not text.strip():
        raise ConfigError([("(root)", "is empty")])


def load_document(text: str) -> Any:
    """The data of a YAML or JSON document; raises ConfigError at "(root)"."""
    check_not_empty(text)
    # JSON goes through json: PyYAML refuses tab-indented JSON, which is common
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ConfigError([("(root)", f"invalid JSON at {where}: {exc.msg}")]) from exc
        except ValueError as exc:
            raise ConfigError([("(root)", f"invalid JSON: {exc}")]) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is None:
            raise ConfigError([("(root)", f"invalid YAML: {problem}")]) from exc
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError([("(root)", f"invalid YAML at {where}: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([("(root)", f"invalid YAML: {exc}")]) from exc
    if document is None:
        raise ConfigError([("(root)", "is empty")])
    return document


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of letting the last one silently win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result
