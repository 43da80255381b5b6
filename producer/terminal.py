"""Where a report goes: rich's tables and live bars on a terminal, plain lines anywhere else.

Tests, cron logs and pipes parse the plain lines, so those never depend on a terminal's width or
colours, and rich only draws where a person is watching: when the stream itself is a terminal
(``isatty()``), whatever ``FORCE_COLOR`` or ``TERM`` say.
"""

from __future__ import annotations

import os
from typing import TextIO

from rich.console import Console, RenderableType


def terminal_console(stream: TextIO) -> Console | None:
    """A rich console writing to ``stream`` when it is a terminal; None when it is a file or a pipe."""
    if not stream.isatty():
        return None
    try:  # the stream's own terminal: rich would measure stdin's or stdout's, which may be another
        width: int | None = os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError):
        width = None
    return Console(file=stream, width=width, highlight=False)


def show(stream: TextIO, plain: str, rendered: RenderableType) -> None:
    """Print ``rendered`` with rich on a terminal, else the ``plain`` text as it always was. A terminal
    too narrow for ``rendered`` gets the plain text too: the terminal wraps its long lines, where rich
    would have to cut columns off."""
    console = terminal_console(stream)
    if console is None or _narrowest(console, rendered) > console.width:
        print(plain, file=stream)
    else:
        console.print(rendered)


def _narrowest(console: Console, rendered: RenderableType) -> int:
    """The fewest columns ``rendered`` fits in, however wide the terminal is."""
    return console.measure(rendered, options=console.options.update_width(1_000_000)).minimum
