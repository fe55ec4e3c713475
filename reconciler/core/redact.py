"""Secrets out of every text we write: one function, used by every sink (logs, history, the state
store, git, the command line, comments, pages, commit statuses, chat messages).

The operator registers secret values once (`add_secrets`); `redact` replaces every run of
FRAGMENT or more characters of one, in any form it travels in, by `***`. A part of a secret is as
good as the whole to whoever guesses the rest, so fragments count, and an echo may come back
encoded: URL-encoded, as HTML entities, JSON escapes, split by whitespace or `<wbr>`, in hex, in
base64 (alone, or as `user:token` in an Authorization header). So the text is read the way a person
would read it (escapes decoded, invisible characters and whitespace dropped) and searched there, and
what matched is cut out of the original text. `clip` redacts *then* cuts: cutting first can split
a secret so that neither half matches any more.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from typing import Any

FRAGMENT = 8
"""The shortest run of a secret's characters (or of one of its encodings) that is scrubbed."""
MIN_SECRET = 4
"""Shorter values are not secrets anyone could scrub without scrubbing everything."""
MASK = "***"

_grams: frozenset[str] = frozenset()
"""Every FRAGMENT-long piece of every form of every secret, as the reading view shows it."""
_quads: frozenset[str] = frozenset()
"""Every piece of a quarter that length: each run of FRAGMENT characters holds one that starts at a
multiple of QUAD, so a text none of whose aligned quarters is among them holds no secret's piece."""
QUAD = FRAGMENT // 2
_short: tuple[str, ...] = ()
"""Forms shorter than FRAGMENT, matched whole."""
_values: set[str] = set()

_SPECIAL = re.compile(
    r"(?P<skip>\s+|</?wbr\s*/?>|\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\ufeff])"
    r"|(?P<pct>(?:%[0-9A-Fa-f]{2})+)"
    r"|(?P<ent>&(?:\#[0-9]{1,7}|\#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?)"
    r"|(?P<esc>\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}|\\[\\/\"'bfnrt])",
    re.IGNORECASE)
"""What a reader does not see (whitespace, `<wbr>`, terminal colour codes, control and zero-width
characters) or sees decoded (URL escapes, HTML entities, JSON and Python escapes)."""
_SKIP = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+")
"""The part of `_SPECIAL` that texts without `%`, `&`, `\\`, `<` or ESC can hold: most of them."""
_INVISIBLE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_JSON_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _decode(kind: str, token: str) -> str:
    if kind == "pct":
        return bytes.fromhex(token.replace("%", "")).decode("utf-8", "replace")
    if kind == "ent":
        return html.unescape(token)
    if token[1] in "uUxX":
        return chr(int(token[2:], 16))
    return _JSON_ESCAPES.get(token[1], token[1])


def _view(text: str) -> tuple[str, list[int], list[int]]:
    """`text` as read: the visible characters, each with the span of `text` it came from."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in _SPECIAL.finditer(text):
        if m.start() > pos:  # plain characters stand for themselves
            out.append(text[pos:m.start()])
            starts.extend(range(pos, m.start()))
            ends.extend(range(pos + 1, m.start() + 1))
        pos = m.end()
        kind = m.lastgroup or "skip"
        if kind == "skip":
            continue
        decoded = _INVISIBLE.sub("", _decode(kind, m.group()))
        out.append(decoded)
        starts.extend([m.start()] * len(decoded))
        ends.extend([m.end()] * len(decoded))
    if pos < len(text):
        out.append(text[pos:])
        starts.extend(range(pos, len(text)))
        ends.extend(range(pos + 1, len(text) + 1))
    return "".join(out), starts, ends


def _forms(value: str) -> set[str]:
    """The ways `value` is written by whoever echoes it, beyond what the reading view decodes: hex,
    and base64 at each of the three byte alignments it may have inside a longer encoded text (only
    the characters that depend on the secret's bytes alone)."""
    raw = value.encode("utf-8")
    forms = {value, value.replace(" ", "+"), raw.hex(), raw.hex().upper()}
    for skip in range(3):
        part = raw[skip:]
        whole = len(part) // 3 * 3
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(part[:whole]).decode())
    return {f for f in forms if f}


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values; from now on no run of FRAGMENT of their characters, in any of the forms
    they travel in, is written anywhere."""
    global _grams, _quads, _short
    fresh = {v for v in values if v and len(v) >= MIN_SECRET} - _values
    if not fresh:
        return
    _values.update(fresh)
    grams, quads, short = set(_grams), set(_quads), set(_short)
    for value in fresh:
        for form in _forms(value):
            seen = _view(form)[0]
            if len(seen) >= FRAGMENT:
                grams.update(seen[i:i + FRAGMENT] for i in range(len(seen) - FRAGMENT + 1))
                quads.update(seen[i:i + QUAD] for i in range(len(seen) - QUAD + 1))
            elif len(seen) >= MIN_SECRET:
                short.add(seen)
    _grams, _quads, _short = frozenset(grams), frozenset(quads), tuple(sorted(short, key=len, reverse=True))


def _spans(seen: str) -> list[tuple[int, int]]:
    """Where in the view a secret's piece lies."""
    hits: list[tuple[int, int]] = []
    grams = _grams
    for i in range(len(seen) - FRAGMENT + 1):
        if seen[i:i + FRAGMENT] in grams:
            if hits and hits[-1][1] >= i:
                hits[-1] = (hits[-1][0], i + FRAGMENT)
            else:
                hits.append((i, i + FRAGMENT))
    for piece in _short:
        start = seen.find(piece)
        while start != -1:
            hits.append((start, start + len(piece)))
            start = seen.find(piece, start + 1)
    return sorted(hits)


