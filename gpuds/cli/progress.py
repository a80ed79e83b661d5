"""The command line's :class:`~gpuds.progress.Progress`: Rich bars and notes on stderr."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gpuds.cli.console import stderr

__all__ = ["RichProgress"]


class RichProgress:
    """A bar per phase on stderr (none when quiet or not a terminal), and notes as yellow lines.

    A note is shown once per run however many times it is sent (several stages may report the
    same CPU fallback); empty notes are ignored, and so are all of them when quiet.
    """

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and stderr.is_terminal
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._noted: set[str] = set()

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr,
                transient=False,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.update(self._task, visible=True)
            self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)

    def note(self, message: str) -> None:
        if self.quiet or not message or message in self._noted:
            return
        self._noted.add(message)
        stderr.print(f"[yellow]{escape(message)}[/yellow]")
