"""How views print: one JSON document for machines; for people, a table (rich) on a terminal and one
plain tab-separated row per line elsewhere (no boxes, no wrapping, no colour: `cut`, `awk` and `grep`
read it)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from reconciler import logs
from reconciler.core import text as safe

COLOURS = {"SUCCESS": "green", "completed": "green", "fire": "green", "fired": "green", "scheduled": "green",
           "UNSTABLE": "yellow", "ABORTED": "yellow",
           "cancelled": "yellow", "pending": "yellow", "suspended": "yellow", "refused": "red", "failed": "red",
           "lost": "red", "FAILURE": "red", "invalid": "red", "not fired": "red", "building": "cyan",
           "queued": "cyan", "posting": "cyan", "decided": "cyan"}
"""The words a table colours: green done, yellow partly or waiting, red for what needs a person."""

_RAW_IN_JSON = re.compile(r"[\x7f-\x9f\u2028\u2029]")
"""What json.dumps(ensure_ascii=False) leaves raw although a terminal acts on it: DEL, the C1 controls
(\x9b is a CSI on its own), and the line separators some readers break lines at."""


def shown(text: str) -> str:
    """Text from specs or Jenkins as a command prints it: secrets scrubbed, control characters (an ESC
    that would move the cursor, retitle the window or set the clipboard) written as escapes (`\\x1b`);
    line breaks and tabs are the layout's."""
    return safe.shown(text, keep="\n\t")


def json_text(value: Any, **options: Any) -> str:
    """JSON as a command prints it: exact, with every control character (C1 too) written `\\u00XX`."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def document(value: Any) -> None:
    """One JSON document on stdout."""
    print(json_text(value, indent=2))


@dataclass(frozen=True)
class Word:
    """A cell coloured by what it says."""

    text: str


@dataclass(frozen=True)
class Link:
    """A cell that links somewhere: a hyperlink on a terminal, the address itself in a plain row."""

    text: str
    url: str | None


class Table:
    def __init__(self, *headers: str, title: str | None = None):
        self.headers = headers
        self.rows: list[tuple[Any, ...]] = []
        self.title = title

    def add(self, *cells: Any) -> None:
        self.rows.append(cells)

    def show(self, stream: Any = None) -> None:
        stream = stream or sys.stdout
        if _is_terminal(stream):
            self._rich(stream)
            return
        if self.title:  # for people: stdout keeps to the header and one row per line
            print(shown(self.title), file=sys.stderr)
        for cells in [self.headers, *self.rows]:
            print("\t".join(_plain(cell) for cell in cells), file=stream)

    def _rich(self, stream: Any) -> None:
        from rich import box
        from rich.console import Console
        from rich.style import Style
        from rich.table import Table as RichTable
        from rich.text import Text

        colour = logs.colour(stream)
        console = Console(file=stream, no_color=not colour, highlight=False, emoji=False)
        table = RichTable(*self.headers, box=box.SIMPLE_HEAD, title=self.title and Text(shown(self.title)),
                          title_justify="left", header_style="bold" if colour else "", pad_edge=False)
        for cells in self.rows:
            row = []
            for cell in cells:
                text = Text(shown(_plain(cell) if not isinstance(cell, Link) else cell.text))  # never markup
                if isinstance(cell, Word) and colour and cell.text in COLOURS:
                    text.stylize(COLOURS[cell.text])
                if isinstance(cell, Link) and cell.url:
                    text = Text(shown(cell.text or cell.url), style=Style(link=safe.terminal(cell.url)))
                row.append(text)
            table.add_row(*row)
        console.print(table)


def _plain(cell: Any) -> str:
    if isinstance(cell, Link):
        return shown(cell.url or cell.text)
    text = cell.text if isinstance(cell, Word) else str(cell)
    return shown(text).replace("\t", " ").replace("\n", " ")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
