"""Where the command line writes: Rich consoles on stdout and stderr, and JSON on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["print_json", "stderr", "stdout"]

# Piped output (not a terminal) gets room for the inspect table instead of Rich's 80 columns.
stdout = Console(width=None if Console().is_terminal else 140)
stderr = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, unstyled."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
