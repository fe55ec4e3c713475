"""Secrets out of every text we write: one function, used by every sink (logs, history, the state
store, git, the command line, comments, pages).

The operator registers secret values once (`add_secrets`); `redact` replaces each, in the forms it
travels in, by `***`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_secrets: tuple[str, ...] = ()
"""Longest first: a longer form (URL-encoded) may contain a shorter one."""


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values; they are replaced by `***` wherever they would be written, in the forms
    they travel in too: URL-encoded (a form body or query Jenkins echoes), JSON-escaped, base64."""
    import base64
    import json
    from urllib.parse import quote, quote_plus

    global _secrets
    forms = set(_secrets)
    for value in values:
        if value and len(value) >= 4:
            forms.update((value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                          json.dumps(value, ensure_ascii=False)[1:-1], base64.b64encode(value.encode()).decode()))
    _secrets = tuple(sorted(forms, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub(value: Any) -> Any:
    """`value` (a string, or dicts and lists of them) with every secret redacted."""
    return _scrub(value) if _secrets else value


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
