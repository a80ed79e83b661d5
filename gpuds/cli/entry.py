"""Running the command line: exit codes, signals, and the ``gpuds`` console script.

Errors the user can fix (:class:`~gpuds.errors.GpudsError`) become one red line on stderr and
exit code 1; usage errors exit 2; anything else is a bug and says so in one line. ``--debug``
shows the traceback instead. Ctrl-C (or SIGTERM) asks the running stage to stop at its next safe
point, where it removes its partial output (exit 130).
"""

from __future__ import annotations

import signal
import sys
import warnings
from types import FrameType

from gpuds._version import __version__
from gpuds.errors import Cancelled, GpudsError
from gpuds.progress import cancel_pending, request_cancel

__all__ = ["main", "run"]

_signals = {"cancelling": False, "interrupted": False}


class _Interrupted(BaseException):
    """A second Ctrl-C (or SIGTERM): stop at once. Not a KeyboardInterrupt, which Typer turns
    into a silent exit; a BaseException, so that no ``except Exception`` in a stage stops it."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # The first signal asks the stage to stop at its next safe point, where it removes its
    # partial output. A second one while that request still waits (a long write or decode)
    # stops at once, but only once: the clean-up that follows must run to its end, so any later
    # signal, or one arriving after the stage took the request, is ignored.
    if not _signals["cancelling"]:
        _signals["cancelling"] = True
        request_cancel()
    elif cancel_pending() and not _signals["interrupted"]:
        _signals["interrupted"] = True
        raise _Interrupted


def main(argv: list[str] | None = None) -> int:
    """Run ``gpuds ARGV...`` (``sys.argv[1:]`` when None) and return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        # Scripts and installers ask this to check the tool: it is answered before Typer and
        # Rich are imported (below), which is most of what `gpuds --help` costs.
        sys.stdout.write(f"gpuds {__version__}\n")
        return 0
    from rich.markup import escape

    from gpuds.cli.app import app, state
    from gpuds.cli.console import stderr

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _signals["cancelling"] = _signals["interrupted"] = False
    state["debug"] = False
    try:
        with warnings.catch_warnings():
            # gpuds reports each codec's portability itself (`inspect`); zarr's warning that
            # numcodecs.* codecs are outside the spec would only repeat it, at every open.
            warnings.filterwarnings(
                "ignore", message="Numcodecs codecs are not in the Zarr version 3"
            )
            app(args=args, prog_name="gpuds")
    except (Cancelled, _Interrupted):
        stderr.print("[red]interrupted[/red]: the partial output was removed")
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except GpudsError as e:
        if state["debug"]:
            raise
        stderr.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return 1
    except Exception as e:
        if state["debug"]:
            raise
        stderr.print(
            f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} "
            "(rerun with --debug for the traceback and please report it)",
            soft_wrap=True,
        )
        return 1
    return 0


def run() -> None:
    """The ``gpuds`` console script."""
    code = main()
    # The run is over: a signal arriving while the interpreter shuts down must not turn the exit
    # code into a kill (Python restores the default handlers late in its shutdown, not SIG_IGN).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
