"""How long-running stages report progress without knowing who listens.

The library never prints: stages call a :class:`Progress` object and the CLI passes one that draws
a Rich bar on stderr. Python callers get :class:`NullProgress` unless they pass their own.
"""

from __future__ import annotations

import threading
from typing import Protocol

from gpuds.errors import Cancelled

__all__ = [
    "Cancelled",
    "NullProgress",
    "Progress",
    "cancel_pending",
    "check_cancelled",
    "request_cancel",
]


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


_cancel = threading.Event()


def request_cancel() -> None:
    """Ask running stages to stop at their next safe point (between writes, before commit)."""
    _cancel.set()


def cancel_pending() -> bool:
    """True while a cancel request waits for a stage to reach its next safe point."""
    return _cancel.is_set()


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if a cancel was requested; stages call this between writes.

    Stopping here rather than wherever a signal lands means no library call (zarr's writer
    threads included) is torn mid-way, so the partial output can be removed cleanly.
    """
    if _cancel.is_set():
        _cancel.clear()
        raise Cancelled("interrupted; the partial output was removed")
