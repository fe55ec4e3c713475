"""Text from outside (specs, file names, commits, Jenkins) made safe for where it is shown.

Whoever can commit writes spec content and file names; whoever runs a build writes its result and
console. Shown raw, that text is markup: an OSC 52 sequence writes a reader's clipboard, `ESC[2J`
clears their screen, `<!--` in a pull-request comment hides the rows after it, `<!channel>` pages a
whole chat. Each escaper here keeps the text readable and makes it inert in one medium.
"""

from __future__ import annotations

import hashlib
import re

from reconciler.core.redact import redact

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls, DEL, and the line/paragraph separators and bidi overrides a terminal or
viewer acts on rather than shows."""


def _escaped(m: re.Match[str]) -> str:
    c = m.group()
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def terminal(text: str, *, keep: str = "") -> str:
    """`text` with every control character shown as an escape (`\\x1b`), but those in `keep` (`"\\n"`,
    `"\\t"` where a layout needs them)."""
    if not keep:
        return _CONTROL.sub(_escaped, text)
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escaped(m), text)


def cut(text: str, limit: int) -> str:
    """`text`, or its first characters and a hash of the whole when it is longer than `limit`: two
    long names stay told apart, and neither grows a log line or a metric series without bound."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{text[:max(0, limit - 14)]}…#{digest}"


# -- markdown (GitHub, GitLab) ----------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"[\\`*_\[\]|~$]")
"""What starts or ends inline markdown (emphasis, code, links, strikethrough, math) or a table cell.
Block syntax (`#`, `>`, lists) does not apply inside a table cell or after the text's first word."""


def md_text(text: str) -> str:
    """Repository text as inline markdown that renders as itself: what starts inline markup is
    backslash-escaped (CommonMark lets any ASCII punctuation be), `<`, `>` and `&` become entities so
    no HTML, comment or autolink starts, and line breaks become spaces. Safe in a table cell: no raw
    `|`. Meant for text inside a line (a cell, after a label), where block syntax does not apply."""
    text = terminal(" ".join(text.splitlines()))
    out = []
    for c in text:
        if c == "<":
            out.append("&lt;")
        elif c == ">":
            out.append("&gt;")
        elif c == "&":
            out.append("&amp;")
        elif _MD_SPECIAL.match(c):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def md_code(text: str) -> str:
    """Repository text as an inline code span that nothing inside can close: fenced by one more
    backtick than the longest run inside, padded with spaces. In a GFM table cell a `|` would still
    end the cell (GFM splits rows before it reads code spans), so it is written `\\|`, which GitHub and
    GitLab show as `|` inside the span."""
    text = terminal(" ".join(text.splitlines())).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    if not text.strip():
        return md_text(text) or "` `"
    return f"{fence}{pad}{text}{pad}{fence}"


# -- chat (Slack, Teams, Mattermost, Rocket.Chat, Discord) ------------------------------------------

_CHAT_MARKUP = re.compile(r"[*_~`>|\[\]()]")


def chat(text: str) -> str:
    """Spec or commit text as plain chat text: Slack's control sequences (`<!channel>`, `<@U123>`,
    `<http://x|label>`) lose their `<`/`>` (written as `&lt;`/`&gt;`, as Slack requires), `@here`,
    `@channel` and `@someone` lose their mention (a zero-width joiner after the `@`), markdown
    emphasis, quotes, code and links are backslash-escaped, and URLs stop being links (`://` broken
    by a zero-width space), so nothing in a message pages people or leads a reader elsewhere."""
    text = terminal(" ".join(text.splitlines()))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _CHAT_MARKUP.sub(lambda m: "\\" + m.group(), text)
    text = text.replace("@", "@\u200d")
    text = re.sub(r"(?i)\b(https?|ftp|mailto|file|javascript|data)(:)", "\\1\u200b\\2", text)
    return re.sub(r"(?i)\bwww\.", "www\u200b.", text)


def shown(text: str, *, keep: str = "") -> str:
    """Text from outside as a command prints it: secrets out (before anything is cut), controls escaped."""
    return terminal(redact(text), keep=keep)
