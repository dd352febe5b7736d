"""The exception tree: what can go wrong, by layer.

    EngagedError
    ├── ConfigError          a configuration file or variable is invalid (carries FILE:key: reason lines)
    ├── SpoolError           the spool could not store or read a message (answer 451, never 250)
    │   └── SpoolFull        its filesystem is full (answer 452 4.3.1)
    └── StoreError           the event store could not commit events
"""

from __future__ import annotations

import errno


class EngagedError(Exception):
    """Base of every error engaged raises on purpose."""


class ConfigError(EngagedError):
    """Invalid configuration; `problems` holds one `FILE:key: reason` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SpoolError(EngagedError):
    """The spool failed to store, read or finish a message."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # an OSError's errno when a filesystem is full (or over quota)


class SpoolFull(SpoolError):
    """The spool's filesystem has no space (or quota) left for the message: 452 4.3.1, not an internal error."""


class StoreError(EngagedError):
    """The event store failed to commit or read events."""
