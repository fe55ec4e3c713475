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
from reconciler.core.text import cut, terminal

__all__ = ["add_secrets", "colour", "configure", "get", "redact"]

_pending: tuple[str | None, TextIO | None, str] | None = (None, None, "info")
"""How logs are to be written, until the first logger applies it."""
_root: Any = None
"""The logger every `get` binds on. Built once per configuration: structlog otherwise assembles a
new logger (factory, processors, wrapper) on every `get_logger().bind()`, once per fire."""


NAME_FIELDS = frozenset({"trigger", "job", "server", "file", "path", "name", "leader"})
NAME_LIMIT = 200
"""Names come from the triggers repository (file and job names) and may be 100 kB long: a log line
carries at most this much of one, and a hash of the whole to tell two apart."""
TEXT_LIMIT = 4096
"""Any other text field (an error, a list of them) is cut here, after it is redacted."""


def _scrub_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Secrets out first, then cut: a cut secret is no longer found."""
    return {key: _bounded(key, value) for key, value in scrub(event_dict).items()}


def _bounded(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        if key == "exception":
            return value
        return cut(value, NAME_LIMIT) if key in NAME_FIELDS else cut(value, TEXT_LIMIT)
    if depth < 3 and isinstance(value, list | tuple):
        return [_bounded(key, v, depth + 1) for v in value[:100]]
    if depth < 3 and isinstance(value, dict):
        return {cut(str(k), NAME_LIMIT): _bounded(str(k), v, depth + 1) for k, v in list(value.items())[:100]}
    return value


def _terminal_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """For the console renderer: control characters from specs or Jenkins shown escaped, so no log
    line moves the cursor, clears the screen or sets the clipboard (JSON lines escape them already)."""
    return {key: _escaped(key, value) for key, value in event_dict.items()}


def _escaped(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return terminal(value, keep="\n\t" if key == "exception" else "")
    if isinstance(value, list | tuple | dict):
        return terminal(repr(value))
    return value


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
            *([_terminal_processor] if fmt == "console" else []),
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
