"""structlog, configured once: JSON lines (or console) on stdout, with every known secret scrubbed.

structlog is imported when something first logs, not before: it brings asyncio with it,
and the commands a pre-commit hook runs (`validate`, `plan`) never log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, TextIO

from reconciler.core.redact import add_secrets, redact, scrub

__all__ = ["add_secrets", "configure", "get", "redact"]

_pending: tuple[str, TextIO | None, str] | None = ("json", None, "info")
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


def configure(fmt: str = "json", stream: TextIO | None = None, level: str = "info") -> None:
    """Takes effect for loggers got from now on."""
    global _pending
    _pending = (fmt, stream, level)


def _apply(fmt: str, stream: TextIO | None, level: str) -> Any:
    import structlog

    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
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
        logger_factory=structlog.WriteLoggerFactory(_Tolerant(stream or sys.stdout)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("reconciler").bind()


def get(**context: Any) -> Any:
    global _pending, _root
    if _pending is not None:
        _root = _apply(*_pending)
        _pending = None
    return _root.bind(**context)