def _suspect(text: str) -> bool:
    """Whether `text` holds a secret's piece: the common answer, no, found without mapping positions.
    A run of FRAGMENT characters holds an aligned quarter (at a multiple of QUAD) at one of its first
    QUAD offsets, so only around an aligned quarter found among a secret's are its pieces looked for:
    a text that merely shares a few characters with a secret (a job named like the token) costs no
    more than one that shares none."""
    if "%" in text or "&" in text or "\\" in text or "<" in text or "\x1b" in text:
        seen = _view(text)[0]
    else:
        seen = _SKIP.sub("", text)
    quads, grams, last = _quads, _grams, len(seen) - FRAGMENT
    for i in range(0, len(seen) - QUAD + 1, QUAD):
        if seen[i:i + QUAD] in quads and \
                any(seen[p:p + FRAGMENT] in grams for p in range(max(0, i - QUAD + 1), min(i, last) + 1)):
            return True
    return any(piece in seen for piece in _short)


def redact(text: str) -> str:
    """`text` with every run of FRAGMENT or more characters of a registered secret, in any form, masked."""
    if not _values or len(text) < MIN_SECRET or not _suspect(text):
        return text
    for _ in range(3):  # a mask set between two remnants could, in theory, join them into a new match
        seen, starts, ends = _view(text)
        spans = _spans(seen)
        if not spans:
            return text
        merged: list[list[int]] = []
        for a, b in spans:
            begin, end = starts[a], ends[b - 1]
            if merged and begin <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([begin, end])
        out, pos = [], 0
        for begin, end in merged:
            out += [text[pos:begin], MASK]
            pos = end
        out.append(text[pos:])
        text = "".join(out)
    return text


def clip(text: str, limit: int) -> str:
    """Redacted, then cut to `limit` characters (with `…`): never the other way round."""
    text = redact(text)
    return text if len(text) <= limit else text[:max(0, limit - 1)] + "…"


def scrub(value: Any) -> Any:
    """`value` (a string, or dicts and lists of them) with every secret redacted."""
    return _scrub(value) if _values else value


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# -- error pages ------------------------------------------------------------------------------

_DROP = re.compile(r"<(script|style|head|textarea)\b.*?</\1\s*>", re.I | re.S)
_MESSAGE = (re.compile(r"<th>\s*MESSAGE:?\s*</th>\s*<td>(.*?)</td>", re.I | re.S),  # Jetty's error page
            re.compile(r"<p\b[^>]*>(.*?)</p>", re.I | re.S),  # Jenkins' error page: <h1>Error</h1><p>…</p>
            re.compile(r"<h[12]\b[^>]*>(.*?)</h[12]>", re.I | re.S))
_ECHO = re.compile(r"(?i)\b(?:proxy-)?authorization\s*:|\b(?:cookie|set-cookie|host|user-agent|accept(?:-[a-z]+)?|"
                   r"content-(?:type|length)|connection|jenkins-crumb|x-[a-z-]+)\s*:\s*\S|"
                   r"(?:^|[\s&?])(?:token|json|cause)=")
"""Where an echo of our request starts in an error message (its headers, its form): from there on the
message is withheld, whatever a redaction would leave of it."""
PAGE_MESSAGE = 200
PAGE_READ = 1 << 20
"""How much of an error page is looked at for its message."""


def page_message(body: str, limit: int = PAGE_MESSAGE) -> str:
    """The one line a user needs of an error page (Jenkins' own message, or Jetty's), redacted, then
    cut: never the page, whose headers, stack traces and echoes are no one's business."""
    body = _DROP.sub(" ", body[:PAGE_READ])
    found = None
    for pattern in _MESSAGE:
        for m in pattern.finditer(body):
            text = _line(m.group(1))
            if text and text.lower() not in ("error", "oops!"):
                found = text
                break
        if found:
            break
    if found is None:
        lines = (_line(line) for line in re.sub(r"<[^>]*>", "\n", body).splitlines())
        found = next((line for line in lines if line), "")
    echo = _ECHO.search(found)
    if echo is not None:
        found = found[:echo.start()].rstrip(" :;,") + " [the echoed request is withheld]"
    return clip(found.strip(), limit)


def _line(fragment: str) -> str:
    """Text of an HTML fragment on one line: tags gone, entities decoded, whitespace collapsed. The
    fragment is redacted before decoding too, so a secret written in entities is found either way."""
    text = html.unescape(re.sub(r"<[^>]*>", " ", redact(fragment)))
    return " ".join(redact(text).split())
