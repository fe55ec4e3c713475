"""Commit statuses, each forge through its documented API: one small adapter per provider, one POST each.

Plain `requests`, not githubkit or python-gitlab: each forge needs one documented POST, and a client
library would bring its models, retries and threads for it. What an answer means is decided here,
once for all providers: 2xx delivered; 429, 5xx and GitHub's 403 rate limits tried again (after
`Retry-After`, or the rate limit's reset); any other 4xx (422: the forge does not know the commit;
401/403: the token may not set statuses; 404: no such repository) given up, with the forge's reason.
Every call has a connect and a read timeout: a forge that never answers holds only the worker.

- GitHub (and GitHub Enterprise, api_url https://HOST/api/v3): "Create a commit status",
  `POST /repos/{owner}/{repo}/statuses/{sha}` {state: pending|success|failure|error, target_url,
  description, context}, `Authorization: Bearer`, `X-GitHub-Api-Version: 2022-11-28`.
- Gitea (api_url https://HOST/api/v1): the same path and body, `Authorization: token …`.
- GitLab (api_url https://HOST/api/v4): "Set the pipeline status of a commit",
  `POST /projects/{id or url-encoded path}/statuses/{sha}` {state: pending|running|success|failed|
  canceled, name, target_url, description}, `PRIVATE-TOKEN`. GitLab refuses a status the commit's
  job already has (400 "Cannot transition status via …"): that status is set, so it is delivered.
- Bitbucket Cloud (api_url https://api.bitbucket.org/2.0): "Create a build status for a commit",
  `POST /repositories/{workspace}/{slug}/commit/{sha}/statuses/build` {key, state: INPROGRESS|
  SUCCESSFUL|FAILED|STOPPED, url, name, description}, `Authorization: Bearer`.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from reconciler.config import CommitStatus
from reconciler.core.alerts import CommitState
from reconciler.logs import redact

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
RATE_LIMIT_WAIT = 60.0
"""GitHub's advice for a secondary rate limit that names no time: wait at least a minute."""


@dataclass(frozen=True, slots=True)
class Answer:
    """How one attempt went: delivered, or not (then `retry_in` seconds, or None to give up, and why)."""

    delivered: bool
    error: str | None = None
    retry_in: float | None = None
    status: int | None = None


