"""The one walk over the parsed document for what stands in for a value: fastgw's `${VAR}`,
Kong's vault references `{vault://...}`, and the decK templates that could not be rendered.

How the two syntaxes of variables live together:

- decK's `${{ env "DECK_NAME" }}` is decK's: rendered on the raw text before parsing, exactly
  where decK renders it (fastgw/config/templates.py), so a file decK accepts reads the same here.
- fastgw's `${NAME}` (Kong-style, any variable) is substituted here, in string values only,
  after parsing: the result stays a string (`port: "${PORT}"` is an error, port needs an
  integer) and is not expanded again. `$${` stands for a literal `${`.
- A vault reference, a whole string value, is resolved after `${NAME}` (so
  `{vault://env/${NAME}}` works) by fastgw/config/vaults.py.

Every problem carries the key path of its value; `_comment` and `_ignore` (Kong's annotations)
are never substituted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgw.config.model import EnvVault
from fastgw.config.reader import Findings, join
from fastgw.config.templates import OPEN, Rendered, is_env_name
from fastgw.config.vaults import REFERENCE_OPEN, resolve_reference

ANNOTATION_KEYS = frozenset({"_comment", "_ignore"})


class Substitution:
    """Walks parts of one document; `problems` collects what could not be substituted."""

    def __init__(self, env: Mapping[str, str], rendered: Rendered, problems: Findings) -> None:
        self.env = env
        self.rendered = rendered
        self.problems = problems
        self._reported: set[int] = set()

    def walk(self, value: Any, key: str, vaults: Mapping[str, EnvVault] | None) -> Any:
        """A copy of the value of the document's top-level `key` with every string substituted
        (vault references too, unless `vaults` is None)."""
        return self._walk(value, key, vaults, expand=key not in ANNOTATION_KEYS)

    def report_unplaced(self) -> None:
        """The decK templates that failed outside any value: reported with their line."""
        for index, failure in enumerate(self.rendered.failures):
            if index not in self._reported:
                self.problems.append(("(root)", f"line {failure.line}: {failure.reason}"))

    def _walk(
        self, value: Any, path: str, vaults: Mapping[str, EnvVault] | None, *, expand: bool
    ) -> Any:
        if isinstance(value, str):
            return self._string(value, path or "(root)", vaults, expand)
        if isinstance(value, list):
            return [
                self._walk(item, join(path, index), vaults, expand=expand)
                for index, item in enumerate(value)
            ]
        if isinstance(value, dict):
            return {
                key: self._walk(
                    item, join(path, str(key)), vaults, expand=expand and key not in ANNOTATION_KEYS
                )
                for key, item in value.items()
            }
        return value

    def _string(
        self, text: str, path: str, vaults: Mapping[str, EnvVault] | None, expand: bool
    ) -> str:
        failed = self.rendered.failures_in(text)
        if failed:
            for index in failed:
                if index not in self._reported:
                    self._reported.add(index)
                    self.problems.append((path, self.rendered.failures[index].reason))
            return text
        if not expand:
            return text
        if "$" in text:
            expanded = expand_variables(text, path, self.env, self.problems)
            if expanded is None:
                return text
            text = expanded
        if vaults is not None and REFERENCE_OPEN in text:
            return resolve_reference(text, path, vaults, self.env, self.problems)
        return text


def expand_variables(
    text: str, path: str, env: Mapping[str, str], problems: Findings
) -> str | None:
    """`text` with each `${NAME}` replaced; None (and the problems at `path`) when one cannot
    be: the raw text stays, so no "is required" follows from the gap."""
    parts: list[str] = []
    position = 0
    missing = False
    while (start := text.find("$", position)) != -1:
        parts.append(text[position:start])
        if text.startswith("$${", start):
            parts.append("${")
            position = start + 3
            continue
        if not text.startswith("${", start):
            parts.append("$")
            position = start + 1
            continue
        if text.startswith(OPEN, start):
            # rendering skips lines that start with "#" (a line of a multi-line value too)
            problems.append(
                (path, 'a decK template here was left unrendered (its line starts with "#")')
            )
            return None
        end = text.find("}", start + 2)
        if end == -1:
            problems.append((path, 'unterminated "${" (write "$${" for a literal "${")'))
            return None
        name = text[start + 2 : end].strip()
        if not is_env_name(name):
            problems.append((path, f'invalid environment variable name "{name}"'))
            return None
        position = end + 1
        replacement = env.get(name)
        if replacement is None:
            problems.append((path, f'environment variable "{name}" is not set'))
            missing = True
        else:
            parts.append(replacement)
    if missing:
        return None
    parts.append(text[position:])
    return "".join(parts)
