"""decK's templates, `${{ env "DECK_NAME" }}`, rendered on the raw text before it is parsed.

As decK renders a state file (go-database-reconciler's renderTemplate: Go templates between
`${{` and `}}`): only variables prefixed with DECK_, piped through decK's functions toBool,
toInt, toFloat and `indent N`; a line that is a YAML comment is left as it is. The value becomes
part of the text, so Kong's how-to line `issuer: "${{ env "DECK_ISSUER" }}"` parses, and
`port: ${{ env "DECK_PORT" }}` is an integer once parsed (fastgw's `${PORT}` substitutes a
parsed value and stays a string: fastgw/config/substitution.py).

A template that cannot be rendered (a variable not set, a bad template) does not stop the parse:
it leaves a placeholder, and the substitution walk reports the problem at the key whose value
holds it, or with its line when it is in no value (a key, a trailing comment). `$${` stands for
a literal `${` here too: `$${{ ... }}` is left for the substitution walk, which unescapes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

OPEN = "${{"
CLOSE = "}}"
ESCAPED_OPEN = "$${"  # fastgw's escape of a literal "${"
DECK_PREFIX = "DECK_"  # decK's default env var prefix: the only variables a template reads
# Go's strconv.ParseBool, which decK's toBool calls
_GO_BOOLEANS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), "true"),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), "false"),
}
_PLACEHOLDER_BASE = "__fastgw_template_"


@dataclass(frozen=True, slots=True)
class Failure:
    """A template that was not rendered: its line (1-based) and what is wrong."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered text; `failures[n]` left the placeholder `{marker}{n}__` in it."""

    text: str
    marker: str
    failures: tuple[Failure, ...] = ()

    def failures_in(self, value: str) -> list[int]:
        """The indexes of the failures whose placeholder `value` holds."""
        if not self.failures or self.marker not in value:
            return []
        return [int(found) for found in re.findall(re.escape(self.marker) + r"(\d+)__", value)]


def render(text: str, env: Mapping[str, str]) -> Rendered:
    """`text` with every decK template outside comment lines replaced by its value."""
    marker = _PLACEHOLDER_BASE
    while marker in text:  # a text that holds the marker already gets a longer one
        marker += "x_"
    if OPEN not in text:
        return Rendered(text, marker)
    failures: list[Failure] = []
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if OPEN in line and not line.lstrip().startswith("#"):
            lines[index] = _render_line(line, index + 1, env, marker, failures)
    return Rendered("\n".join(lines), marker, tuple(failures))


def _render_line(
    line: str, number: int, env: Mapping[str, str], marker: str, failures: list[Failure]
) -> str:
    def fail(reason: str) -> str:
        failures.append(Failure(number, reason))
        return f"{marker}{len(failures) - 1}__"

    parts: list[str] = []
    position = 0
    while (start := line.find("$", position)) != -1:
        if line.startswith(ESCAPED_OPEN, start):
            parts.append(line[position : start + len(ESCAPED_OPEN)])
            position = start + len(ESCAPED_OPEN)
            continue
        if not line.startswith(OPEN, start):
            parts.append(line[position : start + 1])
            position = start + 1
            continue
        parts.append(line[position:start])
        end = line.find(CLOSE, start + len(OPEN))
        if end == -1:
            parts.append(fail('unterminated "${{" (write "$${" for a literal "${")'))
            position = start + len(OPEN)
            continue
        value, reason = _evaluate(line[start + len(OPEN) : end], env)
        # a value is text, not a template of fastgw's own: its "${" stays as written
        parts.append(fail(reason) if value is None else value.replace("${", ESCAPED_OPEN))
        position = end + len(CLOSE)
    parts.append(line[position:])
    return "".join(parts)


def _evaluate(body: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(the value of one template, "") or (None, why it has none)."""
    head, *stages = (stage.strip() for stage in body.split("|"))
    name = _env_call(head)
    if name is None:
        return None, 'expected ${{ env "NAME" }}'
    if not name.startswith(DECK_PREFIX):
        return None, (
            f'a decK template reads only variables prefixed with {DECK_PREFIX}, not "{name}" '
            f"(fastgw's ${{{name}}} reads any)"
        )
    value = env.get(name)
    if value is None:
        return None, f'environment variable "{name}" is not set'
    for stage in stages:
        function, *arguments = stage.split()
        converted = _apply(function, arguments, value)
        if converted is None:
            return None, _stage_problem(function, arguments, name)
        value = converted
    return value, ""


def _env_call(call: str) -> str | None:
    """The NAME of decK's `env "NAME"`, or None when `call` is something else."""
    if not call.startswith("env"):
        return None
    argument = call[3:].strip()
    if len(argument) < 2 or argument[0] != '"' or argument[-1] != '"':
        return None
    name = argument[1:-1]
    return name if is_env_name(name) else None


def is_env_name(name: str) -> bool:
    return (
        name.isascii()
        and name.replace("_", "a").isalnum()
        and (name[0].isalpha() or name[0] == "_")
    )


def _apply(function: str, arguments: list[str], value: str) -> str | None:
    """decK's template function `function` on `value`, as text; None when it does not apply."""
    if function == "indent" and len(arguments) == 1 and arguments[0].isdigit():
        return value.replace("\n", "\n" + " " * int(arguments[0]))
    if arguments:
        return None
    if function == "toBool":
        return _GO_BOOLEANS.get(value)
    if function == "toInt":
        return str(int(value)) if re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII) else None
    if function == "toFloat":
        return _float_text(value)
    return None


def _stage_problem(function: str, arguments: list[str], name: str) -> str:
    if function == "toBool" and not arguments:
        return f'environment variable "{name}" is not a boolean (toBool takes true, false, 1, 0)'
    if function == "toInt" and not arguments:
        return f'environment variable "{name}" is not an integer (toInt)'
    if function == "toFloat" and not arguments:
        return f'environment variable "{name}" is not a number (toFloat)'
    if function == "indent":
        return "indent takes the number of spaces, as in indent 8"
    return f'unknown template function "{function}" (decK has toBool, toInt, toFloat, indent)'


def _float_text(value: str) -> str | None:
    """A number as YAML reads it back: integral values as integers (as Go prints them), the
    others with a decimal point, infinities and NaN in YAML's spelling."""
    if not value or any(char.isspace() or char == "_" for char in value):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if math.isnan(number):
        return ".nan"
    if math.isinf(number):
        return ".inf" if number > 0 else "-.inf"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text and "." not in text:  # YAML 1.1 reads 1e+21 as a string
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text
