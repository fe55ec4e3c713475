"""Messages to people, through Apprise: one library for Slack, Teams, Discord, Mattermost, email,
webhooks (json://) and the rest, each addressed by an URL the operator gives as a secret.

Each channel escapes what it is sent in its own way (core/text.py): in chats, text from a spec, a
commit or Jenkins pages nobody (`<!channel>`, `@here`) and links nowhere; elsewhere it is plain
text with its control characters shown. Apprise's log lines are captured per message, never
printed: the one that says why a message failed becomes, redacted, the reason on record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import apprise

from reconciler.config import NotifyChannel
from reconciler.core import text
from reconciler.core.alerts import KIND, Alert, message, wants
from reconciler.core.errors import ConfigError
from reconciler.forge.statuses import Answer
from reconciler.logs import redact

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
CHATS = {"slack", "msteams", "discord", "mmost", "mmosts", "rocket", "rockets", "zulip", "matrix", "matrixs",
         "ntfy", "ntfys", "gchat", "teams", "workflow", "workflows", "rocketchat"}
"""Schemes whose messages a chat renders as markup: their text is escaped as chat text."""
_STATUS = re.compile(r"error=(\d{3})")

logging.getLogger("apprise").addHandler(logging.NullHandler())
logging.getLogger("apprise").propagate = False  # its lines name hosts and may quote answers: captured, not printed


def escaper(url: str) -> Callable[[str], str]:
    """How text is made inert for the channel at `url`."""
    scheme = urlsplit(url).scheme.lower()
    return text.chat if scheme in CHATS else (lambda value: text.terminal(value))


class Channel:
    """One `notify:` entry, its Apprise service made once."""

    def __init__(self, settings: NotifyChannel):
        self.settings = settings
        self.escape = escaper(settings.url)
        self.apprise = apprise.Apprise()
        if not self.apprise.add(settings.url):
            raise ConfigError(f"{settings.where}.url: Apprise does not know this URL (its scheme, or a part it "
                              "requires); see https://github.com/caronc/apprise/wiki for each service's form")
        for service in self.apprise:
            service.socket_connect_timeout = CONNECT_TIMEOUT
            service.socket_read_timeout = READ_TIMEOUT

    def wants(self, alert: Alert, trigger: str) -> bool:
        return wants(self.settings.on, self.settings.triggers, alert, trigger)

    def send(self, alert: Alert, facts: dict[str, str | None]) -> Answer:
        """One message; not delivered: tried again (the service's answer, when Apprise says it, tells a
        refusal, 4xx, from an outage), its reason redacted."""
        title, body = message(alert, facts, self.escape)
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = self.apprise.notify(title=title, body=body, notify_type=apprise.NotifyType(KIND[alert]),
                                     body_format=apprise.NotifyFormat.MARKDOWN if self.escape is text.chat
                                     else apprise.NotifyFormat.TEXT)
        if ok:
            return Answer(True)
        said = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines() if line.strip()]
        reason = redact(said[-1] if said else "the service did not accept the message")
        found = _STATUS.search(reason)
        status = int(found.group(1)) if found else None
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return Answer(False, f"{self.settings.where}: {reason}", None, status)
        return Answer(False, f"{self.settings.where}: {reason}", 0.0, status)
