"""structlog, configured once: on stdout, console lines on a terminal and JSON lines elsewhere (as
structlog advises), with every known secret scrubbed.

structlog is imported when something first logs, not before: it brings asyncio with it,
and the commands a pre-commit hook runs (`validate`, `plan`) never log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, TextIO

from reconciler.core.redact import add_secrets, redact, scrub

__all__ = ["add_secrets", "colour", "configure", "get", "redact"]

_pending: tuple[str | None, TextIO | None, str] | None = (None, None, "info")
"""How logs are to be written, until the first logger applies it."""
_root: Any = None
"""The logger every `get` binds on. Built once per configuration: structlog otherwise assembles a
new logger (factory, processors, wrapper) on every `get_logger().bind()`, once per fire."""


def _scrub_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return scrub(event_dict)


class _Tolerant:
    """The log stream, minus the exception when its reader is gone: a closed stdout (a pipe whose reader
    exited) must cost the log lines, never the daemon."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def configure(fmt: str | None = None, stream: TextIO | None = None, level: str = "info") -> None:
    """Takes effect for loggers got from now on. `fmt` None: console lines when the stream is a
    terminal, JSON lines otherwise (a collector, a pipe, a file)."""
    global _pending
    _pending = (fmt, stream, level)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False


def colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set to anything (no-color.org)."""
    return _is_terminal(stream) and not os.environ.get("NO_COLOR")


def _apply(fmt: str | None, stream: TextIO | None, level: str) -> Any:
    import structlog

    out = stream or sys.stdout
    if fmt is None:
        fmt = "console" if _is_terminal(out) else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=colour(out)) if fmt == "console"
                     else structlog.processors.JSONRenderer(sort_keys=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(_Tolerant(out)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("reconciler").bind()


def get(**context: Any) -> Any:
    global _pending, _root
    if _pending is not None:
        _root = _apply(*_pending)
        _pending = None
    return _root.bind(**context)
