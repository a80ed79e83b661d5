"""How long-running stages report progress without knowing who listens.

The library never prints: stages call a :class:`Progress` object and the CLI passes one that draws
a Rich bar on stderr. Python callers get :class:`NullProgress` unless they pass their own.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullProgress", "Progress"]


class Progress(Protocol):
    """Receiver of progress events."""

    def start(self, description: str, total: int | None) -> None:
        """A new phase begins; ``total`` units are expected (None when unknown)."""

    def advance(self, amount: int) -> None:
        """``amount`` more units of the current phase are done."""

    def note(self, message: str) -> None:
        """Something the user should read (a skipped file, a fallback), one line."""


class NullProgress:
    """Discards every event."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass
