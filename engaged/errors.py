"""The exception tree: what can go wrong, by layer.

    EngagedError
    ├── ConfigError          a configuration file or variable is invalid (carries FILE:key: reason lines)
    ├── SpoolError           the spool could not store or read a message (answer 451, never 250)
    └── StoreError           the event store could not commit events
"""

from __future__ import annotations


class EngagedError(Exception):
    """Base of every error engaged raises on purpose."""


class ConfigError(EngagedError):
    """Invalid configuration; `problems` holds one `FILE:key: reason` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SpoolError(EngagedError):
    """The spool failed to store, read or finish a message."""


class StoreError(EngagedError):
    """The event store failed to commit or read events."""
