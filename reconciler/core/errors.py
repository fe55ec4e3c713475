"""The exceptions a user sees. Each message says what is wrong and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error the reconciler reports to its user."""


@dataclass(frozen=True)
class Problem:
    line: int
    column: int
    message: str


class SpecError(ReconcilerError):
    """A trigger spec that cannot be used; carries every problem found, each with its position."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.path}:{p.line}:{p.column}: {p.message}" for p in self.problems)


class ConfigError(ReconcilerError):
    """The reconciler's own configuration (servers, credentials, flags) is wrong."""


class StateError(ReconcilerError):
    """The state store cannot be opened, migrated or written."""


class NotLeader(StateError):
    """A write refused because this replica's lease may have lapsed: another may lead now."""


class Withheld(ReconcilerError):
    """A POST not sent: this replica may no longer lead."""


class HistoryGitError(ReconcilerError):
    """The history repository cannot be fetched, committed to or pushed to; the lines wait locally."""


class JenkinsError(ReconcilerError):
    """Jenkins did not do what was asked. `retryable` says whether asking again may help."""

    retryable = False

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class JenkinsUnavailable(JenkinsError):
    """Connection failures, timeouts, 429 and 5xx: worth another try later."""

    retryable = True

    def __init__(self, message: str, status: int | None = None, maybe_received: bool = False):
        super().__init__(message, status)
        self.maybe_received = maybe_received
        """True when Jenkins may have acted on the request although no answer arrived."""


class JenkinsServerError(JenkinsUnavailable):
    """A 500 from Jenkins itself: an exception escaped a web method. Since 2.224 its page names only a
    Logging ID, so the cause (an outage, or an illegal parameter value) must be found another way."""

    def __init__(self, message: str, logging_id: str | None = None):
        super().__init__(message, 500, maybe_received=True)
        self.logging_id = logging_id
        """The id under which Jenkins logged the exception: what its administrator searches the log for."""


class JenkinsRefused(JenkinsError):
    """Jenkins (or a proxy in front of it) answered no; asking again will not help."""


class LoginRedirect(JenkinsRefused):
    """A redirect to a login page: an SSO proxy is in front of Jenkins."""
