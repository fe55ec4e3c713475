"""The simulator's HTTP face: Jenkins' routes, security checks, fault injection, a request log."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from . import api
from .config import SimConfig, User
from .model import Jenkins, JenkinsError, JobDef

JENKINS_VERSION = "2.479.3"
"""The default `version`: an LTS line that answers a coalesced buildWithParameters with 303."""
SEE_OTHER_SINCE = (2, 308)
"""JENKINS-66105 (jenkinsci/jenkins#5615): a request folded into an item already queued answers 303."""
QUEUE_PAGE_SINCE = (2, 467)
"""jenkinsci/jenkins#9446 (July 2024): the queue item page a 303 points to answers 200, not 404, so a
client that follows the redirect lands on something. 2.467 is the first weekly after its merge."""
CRUMB_FIELD = "Jenkins-Crumb"
SESSION_COOKIE = "JSESSIONID.simulator"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Jenkins"'}


@dataclass
class Fault:
    """One injected misbehaviour: the first live rule whose path and method match applies."""

    path: str = ".*"
    method: str | None = None
    status: int | None = None
    latency: float = 0.0
    drop: str | None = None  # "before": nothing processed; "after": processed, response lost
    process: bool = False
    """With `status`: handle the request first, then answer the status anyway, as Jenkins does when an
    exception follows the queueing ("Failed to persist config.xml"); with `latency`, wait after handling."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers the faulted answer carries (`Retry-After`)."""
    sso: bool = False
    echo: bool = False
    """With `status`: the error page repeats the request's headers and body, as some proxies' debug pages do."""
    times: int | None = None  # None: until cleared

    def matches(self, method: str, path: str) -> bool:
        return (self.times is None or self.times > 0) and \
            (self.method is None or self.method == method) and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Request:
    """What the simulated Jenkins received, for tests to assert on."""

    method: str
    path: str
    params: dict[str, list[str]]
    user: str | None
    headers: dict[str, str]
    status: int = 0
    fault: str | None = None
    at: float = 0.0
    """When the request arrived (time.time()), so benchmarks can measure end to end."""
    peer: str = ""
    """The client's address and port: requests on one kept-alive connection share it."""

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None


@dataclass
class _Caller:
    user: User | None
    by_api_token: bool
    session: str | None
    new_session: str | None = None


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/html;charset=utf-8"


def _json(obj: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(obj).encode(), content_type="application/json;charset=utf-8")


def _parse_delay(text: str | None) -> float | None:
    """TimeDuration.fromString: a bare number is milliseconds, `sec`/`secs` mark seconds; anything else
    is an IllegalArgumentException, which reaches the client as a 500."""
    if text is None:
        return None
    value, multiplier = text.strip(), 0.001
    if value.endswith("sec") or value.endswith("secs"):
        value, multiplier = value[:value.rindex("sec")].strip(), 1.0
    if not re.fullmatch(r"-?\d+", value):
        raise JenkinsError(500, f"java.lang.IllegalArgumentException: Invalid time duration value: {text}")
    return int(value) * multiplier


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


class SimulatedJenkins:
    """Routes requests to the model; kept apart from the socket plumbing so it reads like Jenkins."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.jenkins = Jenkins(list(config.jobs), executors=config.executors,
                               quiet_period=config.quiet_period, left_item_ttl=config.left_item_ttl)
        self.root = ""
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.sessions: set[str] = set()
        self._salt = secrets.token_hex(8)
        self._lock = threading.Lock()

    # -- security -------------------------------------------------------------------------
    def authenticate(self, headers: Any) -> _Caller:
        session = None
        for part in (headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value in self.sessions:
                session = value
        auth = headers.get("Authorization") or ""
        if not auth.lower().startswith("basic "):
            return _Caller(None, False, session)
        try:
            name, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            raise JenkinsError(401, "Malformed Authorization header", _CHALLENGE) from None
        user = self.config.users.get(name)
        if user is not None and user.token is not None and secrets.compare_digest(secret, user.token):
            return _Caller(user, True, session)
        if user is not None and user.password is not None and secrets.compare_digest(secret, user.password):
            return _Caller(user, False, session)
        raise JenkinsError(401, f"Invalid password/token for user: {name}", _CHALLENGE)

    def _crumb(self, session: str, caller: _Caller) -> str:
        who = caller.user.name if caller.user else "anonymous"
        return hashlib.sha256(f"{session}:{who}:{self._salt}".encode()).hexdigest()

    def check_crumb(self, method: str, headers: Any, caller: _Caller, params: dict[str, list[str]]) -> None:
        """CrumbFilter: POSTs need a crumb bound to the session, unless made with an API token. The crumb
        may come as a header, or as a form field or query parameter of the same name."""
        if not self.config.csrf or method != "POST":
            return
        if caller.by_api_token and self.config.csrf_exempt_api_token:
            return
        sent = headers.get(CRUMB_FIELD) or (params.get(CRUMB_FIELD) or [None])[0]
        if caller.session is None or sent is None or \
                not secrets.compare_digest(sent, self._crumb(caller.session, caller)):
            raise JenkinsError(403, "No valid crumb was included in the request")

    def check_read(self, caller: _Caller) -> None:
        if caller.user is None and not self.config.anonymous_read:
            raise JenkinsError(403, "Authentication required: anonymous is missing the Overall/Read permission")

    def expire_crumbs(self) -> None:
        """Sessions end (a restart, a timeout), and every crumb bound to one goes stale with it."""
        self.sessions.clear()

    # -- routing --------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, list[str]], caller: _Caller,
               remote: str) -> _Response:
        if path.rstrip("/").endswith("api/python"):  # the same object as a Python literal (jenkinsapi reads it)
            response = self.handle(method, path.rstrip("/").removesuffix("python") + "json", params, caller, remote)
            if response.content_type.startswith("application/json"):
                response = _Response(response.status, api.python_literal(json.loads(response.body)).encode(),
                                     response.headers, "text/x-python;charset=UTF-8")
            return response
        self.check_read(caller)
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        if segments[:1] == ["job"]:
            return self._job_route(method, segments, params, caller, remote)
        rest = "/".join(segments)
        visible = self._visible_to(caller)
        if rest in ("api/json", "api/json/"):
            return _json(self._tree(api.folder_json(self.root, self.jenkins, "", visible), params))
        if rest in ("me/api/json", "whoAmI/api/json"):
            who = caller.user
            return _json(self._tree(api.user_json(self.root, who.name if who else "anonymous",
                                                  who.full_name if who else "anonymous"), params))
        m = re.fullmatch(r"user/([^/]+)/api/json", rest)
        if m:
            user = self.config.users.get(m.group(1))
            if user is None:
                raise JenkinsError(404, f"No user {m.group(1)}")
            return _json(self._tree(api.user_json(self.root, user.name, user.full_name), params))
        if rest == "computer/api/json":
            return _json(self._tree(api.computers_json(self.root, self.jenkins), params))
        if rest in ("computer/(master)/api/json", "computer/(built-in)/api/json"):
            return _json(self._tree(api.node_json(self.root, self.jenkins), params))
        if rest == "":
            return _Response(200, b"<html><body>Jenkins (simulated)</body></html>")
        if rest == "crumbIssuer/api/json":
            if not self.config.csrf:
                raise JenkinsError(404, "Not Found")
            session = caller.session or secrets.token_urlsafe(16)
            if caller.session is None:
                self.sessions.add(session)
                caller.new_session = session
                caller.session = session
            return _json({"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                          "crumb": self._crumb(session, caller), "crumbRequestField": CRUMB_FIELD})
        if rest == "queue/api/json":
            self.jenkins.advance()
            now = self.jenkins.clock()
            items = [api.queue_item_json(self.root, q, now) for q in self.jenkins.queue.values()
                     if q.state != "left"]
            return _json(self._tree({"_class": "hudson.model.Queue", "discoverableItems": [],
                                     "items": items}, params))
        m = re.fullmatch(r"queue/item/(\d+)/?", rest)
        if m and version_tuple(self.config.version) >= QUEUE_PAGE_SINCE:  # where a followed 303 lands
            self.jenkins.queue_item(int(m.group(1)))
            return _Response(200, b"<html><body>Queue item. For its state, read api/json?tree=... "
                                  b"(executable[number,url] once it has left the queue)</body></html>")
        m = re.fullmatch(r"queue/item/(\d+)/api/json", rest)
        if m:
            item = self.jenkins.queue_item(int(m.group(1)))
            return _json(self._tree(api.queue_item_json(self.root, item, self.jenkins.clock()), params))
        if rest == "queue/cancelItem":
            self._require_post(method)
            item_id = (params.get("id") or [""])[0]
            if not item_id.isdigit():
                raise JenkinsError(400, "id is required")
            self.jenkins.cancel(int(item_id))
            return _Response(204)
        raise JenkinsError(404, "Not Found")

    @staticmethod
    def _visible_to(caller: _Caller) -> Any:
        name = caller.user.name if caller.user else None
        return lambda job: job.readers is None or name in job.readers

    def _tree(self, obj: Any, params: dict[str, list[str]]) -> Any:
        tree = params.get("tree")
        return api.apply_tree(obj, api.parse_tree(tree[0])) if tree else obj

    @staticmethod
    def _require_post(method: str) -> None:
        if method != "POST":
            raise JenkinsError(405, "This URL requires POST", {"Allow": "POST"})

    def _job_route(self, method: str, segments: list[str], params: dict[str, list[str]],
                   caller: _Caller, remote: str) -> _Response:
        names: list[str] = []
        i = 0
        while i + 1 < len(segments) and segments[i] == "job":
            names.append(segments[i + 1])
            i += 2
        full_name, rest = "/".join(names), "/".join(segments[i:])
        job = self.jenkins.jobs.get(full_name)
        if job is None or not self._visible_to(caller)(job):  # unreadable answers as absent does
            if job is None and rest in ("api/json", "") and self.jenkins.folder_children(full_name):
                return _json(self._tree(api.folder_json(self.root, self.jenkins, full_name,
                                                        self._visible_to(caller)), params))
            raise JenkinsError(404, f"No job named {full_name}")
        if rest in ("build", "buildWithParameters"):
            return self._trigger(method, job, rest, params, caller, remote)
        if rest in ("api/json", ""):
            self.jenkins.advance()
            full = "tree" in params
            everything = full and "allBuilds" in params["tree"][0]
            return _json(self._tree(api.job_json(self.root, self.jenkins, job, full, everything), params))
        m = re.fullmatch(r"(\d+|lastBuild|lastCompletedBuild)(?:/(.*))?", rest)
        if not m:
            raise JenkinsError(404, "Not Found")
        build = self._resolve_build(job, m.group(1))
        action = (m.group(2) or "").rstrip("/")
        if action == "":  # the build's page, where stop's redirect leads
            return _Response(200, f"<html><body>{job.full_name} #{build.number}</body></html>".encode())
        if action == "api/json":
            return _json(self._tree(api.build_json(self.root, build), params))
        if action == "consoleText":
            return _Response(200, self._log(build).encode(), content_type="text/plain;charset=utf-8")
        if action == "logText/progressiveText":
            text = self._log(build).encode()
            start = int((params.get("start") or ["0"])[0] or 0)
            headers = {"X-Text-Size": str(len(text))}
            if build.building:
                headers["X-More-Data"] = "true"
            return _Response(200, text[start:], headers, "text/plain;charset=utf-8")
        if action == "stop":
            self._require_post(method)
            self._require_build_permission(caller)
            self.jenkins.stop(build)
            return _Response(302, headers={"Location": api.build_ref(self.root, build)["url"]})
        raise JenkinsError(404, "Not Found")

    def _resolve_build(self, job: JobDef, ref: str) -> Any:
        if ref.isdigit():
            return self.jenkins.build(job, int(ref))
        self.jenkins.advance()
        builds = sorted(self.jenkins.builds[job.full_name].values(), key=lambda b: -b.number)
        if ref == "lastCompletedBuild":
            builds = [b for b in builds if not b.building]
        return self.jenkins.build(job, builds[0].number if builds else 0)

    @staticmethod
    def _log(build: Any) -> str:
        return "".join(line + "\n" for line in build.log)

    @staticmethod
    def _require_build_permission(caller: _Caller) -> None:
        who = caller.user.name if caller.user else "anonymous"
        if caller.user is None or "build" not in caller.user.permissions:
            raise JenkinsError(403, f"{who} is missing the Job/Build permission")

    def _trigger(self, method: str, job: JobDef, endpoint: str, params: dict[str, list[str]],
                 caller: _Caller, remote: str) -> _Response:
        """ParameterizedJobMixIn.doBuild / doBuildWithParameters, in Jenkins' order of checks."""
        first = {k: v[0] for k, v in params.items() if v}
        if endpoint == "build":
            if job.disabled:
                raise JenkinsError(409, f"{job.full_name} is not buildable")
            if job.parameters is not None and method != "POST":  # the parameter form, refused for API use
                raise JenkinsError(405, "This build requires parameters: POST them", {"Allow": "POST"})
        self._check_build_token(method, job, first, caller)
        if endpoint == "buildWithParameters" and job.disabled:
            raise JenkinsError(409, f"{job.full_name} is not buildable!")
        delay = _parse_delay(first.get("delay"))
        if endpoint == "buildWithParameters":
            if job.parameters is None:
                raise JenkinsError(500, "java.lang.IllegalStateException: This build is not parameterized!")
            values = [(p, p.value_from(first.get(p.name))) for p in job.parameters]
        elif job.parameters is not None:
            values = self._form_parameters(job, first)
        else:
            values = []
        item, created = self.jenkins.schedule(job, values, self._cause(job, first, caller, remote), delay)
        status = 201
        if not created and endpoint == "buildWithParameters" and \
                version_tuple(self.config.version) >= SEE_OTHER_SINCE:
            status = 303  # /build always answers 201 (ParameterizedJobMixIn.doBuild: "TODO JENKINS-66105")
        return _Response(status, headers={"Location": f"{self.root}{item_url(item.id)}"})

    def _check_build_token(self, method: str, job: JobDef, first: dict[str, str], caller: _Caller) -> None:
        """BuildAuthorizationToken.checkPermission: the right token allows any method."""
        provided = first.get("token")
        if job.token is not None and provided is not None:
            if secrets.compare_digest(provided, job.token):
                return
            raise JenkinsError(403, "Invalid token provided.")
        self._require_build_permission(caller)
        self._require_post(method)

    @staticmethod
    def _form_parameters(job: JobDef, first: dict[str, str]) -> list[tuple[Any, Any]]:
        """ParametersDefinitionProperty._doBuild: parameters come only from the `json` form field."""
        raw = first.get("json")
        if not raw:
            # Stapler's getSubmittedForm answers 400 when there is no form submission.
            raise JenkinsError(400, "This page expects a form submission" if first else "Nothing is submitted")
        try:
            form = json.loads(raw)
        except ValueError:
            raise JenkinsError(400, "Malformed json form field") from None
        given = form.get("parameter", []) if isinstance(form, dict) else []
        given = [given] if isinstance(given, dict) else given
        submitted: dict[str, Any] = {}
        for entry in given:
            p = job.param(str(entry.get("name")))
            if p is None:
                raise JenkinsError(500, f"java.lang.IllegalArgumentException: No such parameter definition: "
                                        f"{entry.get('name')}")
            value = entry.get("value")
            submitted[p.name] = str(value).lower() if isinstance(value, bool) else \
                None if value is None else str(value)
        return [(p, p.value_from(submitted.get(p.name))) for p in job.parameters or ()]

    @staticmethod
    def _cause(job: JobDef, first: dict[str, str], caller: _Caller, remote: str) -> dict[str, Any]:
        """getBuildCause: a RemoteCause (with `cause` as its note) only when the job token is sent."""
        if job.token is not None and "token" in first:
            note = first.get("cause")
            text = f"Started by remote host {remote}" + (f" with note: {note}" if note else "")
            return {"_class": "hudson.model.Cause$RemoteCause", "addr": remote, "note": note,
                    "shortDescription": text}
        user = caller.user
        return {"_class": "hudson.model.Cause$UserIdCause",
                "shortDescription": f"Started by user {user.full_name if user else 'anonymous'}",
                "userId": user.name if user else None,
                "userName": user.full_name if user else "anonymous"}


def item_url(item_id: int) -> str:
    return f"queue/item/{item_id}/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    """TCP_NODELAY, as Jetty sets on accepted sockets by default (`acceptedTcpNoDelay`): without it an
    answer written as headers and then a body stalls 40 ms on the client's delayed ACK."""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr line; the request log is the record."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        arrived = time.time()
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body: Jetty's read fails (EofException), nothing runs
            self.close_connection = True
            return
        params = parse_qs(url.query, keep_blank_values=True)
        if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
                params.setdefault(k, []).extend(v)
        if url.path.startswith("/_sim/"):
            self._send(self.server.control(method, url.path, params, body))
            return
        if url.path == "/sso/login":
            self._send(_Response(200, b"<html><body>Single sign-on: please log in</body></html>"))
            self._record(method, url.path, params, None, 200, None, arrived)
            return
        fault = self.server.take_fault(method, url.path)
        if fault is not None and fault.latency and not fault.process:
            time.sleep(fault.latency)
        caller: _Caller | None = None
        try:
            if fault is not None and not fault.process and (fault.sso or fault.status or fault.drop == "before"):
                response = self._faulted(fault, url, body)
            else:
                caller = sim.authenticate(self.headers)
                sim.check_crumb(method, self.headers, caller, params)
                response = sim.handle(method, url.path, params, caller, self.client_address[0])
                if fault is not None and fault.process:
                    time.sleep(fault.latency)
                    if fault.status:
                        response = self._faulted(fault, url, body)
        except JenkinsError as e:
            response = _Response(e.status, f"<html><body><h1>Error {e.status}</h1><p>{e.message}</p>"
                                            f"</body></html>".encode(), dict(e.headers))
        except Exception as e:  # a simulator bug should look like Jenkins' own 500, not hang a test
            response = _Response(500, f"<html><body>{type(e).__name__}: {e}</body></html>".encode())
        user = caller.user.name if caller and caller.user else None
        fault_name = None if fault is None else ("sso" if fault.sso else "drop" if fault.drop else
                                                 f"status {fault.status}" if fault.status else "latency")
        if fault is not None and fault.process and fault.status and caller is not None:
            fault_name = f"status {fault.status} after processing"
        self._record(method, url.path, params, user, response.status, fault_name, arrived)
        if caller is not None and caller.new_session:
            response.headers["Set-Cookie"] = f"{SESSION_COOKIE}={caller.new_session}; Path=/; HttpOnly"
        if fault is not None and fault.drop:
            self._drop()
            return
        self._send(response, head=method == "HEAD")

    def _faulted(self, fault: Fault, url: Any, body: bytes) -> _Response:
        if fault.sso:
            target = f"{self.server.sso_root}sso/login?from={quote(url.path)}"
            return _Response(302, b"", {"Location": target})
        if fault.status == 503 and not fault.echo:  # Jenkins starting or restarting
            return _Response(503, b"<html><body><p>Please wait while Jenkins is getting ready to work</p>"
                                  b"</body></html>", dict(fault.headers))
        if fault.status and fault.process:
            return _Response(fault.status, b"<html><body><h1>Error 500</h1><p>java.io.IOException: Failed to "
                                           b"persist config.xml</p></body></html>", dict(fault.headers))
        if fault.status and fault.echo:
            echoed = f"Authorization: {self.headers.get('Authorization')} {body.decode('latin-1')} " + \
                " ".join(f"{k}: {v}" for k, v in self.headers.items())
            return _Response(fault.status, f"<html><body><h1>Error {fault.status}</h1><p>Bad request: {echoed}</p>"
                                           f"</body></html>".encode())
        if fault.status:
            return _Response(fault.status, f"<html><body>Error {fault.status} (injected)</body></html>".encode(),
                             dict(fault.headers))
        return _Response(0)

    def _record(self, method: str, path: str, params: dict[str, list[str]], user: str | None,
                status: int, fault: str | None, arrived: float) -> None:
        self.server.record(Request(method=method, path=unquote(path), params=params, user=user,
                                   headers=dict(self.headers.items()), status=status, fault=fault, at=arrived,
                                   peer=f"{self.client_address[0]}:{self.client_address[1]}"))

    def _drop(self) -> None:
        """Reset the connection with nothing sent, as a proxy or a crashing JVM would."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _send(self, response: _Response, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("X-Jenkins", self.server.sim.config.version)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for k, v in response.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, sim: SimulatedJenkins, port: int, tls: ssl.SSLContext | None = None):
        self.sim = sim
        self.tls = tls
        super().__init__(("127.0.0.1", port), _Handler)
        self.sso_root = f"http://localhost:{self.server_address[1]}/"

    def get_request(self) -> tuple[Any, Any]:
        """With TLS, the handshake happens on the connection's own thread, at its first read."""
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that rejects our certificate ends the handshake; Jetty logs that at debug, not as a crash."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError):
            super().handle_error(request, client_address)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.sim._lock:
            for fault in self.sim.faults:
                if fault.matches(method, unquote(path)):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def record(self, request: Request) -> None:
        with self.sim._lock:
            self.sim.requests.append(request)

    def control(self, method: str, path: str, params: dict[str, list[str]], body: bytes) -> _Response:
        """A small HTTP control API, for driving a simulator that runs in another process."""
        sim = self.sim
        first = {k: v[0] for k, v in params.items() if v}
        try:
            if path == "/_sim/requests":
                if method == "DELETE":
                    with sim._lock:
                        sim.requests.clear()
                    return _Response(204)
                since = int(first.get("since", 0))
                with sim._lock:
                    return _json([r.__dict__ for r in sim.requests[since:]])
            if path == "/_sim/faults":
                if method == "DELETE":
                    with sim._lock:
                        sim.faults.clear()
                    return _Response(204)
                with sim._lock:
                    sim.faults.append(Fault(**json.loads(body or b"{}")))
                return _Response(201)
            if path == "/_sim/finish" and method == "POST":
                build = sim.jenkins.finish(first["job"], int(first["number"]) if "number" in first else None,
                                           first.get("result"))
                return _json({"number": build.number, "result": build.result})
            if path == "/_sim/restart" and method == "POST":
                sim.jenkins.restart()
                return _Response(204)
            if path == "/_sim/expire-crumbs" and method == "POST":
                sim.expire_crumbs()
                return _Response(204)
        except (KeyError, TypeError, ValueError) as e:
            return _Response(400, f"bad control request: {e}".encode(), content_type="text/plain")
        except JenkinsError as e:
            return _Response(e.status, e.message.encode(), content_type="text/plain")
        return _Response(404, b"unknown control endpoint", content_type="text/plain")