class Forge:
    """The shared part: one session, the timeouts, and what an answer means."""

    name = "forge"
    states: ClassVar[dict[CommitState, str]] = {}

    def __init__(self, settings: CommitStatus, *, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        self.settings = settings
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.trust_env = True  # HTTPS_PROXY/NO_PROXY apply, as to every other client

    def request(self, sha: str, context: str, state: CommitState, target_url: str | None,
                description: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        raise NotImplementedError

    def post(self, sha: str, context: str, state: CommitState, target_url: str | None, description: str) -> Answer:
        url, headers, body = self.request(sha, context, state, target_url, description)
        try:
            r = self.session.post(url, json=body, headers={"User-Agent": "jenkins-reconciler", **headers},
                                  timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as e:
            return Answer(False, redact(f"{self.name} did not answer: {type(e).__name__}"), 0.0)
        return self.answer(r)

    def answer(self, r: requests.Response) -> Answer:
        if 200 <= r.status_code < 300:
            return Answer(True, status=r.status_code)
        reason = redact(f"{self.name} answered {r.status_code}: {_message(r)}")
        wait = _retry_after(r)
        if r.status_code == 429 or r.status_code >= 500:
            return Answer(False, reason, wait or 0.0, r.status_code)
        return Answer(False, reason, None, r.status_code)

    def close(self) -> None:
        self.session.close()


class GitHub(Forge):
    name = "github"
    states: ClassVar[dict[CommitState, str]] = {s: s.value for s in CommitState} | {CommitState.RUNNING: "pending"}

    def request(self, sha: str, context: str, state: CommitState, target_url: str | None,
                description: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        owner, repo = self.settings.repository.split("/")
        body = {"state": self.states[state], "description": description, "context": context}
        if target_url:
            body["target_url"] = target_url
        return (f"{self.settings.api_url}/repos/{quote(owner)}/{quote(repo)}/statuses/{quote(sha)}",
                self.auth(), body)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def answer(self, r: requests.Response) -> Answer:
        """GitHub says a rate limit with 403 as well as 429: the rate-limit headers or its message tell
        it from a token that may not set statuses."""
        if r.status_code in (403, 429):
            limited = r.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in r.headers or \
                "rate limit" in _message(r).lower()
            if limited:
                wait = _retry_after(r)
                if wait is None and r.headers.get("x-ratelimit-remaining") == "0":
                    wait = _float(r.headers.get("x-ratelimit-reset"), time.time()) - time.time()
                reason = redact(f"{self.name} answered {r.status_code}: {_message(r)}")
                return Answer(False, reason, max(wait if wait is not None else RATE_LIMIT_WAIT, 0.0), r.status_code)
        return super().answer(r)


class Gitea(GitHub):
    name = "gitea"
    states: ClassVar[dict[CommitState, str]] = {s: s.value for s in CommitState} | {CommitState.RUNNING: "pending"}

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.settings.token}", "Accept": "application/json"}


class GitLab(Forge):
    name = "gitlab"
    states: ClassVar[dict[CommitState, str]] = {
        CommitState.PENDING: "pending", CommitState.RUNNING: "running", CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failed", CommitState.ERROR: "failed"}

    def request(self, sha: str, context: str, state: CommitState, target_url: str | None,
                description: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        project = self.settings.repository
        project = project if project.isdigit() else quote(project, safe="")
        body = {"state": self.states[state], "name": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        return (f"{self.settings.api_url}/projects/{project}/statuses/{quote(sha)}",
                {"PRIVATE-TOKEN": self.settings.token}, body)

    def answer(self, r: requests.Response) -> Answer:
        if r.status_code == 400 and "cannot transition status" in _message(r).lower():
            return Answer(True, status=r.status_code)  # the job is in that state already
        return super().answer(r)


class Bitbucket(Forge):
    """Bitbucket requires a link with every status: a step with none yet (decided, before Jenkins
    gave a queue item) is skipped; the queued step that follows it carries one."""

    name = "bitbucket"
    states: ClassVar[dict[CommitState, str]] = {
        CommitState.PENDING: "INPROGRESS", CommitState.RUNNING: "INPROGRESS", CommitState.SUCCESS: "SUCCESSFUL",
        CommitState.FAILURE: "FAILED", CommitState.ERROR: "FAILED"}

    def request(self, sha: str, context: str, state: CommitState, target_url: str | None,
                description: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        workspace, slug = self.settings.repository.split("/")
        body = {"key": context, "name": context, "state": self.states[state], "description": description,
                "url": target_url}
        return (f"{self.settings.api_url}/repositories/{quote(workspace)}/{quote(slug)}/commit/{quote(sha)}"
                "/statuses/build", {"Authorization": f"Bearer {self.settings.token}",
                                    "Accept": "application/json"}, body)

    def post(self, sha: str, context: str, state: CommitState, target_url: str | None, description: str) -> Answer:
        if not target_url:
            return Answer(True)
        return super().post(sha, context, state, target_url, description)


PROVIDERS: dict[str, type[Forge]] = {"github": GitHub, "gitea": Gitea, "gitlab": GitLab, "bitbucket": Bitbucket}


def forge_for(settings: CommitStatus, **options: Any) -> Forge:
    return PROVIDERS[settings.provider](settings, **options)


def _message(r: requests.Response) -> str:
    """The forge's own reason, from its JSON (`message`, or Bitbucket's `error.message`), on one short line."""
    try:
        data = r.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        found, error = data.get("message"), data.get("error")
        if not found:
            found = error.get("message") if isinstance(error, dict) else error
        if found:
            return " ".join(str(found).split())[:300]
    return " ".join(r.text.split())[:200] or r.reason or ""


def _retry_after(r: requests.Response) -> float | None:
    """`Retry-After` in seconds (given as seconds or as an HTTP date), capped at an hour."""
    value = r.headers.get("retry-after")
    if value is None:
        return None
    seconds = _float(value, None)
    if seconds is None:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0)


def _float(value: Any, default: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
