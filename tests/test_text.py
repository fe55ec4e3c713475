"""Text from outside, made safe: secrets scrubbed in every fragment and form, then cut; terminal,
markdown and chat escaping; bounded metric labels."""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import quote, unquote

from markdown_it import MarkdownIt

from reconciler.core import preview, text
from reconciler.core.redact import add_secrets, clip, page_message, redact
from reconciler.metrics import Metrics

SECRET = "Zq8-rT4!wLm9_xVb2Kc7"
USER = "deployer"
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
add_secrets([SECRET, BASIC])


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    out = [secret, quote(secret, safe=""), raw.hex(), raw.hex().upper(), json.dumps(secret)[1:-1],
           "".join(f"&#{ord(c)};" for c in secret), "".join(f"&#x{ord(c):x};" for c in secret),
           "".join(f"\\u{ord(c):04x}" for c in secret), " ".join(secret), "<wbr>".join(secret)]
    out += [base64.b64encode(raw[i:]).decode() for i in range(3)]
    return out


def leaks(output: str, secrets: tuple[str, ...] = (SECRET, BASIC)) -> list[str]:
    """Every 8-character piece of a secret (or of its hex or base64) found in `output`, read raw and
    decoded the ways a person or a tool would decode it: an independent scanner, not the redactor."""
    views = {output, unquote(output), html.unescape(output),
             re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), output)}
    views |= {re.sub(r"<wbr>|\s", "", v) for v in list(views)}
    found = []
    for secret in secrets:
        raw = secret.encode()
        for form in {secret, raw.hex(), raw.hex().upper(), *(base64.b64encode(raw[i:]).decode()[1:-4]
                                                            for i in range(3))}:
            for i in range(len(form) - 7):
                if any(form[i:i + 8] in v for v in views):
                    found.append(form[i:i + 8])
    return found


def test_every_form_and_every_fragment_of_a_secret_is_scrubbed_at_every_offset():
    for form in [*forms(SECRET), *forms(BASIC), f"Authorization: Basic {BASIC}"]:
        for a in range(len(form)):
            for b in sorted({min(a + 8, len(form)), min(a + 11, len(form)), len(form)}):
                if b - a < 8:
                    continue
                echoed = f"x{'y' * (a % 3)}{form[a:b]}z"
                assert not leaks(redact(echoed)), (form, a, b, redact(echoed))


def test_redact_then_cut_leaves_no_piece_at_any_cut_position():
    for cut_at in range(150, 230):
        page = f"<html><h1>Error</h1><p>{'w' * 180} {SECRET} {quote(SECRET)} {BASIC}</p></html>"
        assert not leaks(clip("w" * 180 + SECRET, cut_at))
        message = page_message(page, cut_at)
        assert not leaks(message) and len(message) <= cut_at


def test_an_error_page_is_reduced_to_its_own_message_line():
    page = ("<html><head><title>Error 403</title><script>var t='" + SECRET + "'</script></head><body>"
            "<h1>Error</h1><p>No valid crumb was included in the request</p><pre>Authorization: Basic "
            + BASIC + "\nCookie: JSESSIONID=1</pre></body></html>")
    assert page_message(page) == "No valid crumb was included in the request"
    jetty = "<h2>HTTP ERROR 404 Not Found</h2><table><tr><th>MESSAGE:</th><td>Not Found</td></tr></table>"
    assert page_message(jetty) == "Not Found"
    assert page_message("plain text\nsecond line") == "plain text"


def test_ordinary_text_is_left_alone():
    line = "fire_posted trigger=team/deploy run_id=0123456789abcdef queue=http://127.0.0.1:8080/queue/item/5/"
    assert redact(line) == line


def test_terminal_text_has_no_control_character_left():
    hostile = "a\x1b]52;c;ZXZpbA==\x07b\x1b[2Jc\x9b31m\x1b]8;;http://evil\x1b\\link\u202e\r\n\t"
    shown = text.terminal(hostile)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", shown)
    assert shown.startswith("a\\x1b]52;c;ZXZpbA==\\x07b\\x1b[2Jc\\x9b31m")
    assert text.terminal("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"


def test_long_names_are_cut_with_a_hash_that_tells_them_apart():
    a, b = "x" * 100_000 + "a", "x" * 100_000 + "b"
    assert len(text.cut(a, 120)) <= 120 and text.cut(a, 120) != text.cut(b, 120)
    assert text.cut("short", 120) == "short"


def test_metrics_labels_are_bounded():
    metrics = Metrics()
    metrics.fires.labels("default", "j" * 100_000, "<img src=x>").inc()
    metrics.fires.labels("default", "deploy", "success").inc()
    rendered = metrics.render().decode()
    assert len(rendered) < 10_000
    assert 'outcome="unknown"' in rendered and 'outcome="success"' in rendered and "<img" not in rendered


HOSTILE_NAMES = ["a|b", "c`d", "``e``", "<!--", "f<details>", "[x](http://evil)", "g\\", "h\\|i", "*j*", "-->",
                 "<script>alert(1)</script>", "k\x1b[2J", "l\nm", "&lt;n", "o_p_", "~~q~~", "$r$", "| s |"]


def test_a_pull_request_comment_lists_every_fire_whatever_the_names():
    changes = [preview.Change(name, preview.Kind.FIRE, f"a new trigger {name}", f"{name}.yaml",
                              preview.Request("srv|`x`", f"/job/{name}/buildWithParameters",
                                              {name: name, "P": "<!-- `|` -->"}, name))
               for name in HOSTILE_NAMES]
    comment = preview.as_markdown(changes, "reconciler plan main..`x`|<!--")
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(comment)
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*</tr>", rendered, re.S)
    assert len(rows) == len(HOSTILE_NAMES)
    for (trigger, what, _), name in zip(rows, HOSTILE_NAMES, strict=True):
        assert "will fire" in what
        assert html.unescape(re.sub(r"</?code>", "", trigger)).strip() == text.terminal(" ".join(name.splitlines()))
    assert "<!--" not in rendered and "<script" not in rendered and "<details" not in rendered
    assert "<a " not in rendered and "\x1b" not in rendered


def test_chat_text_pages_no_one_and_links_nowhere():
    shown = text.chat("<!channel> @here <@U123> <http://evil|click> *bold* `code` https://evil.example")
    assert "<!" not in shown and "<@" not in shown and "<http" not in shown
    assert "@here" not in shown and "https://" not in shown and "*bold*" not in shown
