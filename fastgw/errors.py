"""Errors that cross layers: configuration problems, each with the path of the bad key."""

from __future__ import annotations


class ConfigError(Exception):
    """One or more configuration problems; `problems` holds (key path, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {reason}" for path, reason in problems))

    def lines(self, source: str) -> list[str]:
        """What `fastgw check` prints: one line per problem, then the count for `source`."""
        lines = [f"{path}: {reason}" for path, reason in self.problems]
        lines.append(f"{source}: {len(self.problems)} error(s)")
        return lines
