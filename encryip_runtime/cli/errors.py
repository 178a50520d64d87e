"""Errors a command reports to the user (no traceback): every problem, then exit."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CommandError", "UsageError"]


class CommandError(Exception):
    """A problem the user can fix; ``problems`` are printed one per line on stderr."""

    exit_code = 1

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class UsageError(CommandError):
    """Bad arguments (exit 2), found before any work was done."""

    exit_code = 2
