"""Loopback stand-ins for the far side of deliveries, written from each service's documentation:

- `Forge`: the commit-status endpoints of GitHub ("Create a commit status": `POST /repos/{owner}/
  {repo}/statuses/{sha}`, Bearer token, 201; 422 "No commit found for SHA" for a commit it does not
  know, 422 for a description over 140 characters; 403/429 rate limits with `Retry-After` or
  `x-ratelimit-remaining: 0`), Gitea (the same path, `Authorization: token`), GitLab ("Set the
  pipeline status of a commit": `POST /projects/{id or url-encoded path}/statuses/{sha}`,
  `PRIVATE-TOKEN`, states pending/running/success/failed/canceled, 400 "Cannot transition status via
  :run from :running" for a state the job already has, 404 "404 Commit Not Found") and Bitbucket
  Cloud ("Create a build status for a commit": `POST /repositories/{workspace}/{slug}/commit/{sha}/
  statuses/build`, key/state INPROGRESS|SUCCESSFUL|FAILED|STOPPED/url).
- `Recorder`: what Apprise's `json://host:port/path` posts (its JSON: version, title, message, type).
- `Silent`: a port that accepts connections and never answers; `closed_port()`: one nobody listens on.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Standin:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                  time.time())
                with standin.lock:
                    standin.requests.append(request)
                status, headers, answer = standin.answer(request)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: Request) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Status:
    sha: str
    context: str
    state: str
    target_url: str | None
    description: str | None


@dataclass
class Forge(_Standin):
    """One forge of the given `provider`, holding `commits` in `repository`, accepting `token`."""

    provider: str
    repository: str
    token: str
    commits: set[str] = field(default_factory=set)
    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    """Answers given before any other, in order (a 500, a rate limit), whatever the request."""

    def __post_init__(self) -> None:
        _Standin.__init__(self)
        self.statuses: list[Status] = []
        self.api = self.url + {"github": "", "gitea": "/api/v1", "gitlab": "/api/v4", "bitbucket": "/2.0"}[
            self.provider]

    def answer(self, request: Request) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            if self.script:
                return self.script.pop(0)
        return getattr(self, f"_{self.provider}")(request)

    def _authorized(self, request: Request, header: str, value: str) -> bool:
        return request.headers.get(header) == value

    # GitHub: https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
    def _github(self, request: Request, scheme: str = "Bearer", prefix: str = "") -> tuple[int, dict[str, str], Any]:
        match = re.fullmatch(rf"{prefix}/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]+)", request.path)
        if not match or f"{unquote(match[1])}/{unquote(match[2])}" != self.repository:
            return 404, {}, {"message": "Not Found"}
        if not self._authorized(request, "authorization", f"{scheme} {self.token}"):
            return 401, {}, {"message": "Bad credentials"}
        body = request.body if isinstance(request.body, dict) else {}
        sha = match[3]
        if sha not in self.commits:
            return 422, {}, {"message": f"No commit found for SHA: {sha}"}
        if body.get("state") not in ("pending", "success", "failure", "error"):
            return 422, {}, {"message": "Validation Failed"}
        if len(body.get("description") or "") > 140:
            return 422, {}, {"message": "Validation Failed",
                             "errors": [{"message": "description is too long (maximum is 140 characters)"}]}
        self.statuses.append(Status(sha, body.get("context", "default"), body["state"], body.get("target_url"),
                                    body.get("description")))
        return 201, {}, {"state": body["state"], "context": body.get("context", "default")}

    # Gitea: https://gitea.com/api/swagger#/repository/repoCreateStatus
    def _gitea(self, request: Request) -> tuple[int, dict[str, str], Any]:
        return self._github(request, scheme="token", prefix="/api/v1")

    # GitLab: https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit
    def _gitlab(self, request: Request) -> tuple[int, dict[str, str], Any]:
        match = re.fullmatch(r"/api/v4/projects/([^/]+)/statuses/([0-9a-f]+)", request.path)
        if not match or unquote(match[1]) not in (self.repository, "42"):
            return 404, {}, {"message": "404 Project Not Found"}
        if not self._authorized(request, "private-token", self.token):
            return 401, {}, {"message": "401 Unauthorized"}
        body = request.body if isinstance(request.body, dict) else {}
        sha = match[2]
        if sha not in self.commits:
            return 404, {}, {"message": "404 Commit Not Found"}
        state, name = body.get("state"), body.get("name", "default")
        if state not in ("pending", "running", "success", "failed", "canceled"):
            return 400, {}, {"message": "state does not have a valid value"}
        current = next((s.state for s in reversed(self.statuses) if s.sha == sha and s.context == name), None)
        allowed = {None: {"pending", "running", "success", "failed", "canceled"},
                   "pending": {"running", "success", "failed", "canceled"},
                   "running": {"success", "failed", "canceled"}}.get(current, set())
        if state not in allowed:
            event = {"pending": "enqueue", "running": "run", "success": "succeed", "failed": "drop",
                     "canceled": "cancel"}[state]
            return 400, {}, {"message": f"Cannot transition status via :{event} from :{current} (Reason(s): "
                                        f"Status cannot transition via \"{event}\")"}
        self.statuses.append(Status(sha, name, state, body.get("target_url"), body.get("description")))
        return 201, {}, {"status": state, "name": name, "sha": sha}

    # Bitbucket Cloud: https://developer.atlassian.com/cloud/bitbucket/rest/api-group-commit-statuses/
    def _bitbucket(self, request: Request) -> tuple[int, dict[str, str], Any]:
        match = re.fullmatch(r"/2.0/repositories/([^/]+)/([^/]+)/commit/([0-9a-f]+)/statuses/build", request.path)
        if not match or f"{match[1]}/{match[2]}" != self.repository:
            return 404, {}, {"type": "error", "error": {"message": "Repository not found"}}
        if not self._authorized(request, "authorization", f"Bearer {self.token}"):
            return 401, {}, {"type": "error", "error": {"message": "Access token expired"}}
        body = request.body if isinstance(request.body, dict) else {}
        if match[3] not in self.commits:
            return 404, {}, {"type": "error", "error": {"message": "Commit not found"}}
        if body.get("state") not in ("INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED") or not body.get("key") or \
                not body.get("url"):
            return 400, {}, {"type": "error", "error": {"message": "key, state and url are required"}}
        self.statuses.append(Status(match[3], body["key"], body["state"], body["url"], body.get("description")))
        return 201, {}, {"key": body["key"], "state": body["state"]}

    def states(self, context: str | None = None) -> list[str]:
        return [s.state for s in self.statuses if context is None or s.context == context]


class Recorder(_Standin):
    """Apprise's json:// target: each message's JSON body, in order."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        super().__init__()

    def answer(self, request: Request) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            status = self.answers.pop(0) if self.answers else 200
        return status, {}, {}

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.body for r in self.requests if isinstance(r.body, dict)]

    def json_url(self, path: str) -> str:
        return self.url.replace("http://", "json://") + path


class Silent:
    """Accepts connections and never answers: a forge that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
