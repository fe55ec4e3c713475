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
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from . import api, items
from .config import SimConfig, User
from .model import Jenkins, JenkinsError, JobDef

JENKINS_VERSION = "2.479.3"
"""The default `version`: an LTS line that answers a coalesced buildWithParameters with 303."""
SEE_OTHER_SINCE = (2, 308)
"""JENKINS-66105 (jenkinsci/jenkins#5615): a request folded into an item already queued answers 303."""
QUEUE_PAGE_SINCE = (2, 467)
"""jenkinsci/jenkins#9446 (July 2024): the queue item page a 303 points to answers 200, not 404, so a
client that follows the redirect lands on something. 2.467 is the first weekly after its merge."""
NOT_PARAMETERIZED_400_SINCE = (2, 524)
"""jenkinsci/jenkins#10954 (2.524, LTS 2.528.1): buildWithParameters on a job without parameters is a 400
"<full name> is not parameterized"; before, an IllegalStateException, i.e. a 500."""
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
    base: str = ""
    """The request's own scheme, Host and port: where Stapler's redirects (a 201's Location) point."""

    def may(self, permission: str) -> bool:
        return self.user is not None and permission in self.user.permissions


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
    (`1500ms` too: it knows no other unit) is an IllegalArgumentException, which reaches the client as a
    500. The queue then takes whole seconds: ParameterizedJobMixIn.doBuild and
    ParametersDefinitionProperty.buildWithParameters pass `delay.getTimeInSeconds()` (millis / 1000,
    truncated) to Queue.schedule2, so `delay=1500` is a quiet period of 1 s."""
    if text is None:
        return None
    value, multiplier = text.strip(), 1
    if value.endswith("sec") or value.endswith("secs"):
        value, multiplier = value[:value.rindex("sec")].strip(), 1000
    if not re.fullmatch(r"[-+]?\d+", value):
        raise JenkinsError(500, f"java.lang.IllegalArgumentException: Invalid time duration value: {text}")
    millis = int(value) * multiplier
    return float(int(millis / 1000))  # Java's long division truncates toward zero


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
        self.views: dict[str, items.View] = {"all": items.View("all", klass="hudson.model.AllView")}
        for raw in config.views:
            self.views[raw.name] = raw
        self.agents: dict[str, dict[str, Any]] = {}
        self.builtin_offline: str | None = None
        """The built-in node's temporary offline cause, once toggled offline."""
        self.extra_tokens: dict[str, tuple[str, str, str]] = {}
        """API tokens made through ApiTokenProperty/generateNewToken: value → (user, uuid, name)."""
        self.log_file = None if config.log is None else open(config.log, "a", encoding="utf-8")  # noqa: SIM115
        self.oopses: list[tuple[str, str]] = []
        """(Logging ID, the exception) of each 500: what Jenkins writes to its own log."""

    # -- what the operator sees --------------------------------------------------------------
    def oops(self, reason: str) -> _Response:
        """oops.jelly (since 2.224): an exception escaping a web method is a 500 page that names only a
        Logging ID; the exception is logged, and shown only with -Djenkins.model.Jenkins.SHOW_STACK_TRACE
        (the `show_stack_trace` setting)."""
        logging_id = str(uuid.uuid4())
        trace = f"<h2>Stack trace</h2><pre>{escape(reason)}</pre>" if self.config.show_stack_trace else ""
        page = (f"<html><head><title>Jenkins</title></head><body><h1>Oops!</h1><div id=\"error-description\">"
                f"<h2>A problem occurred while processing the request</h2><p>Logging ID={logging_id}</p></div>"
                f"{trace}</body></html>")
        with self._lock:
            self.oopses.append((logging_id, reason))
        return _Response(500, page.encode())

    def log_request(self, method: str, path: str, params: dict[str, list[str]], user: str | None,
                    status: int, fault: str | None, arrived: float) -> None:
        """One JSON line a request (`log`): what was asked and answered, never a credential. Values of
        parameters that carry secrets (`token`, a password parameter, the crumb, `json`) are masked."""
        if self.log_file is None:
            return
        secret_names = {"token", "json", CRUMB_FIELD.lower(), "password", "tokenvalue", "newtokenname"}
        secret_names |= {p.name.lower() for j in self.jenkins.jobs.values() for p in j.parameters or ()
                         if p.type == "password"}
        query = {k: ["****" if k.lower() in secret_names else v for v in vs] for k, vs in params.items()}
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(arrived))
                           + f".{int(arrived * 1000) % 1000:03d}Z", "method": method, "path": unquote(path),
                           "query": query, "status": status, "user": user, "fault": fault},
                          ensure_ascii=False)
        with self._lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

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
        extra = self.extra_tokens.get(secret)
        if user is not None and extra is not None and extra[0] == name:
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
               remote: str, body: bytes = b"", content_type: str = "") -> _Response:
        if path.rstrip("/").endswith("api/python"):  # the same object as a Python literal (jenkinsapi reads it)
            response = self.handle(method, path.rstrip("/").removesuffix("python") + "json", params, caller, remote)
            if response.content_type.startswith("application/json"):
                response = _Response(response.status, api.python_literal(json.loads(response.body)).encode(),
                                     response.headers, "text/x-python;charset=UTF-8")
            return response
        self.check_read(caller)
        # Stapler's TokenList: a StringTokenizer on "/" and "\", so empty segments (`//`) are skipped
        segments = [unquote(s) for s in re.split(r"[/\\]", path) if s]
        if segments[:1] == ["job"]:
            return self._job_route(method, segments, params, caller, remote, body, content_type)
        if segments[:1] == ["view"] and len(segments) >= 2:
            return self._view_route(method, segments[1], "/".join(segments[2:]), params, caller, body,
                                    content_type)
        if segments[:1] == ["computer"] and len(segments) >= 2:
            return self._computer_route(method, segments[1], "/".join(segments[2:]), params, caller, body)
        rest = "/".join(segments)
        visible = self._visible_to(caller)
        depth = self._depth(params)
        if rest == "api/json":
            out = api.folder_json(self.root, self.jenkins, "", visible)
            out["quietingDown"] = self.jenkins.quieting_down
            out["views"] = [{"_class": v.klass, "name": v.name,
                             "url": self.root if v.is_all else f"{self.root}view/{quote(v.name)}/"}
                            for v in self.views.values()]
            if depth >= 1:
                out["jobs"] = [self._job_json(self.jenkins.jobs[j["fullname"]], params, depth - 1)
                               if j.get("fullname") in self.jenkins.jobs else j for j in out["jobs"]]
            return _json(self._tree(out, params))
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
            return _json(self._tree(self._computers_json(), params))
        if rest == "":
            return _Response(200, b"<html><body>Jenkins (simulated)</body></html>")
        if rest == "computer":  # ComputerSet's page, where creating or deleting a node redirects
            return _Response(200, b"<html><body>Nodes</body></html>")
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
            queued = [api.queue_item_json(self.root, q, now, self.jenkins.quieting_down)
                      for q in self.jenkins.queue.values() if q.state != "left"]
            return _json(self._tree({"_class": "hudson.model.Queue", "discoverableItems": [],
                                     "items": queued}, params))
        m = re.fullmatch(r"queue/item/(\d+)", rest)
        if m and version_tuple(self.config.version) >= QUEUE_PAGE_SINCE:  # where a followed 303 lands
            self.jenkins.queue_item(int(m.group(1)))
            return _Response(200, b"<html><body>Queue item. For its state, read api/json?tree=... "
                                  b"(executable[number,url] once it has left the queue)</body></html>")
        m = re.fullmatch(r"queue/item/(\d+)/api/json", rest)
        if m:
            item = self.jenkins.queue_item(int(m.group(1)))
            return _json(self._tree(api.queue_item_json(self.root, item, self.jenkins.clock(),
                                                        self.jenkins.quieting_down), params))
        m = re.fullmatch(r"queue/item/(\d+)/cancelQueue", rest)
        if m:  # Queue.Item.doCancelQueue: 204 whether or not anything was left to cancel
            self._require_post(method)
            self.jenkins.advance()
            item = self.jenkins.queue.get(int(m.group(1)))
            if item is None:
                raise JenkinsError(404, "Not Found")
            if item.state != "left":
                self.jenkins.cancel(item.id)
            return _Response(204)
        if rest == "queue/cancelItem":
            self._require_post(method)
            item_id = (params.get("id") or [""])[0]
            if not item_id.isdigit():
                raise JenkinsError(400, "id is required")
            self.jenkins.cancel(int(item_id))
            return _Response(204)
        if rest in ("quietDown", "cancelQuietDown"):  # Jenkins.doQuietDown / doCancelQuietDown
            self._require_post(method)
            self._require(caller, "administer", "Overall/Manage")
            self.jenkins.quiet_down(rest == "quietDown")
            return self._redirect(caller, "")
        if rest in ("restart", "safeRestart"):
            self._require_post(method)
            self._require(caller, "administer", "Overall/Administer")
            self.jenkins.restart()
            self.expire_crumbs()
            return self._redirect(caller, "")
        if rest == "createItem":
            return self._create_item(method, "", params, caller, body, content_type)
        if rest == "createView":
            return self._create_view(method, params, caller, body, content_type)
        m = re.fullmatch(r"label/([^/]+)/api/json", rest)
        if m:  # Jenkins.getLabel makes a label of any expression
            return _json(self._tree(self._label_json(m.group(1)), params))
        if rest == "pluginManager/api/json":
            return _json(self._tree({"_class": "hudson.LocalPluginManager", "plugins": [
                {"active": True, "enabled": True, "hasUpdate": False, "longName": long, "shortName": short,
                 "version": version, "url": f"https://plugins.jenkins.io/{short}"}
                for short, long, version in (("workflow-job", "Pipeline: Job", "1520.v56d65e3b_4566"),
                                             ("cloudbees-folder", "Folders Plugin", "6.999.v42253c105443"))]},
                params))
        m = re.fullmatch(r"me/descriptorByName/jenkins\.security\.ApiTokenProperty/(generateNewToken|revoke)", rest)
        if m:
            return self._api_token(method, m.group(1), params, caller)
        raise JenkinsError(404, "Not Found")

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _depth(params: dict[str, list[str]]) -> int:
        raw = (params.get("depth") or ["0"])[0]
        try:
            return int(raw)
        except ValueError:
            raise JenkinsError(500, f"java.lang.NumberFormatException: For input string: \"{raw}\"") from None

    @staticmethod
    def _redirect(caller: _Caller, path: str, status: int = 302) -> _Response:
        """Stapler's sendRedirect: an absolute URL on the request's own scheme, Host and port."""
        return _Response(status, headers={"Location": caller.base + path})

    @staticmethod
    def _require(caller: _Caller, permission: str, jenkins_name: str) -> None:
        if not caller.may(permission):
            who = caller.user.name if caller.user else "anonymous"
            raise JenkinsError(403, f"{who} is missing the {jenkins_name} permission")

    def _job_json(self, job: JobDef, params: dict[str, list[str]], depth: int = 0,
                  tree: dict[str, Any] | None = None) -> dict[str, Any]:
        """`tree`: the job's own parsed `tree=` (not a listing's), so that only what it keeps is built."""
        full = "tree" in params or depth >= 1
        everything = "tree" in params and "allBuilds" in params["tree"][0]
        return api.job_json(self.root, self.jenkins, job, full, everything, tree)

    def _label_json(self, name: str) -> dict[str, Any]:
        nodes = [n for n in self._nodes() if name in n["labels"]]
        total = sum(n["numExecutors"] for n in nodes)
        busy = len(self.jenkins.running()) if any(n["name"] == "" for n in nodes) else 0
        return {"_class": "hudson.model.labels.LabelAtom", "actions": [], "busyExecutors": busy,
                "clouds": [], "description": None, "idleExecutors": total - busy, "loadStatistics": {},
                "name": name, "nodes": [{"_class": n["class"], "nodeName": n["name"]} for n in nodes],
                "offline": not nodes or all(n["offline"] for n in nodes), "tiedJobs": [],
                "totalExecutors": total, "propertiesList": []}

    def _api_token(self, method: str, action: str, params: dict[str, list[str]], caller: _Caller) -> _Response:
        """ApiTokenProperty.DescriptorImpl.doGenerateNewToken / doRevoke, for the caller's own tokens."""
        self._require_post(method)
        if caller.user is None:
            raise JenkinsError(403, "anonymous has no API token")
        if action == "generateNewToken":
            value, token_uuid = secrets.token_hex(17), str(uuid.uuid4())
            name = (params.get("newTokenName") or ["Token created on " + time.strftime("%Y-%m-%d")])[0]
            self.extra_tokens[value] = (caller.user.name, token_uuid, name)
            return _json({"status": "ok", "data": {"tokenName": name, "tokenUuid": token_uuid, "tokenValue": value}})
        wanted = (params.get("tokenUuid") or [""])[0]
        for value, (user, token_uuid, _) in list(self.extra_tokens.items()):
            if user == caller.user.name and token_uuid == wanted:
                del self.extra_tokens[value]
        return _Response(200)

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

    # -- items: jobs, views -----------------------------------------------------------------
    def _create_item(self, method: str, folder: str, params: dict[str, list[str]], caller: _Caller,
                     body: bytes, content_type: str) -> _Response:
        """ItemGroupMixIn.createTopLevelItem: `name` and an XML body make a job (200); `mode=copy&from=`
        copies one (302 to it). Either way a job of that name must not exist yet (a Failure: 400)."""
        self._require_post(method)
        self._require(caller, "configure", "Item/Create")
        first = {k: v[0] for k, v in params.items() if v}
        mode = first.get("mode")
        if not content_type and mode != "copy":
            raise JenkinsError(400, "No Content-Type header set")
        name = first.get("name")
        if name is None:
            raise JenkinsError(400, "Query parameter 'name' is required")
        name = name.strip()
        if not name or re.search(r"[?*/\\%!@#$^&|<>\[\]:;]", name):  # Jenkins.checkGoodName
            raise JenkinsError(400, f"‘{name}’ is an unsafe character" if name else "No name is specified")
        full_name = f"{folder}/{name}" if folder else name
        if full_name in self.jenkins.jobs or self.jenkins.folder_children(full_name):
            raise JenkinsError(400, f"A job already exists with the name ‘{name}’")
        if mode == "copy":
            src = self.jenkins.jobs.get(first.get("from", "").strip("/")) or \
                self.jenkins.jobs.get(f"{folder}/{first.get('from', '')}".strip("/"))
            if src is None:
                raise JenkinsError(400, f"No such job: {first.get('from', '')}" if first.get("from")
                                   else "Specify which job to copy")
            from dataclasses import replace
            self.jenkins.add_job(replace(src, full_name=full_name, next_build_number=1, disabled=True))
            return self._redirect(caller, api.job_path(full_name))
        if not content_type.startswith(("application/xml", "text/xml")):
            raise JenkinsError(400, "No mode given" if mode is None else f"No item type ‘{mode}’ is known")
        self.jenkins.add_job(items.job_from_xml(full_name, body))
        return _Response(200)

    def _views_jobs(self, view: items.View, caller: _Caller) -> list[dict[str, Any]]:
        visible = self._visible_to(caller)
        names = self.jenkins.folder_children("") if view.is_all else sorted(view.jobs)
        out = []
        for name in names:
            job = self.jenkins.jobs.get(name)
            if job is not None and visible(job):
                out.append({"_class": api.job_class(job), "name": name, "url": f"{self.root}{api.job_path(name)}",
                            "color": api.color(self.jenkins, job)})
            elif job is None and self.jenkins.folder_children(name):
                out.append({"_class": api.FOLDER_CLASS, "name": name, "url": f"{self.root}{api.job_path(name)}"})
        return out

    def _create_view(self, method: str, params: dict[str, list[str]], caller: _Caller, body: bytes,
                     content_type: str) -> _Response:
        """View.create: an XML body makes the view (200); a `mode` form makes one and redirects (302)."""
        self._require_post(method)
        self._require(caller, "configure", "View/Create")
        first = {k: v[0] for k, v in params.items() if v}
        mode = first.get("mode")
        if not content_type and mode != "copy":
            raise JenkinsError(400, "No Content-Type header set")
        name = (first.get("name") or "").strip()
        if not name:
            raise JenkinsError(400, "No name is specified")
        if name in self.views:
            raise JenkinsError(400, f"A view already exists with the name \"{name}\"")
        if not mode:
            if not content_type.startswith(("application/xml", "text/xml")):
                raise JenkinsError(400, "Please select a view type")
            self.views[name] = items.view_from_xml(name, body)
            return _Response(200)
        if mode == "copy":
            src = self.views.get(first.get("from", ""))
            if src is None:
                raise JenkinsError(400, f"No such view: {first.get('from', '')}")
            self.views[name] = items.View(name, list(src.jobs), src.description, src.klass)
        elif mode in ("hudson.model.ListView", "hudson.model.MyView"):
            self.views[name] = items.View(name, klass=mode)
        else:
            raise JenkinsError(400, f"No view type ‘{mode}’ is known")
        return self._redirect(caller, f"view/{quote(name)}/configure")

    def _view_route(self, method: str, name: str, rest: str, params: dict[str, list[str]], caller: _Caller,
                    body: bytes, content_type: str) -> _Response:
        view = self.views.get(name)
        if view is None:
            raise JenkinsError(404, f"No view named {name}")
        if rest.startswith("job/"):  # a job reached through a view: /view/V/job/J/…
            return self.handle(method, "/" + rest, params, caller, "", body, content_type)
        if rest in ("", "api/json"):
            return _json(self._tree(items.view_json(self.root, view, self._views_jobs(view, caller)), params))
        if rest == "config.xml":
            if method == "GET":
                return _Response(200, view.to_xml().encode(), content_type="application/xml")
            self._require_post(method)
            self._require(caller, "configure", "View/Configure")
            self.views[name] = items.view_from_xml(name, body)
            return _Response(200)
        if rest == "doDelete":  # View.doDoDelete: redirect to the owner
            self._require_post(method)
            self._require(caller, "configure", "View/Delete")
            if view.is_all:  # the primary view cannot be deleted (ViewGroupMixIn.deleteView)
                raise JenkinsError(400, "Cannot delete primary view")
            del self.views[name]
            return self._redirect(caller, "")
        if rest in ("addJobToView", "removeJobFromView"):  # ListView.doAddJobToView / doRemoveJobFromView
            self._require_post(method)
            self._require(caller, "configure", "View/Configure")
            if view.is_all:
                raise JenkinsError(404, "Not Found")
            job_name = (params.get("name") or [None])[0]
            if job_name is None:
                raise JenkinsError(400, "Query parameter 'name' is required")
            if job_name.strip("/") not in self.jenkins.jobs:
                raise JenkinsError(400, "Query parameter 'name' does not correspond to a known item")
            if rest == "addJobToView" and job_name.strip("/") not in view.jobs:
                view.jobs.append(job_name.strip("/"))
            elif rest == "removeJobFromView" and job_name.strip("/") in view.jobs:
                view.jobs.remove(job_name.strip("/"))
            return _Response(200)
        raise JenkinsError(404, "Not Found")

    # -- nodes ------------------------------------------------------------------------------
    def _nodes(self) -> list[dict[str, Any]]:
        builtin = {"name": "", "class": "hudson.model.Hudson", "labels": ("built-in", "master"),
                   "numExecutors": self.jenkins.executors, "offline": self.builtin_offline is not None}
        return [builtin, *({"name": n, "class": "hudson.slaves.DumbSlave",
                            "labels": (*(a.get("labelString") or "").split(), n),
                            "numExecutors": int(a.get("numExecutors", 1)), "offline": True}
                           for n, a in self.agents.items())]

    def _agent_json(self, name: str) -> dict[str, Any]:
        agent = self.agents[name]
        cause = agent.get("offlineCauseReason")
        return {"_class": "hudson.slaves.SlaveComputer", "actions": [], "assignedLabels": [
                    {"name": label} for label in (*agent.get("labelString", "").split(), name)],
                "description": agent.get("nodeDescription") or "", "displayName": name, "executors": [],
                "icon": "symbol-computer-x", "idle": True, "jnlpAgent": True, "launchSupported": False,
                "manualLaunchAllowed": True, "numExecutors": int(agent.get("numExecutors", 1)),
                "offline": True, "offlineCause": None if cause is None else
                {"_class": "hudson.slaves.OfflineCause$UserCause", "description": cause},
                "offlineCauseReason": cause or "", "oneOffExecutors": [],
                "temporarilyOffline": agent.get("temporarilyOffline", False)}

    def _builtin_json(self) -> dict[str, Any]:
        out = api.node_json(self.root, self.jenkins)
        out["offline"] = out["temporarilyOffline"] = self.builtin_offline is not None
        out["offlineCauseReason"] = self.builtin_offline or ""
        out["assignedLabels"] = [{"name": "built-in"}]
        out["description"] = "the Jenkins controller's built-in node"
        out["icon"] = "symbol-computer"
        out["offlineCause"] = None if self.builtin_offline is None else \
            {"_class": "hudson.slaves.OfflineCause$UserCause", "description": self.builtin_offline}
        return out

    def _computers_json(self) -> dict[str, Any]:
        out = api.computers_json(self.root, self.jenkins)
        out["computer"] = [self._builtin_json(), *(self._agent_json(n) for n in self.agents)]
        return out

    def _create_agent(self, method: str, params: dict[str, list[str]], caller: _Caller) -> _Response:
        """ComputerSet.doDoCreateItem: a permanent agent from the `json` form field, then a 302."""
        self._require_post(method)
        self._require(caller, "administer", "Computer/Create")
        name = ((params.get("name") or [""])[0]).strip()
        if not name:
            raise JenkinsError(400, "Query parameter 'name' is required")
        if name in self.agents or name in ("(built-in)", "(master)"):
            raise JenkinsError(400, f"Agent called ‘{name}’ already exists")
        try:
            form = json.loads((params.get("json") or ["{}"])[0])
        except ValueError:
            raise JenkinsError(500, "net.sf.json.JSONException: malformed json") from None
        self.agents[name] = {k: form.get(k) for k in ("nodeDescription", "numExecutors", "remoteFS", "labelString",
                                                        "mode") if form.get(k) is not None}
        return self._redirect(caller, "computer/")

    def _computer_route(self, method: str, name: str, rest: str, params: dict[str, list[str]], caller: _Caller,
                        body: bytes) -> _Response:
        builtin = name in ("(master)", "(built-in)")
        if name == "doCreateItem" and not rest:
            return self._create_agent(method, params, caller)
        if not builtin and name not in self.agents:
            if name == "api" and rest == "json":
                return _json(self._tree(self._computers_json(), params))
            raise JenkinsError(404, f"No node named {name}")
        if rest in ("", "api/json"):
            return _json(self._tree(self._builtin_json() if builtin else self._agent_json(name), params))
        if rest in ("rssAll", "rssFailed"):  # Computer.doRssAll / doRssFailed: Atom feeds of its builds
            self.jenkins.advance()
            with self.jenkins.lock:
                runs = [b for per_job in self.jenkins.builds.values() for b in per_job.values()] if builtin else []
            runs = [b for b in sorted(runs, key=lambda b: -b.started)
                    if rest == "rssAll" or b.result in ("FAILURE", "UNSTABLE", "ABORTED", "NOT_BUILT")]
            entries = "".join(
                f"<entry><title>{escape(b.job.full_name)} #{b.number} ({b.result or 'building'})</title>"
                f"<link rel=\"alternate\" type=\"text/html\" href=\"{self.root}{api.job_path(b.job.full_name)}"
                f"{b.number}/\"/><id>tag:hudson.dev.java.net,2008:{escape(b.job.full_name)}:{b.number}</id>"
                f"<published>{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(b.started))}</published></entry>"
                for b in runs)
            feed = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><feed xmlns=\"http://www.w3.org/2005/Atom\">"
                    f"<title>{escape(name)} all builds</title>{entries}</feed>")
            return _Response(200, feed.encode(), content_type="application/atom+xml;charset=UTF-8")
        if rest == "config.xml":
            if builtin:  # the built-in node has no config.xml of its own (Hudson.MasterComputer)
                raise JenkinsError(400, "Not supported for the built-in node")
            agent = self.agents[name]
            if method == "GET":
                self._require(caller, "administer", "Computer/ExtendedRead")
                return _Response(200, (f"<?xml version='1.1' encoding='UTF-8'?>\n<slave><name>{name}</name>"
                                       f"<remoteFS>{agent.get('remoteFS', '')}</remoteFS><numExecutors>"
                                       f"{agent.get('numExecutors', 1)}</numExecutors><mode>"
                                       f"{agent.get('mode', 'NORMAL')}</mode><label>{agent.get('labelString', '')}"
                                       "</label></slave>").encode(), content_type="application/xml")
            self._require_post(method)
            self._require(caller, "administer", "Computer/Configure")
            root = items.parse_xml(body)
            for key, tag in (("remoteFS", "remoteFS"), ("numExecutors", "numExecutors"), ("labelString", "label")):
                if root.find(tag) is not None:
                    agent[key] = root.find(tag).text or ""
            return _Response(200)
        self._require_post(method)
        self._require(caller, "administer", "Computer/Disconnect")
        message = (params.get("offlineMessage") or [""])[0]
        if rest == "toggleOffline":  # Computer.doToggleOffline
            if builtin:
                self.builtin_offline = None if self.builtin_offline is not None else message
            else:
                agent = self.agents[name]
                agent["temporarilyOffline"] = not agent.get("temporarilyOffline", False)
                agent["offlineCauseReason"] = message if agent["temporarilyOffline"] else None
            return self._redirect(caller, f"computer/{quote(name)}/")
        if rest == "changeOfflineCause":
            if builtin:
                self.builtin_offline = message
            else:
                self.agents[name]["offlineCauseReason"] = message
            return self._redirect(caller, f"computer/{quote(name)}/")
        if rest == "doDisconnect":
            return self._redirect(caller, f"computer/{quote(name)}/")
        if rest == "doDelete":  # Computer.doDoDelete
            if builtin:
                raise JenkinsError(400, "Cannot delete the built-in node")
            del self.agents[name]
            return self._redirect(caller, "computer/")
        raise JenkinsError(404, "Not Found")

    # -- jobs -------------------------------------------------------------------------------
    def _job_route(self, method: str, segments: list[str], params: dict[str, list[str]],
                   caller: _Caller, remote: str, body: bytes = b"", content_type: str = "") -> _Response:
        names: list[str] = []
        i = 0
        while i + 1 < len(segments) and segments[i] == "job":
            names.append(segments[i + 1])
            i += 2
        full_name, rest = "/".join(names), "/".join(segments[i:])
        job = self.jenkins.jobs.get(full_name)
        if job is None or not self._visible_to(caller)(job):  # unreadable answers as absent does
            if job is None and self.jenkins.folder_children(full_name):
                if rest in ("api/json", ""):
                    return _json(self._tree(api.folder_json(self.root, self.jenkins, full_name,
                                                            self._visible_to(caller)), params))
                if rest == "createItem":
                    return self._create_item(method, full_name, params, caller, body, content_type)
            raise JenkinsError(404, f"No job named {full_name}")
        if rest in ("build", "buildWithParameters"):
            return self._trigger(method, job, rest, params, caller, remote)
        if rest in ("api/json", ""):
            self.jenkins.advance()
            tree = api.parse_tree(params["tree"][0]) if "tree" in params else None
            return _json(api.apply_tree(self._job_json(job, params, self._depth(params), tree), tree))
        if rest == "config.xml":  # AbstractItem.doConfigDotXml: GET reads it, POST replaces it (200)
            if method == "GET":
                self._require(caller, "configure", "Item/ExtendedRead")
                return _Response(200, items.job_to_xml(job).encode(), content_type="application/xml")
            self._require_post(method)
            self._require(caller, "configure", "Item/Configure")
            self.jenkins.replace_job(job, items.job_from_xml(full_name, body, job))
            return _Response(200)
        if rest == "doDelete":  # AbstractItem.doDoDelete: a 302 to the parent
            self._require_post(method)
            self._require(caller, "configure", "Item/Delete")
            self.jenkins.delete_job(job)
            parent = full_name.rsplit("/", 1)[0] if "/" in full_name else ""
            return self._redirect(caller, api.job_path(parent) if parent else "")
        if rest in ("enable", "disable"):  # ParameterizedJob.doEnable / doDisable: HttpRedirect(".")
            self._require_post(method)
            self._require(caller, "configure", "Item/Configure")
            self.jenkins.set_disabled(job, rest == "disable")
            return self._redirect(caller, api.job_path(full_name))
        if rest == "doRename":  # AbstractItem.doConfirmRename's POST form; renames keep the builds
            self._require_post(method)
            self._require(caller, "configure", "Item/Configure")
            new = ((params.get("newName") or [""])[0]).strip()
            if not new or new in self.jenkins.jobs:
                raise JenkinsError(400, f"The name “{new}” is already in use" if new else "No name is specified")
            with self.jenkins.lock:
                new_name = f"{full_name.rsplit('/', 1)[0]}/{new}" if "/" in full_name else new
                self.jenkins.jobs[new_name] = self.jenkins.jobs.pop(full_name)
                self.jenkins.builds[new_name] = self.jenkins.builds.pop(full_name)
                job.full_name = new_name
            return self._redirect(caller, api.job_path(new_name))
        m = re.fullmatch(r"(\d+|lastBuild|lastCompletedBuild|lastSuccessfulBuild|lastFailedBuild|"
                         r"lastUnstableBuild|lastStableBuild)(?:/(.*))?", rest)
        if not m:
            raise JenkinsError(404, "Not Found")
        build = self._resolve_build(job, m.group(1))
        action = (m.group(2) or "").rstrip("/")
        if action == "":  # the build's page, where stop's redirect leads
            return _Response(200, f"<html><body>{job.full_name} #{build.number}</body></html>".encode())
        if action == "api/json":
            running = build.in_progress
            return _json(self._tree(api.build_json(self.root, build, 0 if running else None), params))
        if action == "consoleText":
            return _Response(200, self._log(build).encode(), content_type="text/plain;charset=utf-8")
        if action in ("logText/progressiveText", "logText/progressiveHtml"):
            return self._progressive(build, params, html=action.endswith("Html"))
        if action in ("stop", "term", "kill"):
            if action != "stop" and job.kind != "pipeline":  # WorkflowRun.doTerm / doKill only
                raise JenkinsError(404, "Not Found")
            self._require_post(method)
            self._require_build_permission(caller)
            self.jenkins.stop(build)
            if action != "stop":
                return _Response(200)
            return self._redirect(caller, f"{api.job_path(job.full_name)}{build.number}/")
        if action == "doDelete":  # Run.doDoDelete: a 302 to the job
            self._require_post(method)
            self._require(caller, "configure", "Run/Delete")
            if build.in_progress:
                raise JenkinsError(400, f"Unable to delete {job.full_name} #{build.number} as it is still running")
            with self.jenkins.lock:
                del self.jenkins.builds[job.full_name][build.number]
            return self._redirect(caller, api.job_path(job.full_name))
        if action == "toggleLogKeep":  # Run.doToggleLogKeep
            self._require_post(method)
            self._require(caller, "configure", "Run/Update")
            build.keep_log = not build.keep_log
            return self._redirect(caller, f"{api.job_path(job.full_name)}{build.number}/")
        raise JenkinsError(404, "Not Found")

    def _progressive(self, build: Any, params: dict[str, list[str]], html: bool) -> _Response:
        """Stapler's LargeText.doProgressText: text from byte `start`, or all of it when `start` is past
        the end ("text rolled over"); X-Text-Size is where to start next; X-More-Data while the log may
        still grow (Run.isLogUpdated: until the run is COMPLETED). A `start` that is no number: a 500."""
        text = self._log(build).encode()
        raw = (params.get("start") or [None])[0]
        start = 0
        if raw is not None:
            if not re.fullmatch(r"[-+]?\d+", raw.strip()):
                raise JenkinsError(500, f"java.lang.NumberFormatException: For input string: \"{raw}\"")
            start = int(raw)
        if len(text) < start:
            start = 0
        headers = {"X-Text-Size": str(len(text))}
        if build.in_progress:
            headers["X-More-Data"] = "true"
        chunk = text[start:]
        if html:
            import html as html_lib
            return _Response(200, html_lib.escape(chunk.decode("utf-8", "replace")).encode(), headers,
                             "text/html;charset=UTF-8")
        return _Response(200, chunk, headers, "text/plain;charset=utf-8")

    def _resolve_build(self, job: JobDef, ref: str) -> Any:
        if ref.isdigit():
            return self.jenkins.build(job, int(ref))
        self.jenkins.advance()
        builds = sorted(self.jenkins.builds[job.full_name].values(), key=lambda b: -b.number)
        wanted = {"lastCompletedBuild": None, "lastSuccessfulBuild": ("SUCCESS", "UNSTABLE"),
                  "lastStableBuild": ("SUCCESS",), "lastFailedBuild": ("FAILURE",),
                  "lastUnstableBuild": ("UNSTABLE",)}
        if ref in wanted:  # PeepholePermalink: `!run.isBuilding()` and the result it names
            builds = [b for b in builds if not b.building and (wanted[ref] is None or b.result in wanted[ref])]
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
        """ParameterizedJobMixIn.doBuild / doBuildWithParameters, in Jenkins' order of checks. `delay` is a
        @QueryParameter TimeDuration, converted by Stapler before the method runs."""
        first = {k: v[0] for k, v in params.items() if v}
        delay = _parse_delay(first.get("delay"))
        if endpoint == "build":
            if job.disabled:
                raise JenkinsError(409, f"{job.full_name} is not buildable")
            if job.parameters is not None and method != "POST":  # the parameter form, refused for API use
                raise JenkinsError(405, "This build requires parameters: POST them", {"Allow": "POST"})
        self._check_build_token(method, job, first, caller)
        new_answers = version_tuple(self.config.version) >= NOT_PARAMETERIZED_400_SINCE
        if endpoint == "buildWithParameters" and job.disabled:
            raise JenkinsError(409, f"{job.full_name} is not buildable" + ("" if new_answers else "!"))
        cause = self._cause(job, first, caller, remote)
        if endpoint == "buildWithParameters":
            if job.parameters is None:
                if new_answers:
                    raise JenkinsError(400, f"{job.full_name} is not parameterized")
                raise JenkinsError(500, "java.lang.IllegalStateException: This build is not parameterized!")
            values = []
            for p in job.parameters:  # SimpleParameterDefinition.createValue(StaplerRequest)
                given = params.get(p.name)
                if given is not None and len(given) != 1:
                    raise JenkinsError(500, f"java.lang.IllegalArgumentException: Illegal number of parameter "
                                            f"values for {p.name}: {len(given)}")
                values.append((p, p.value_from(None if given is None else given[0])))
        elif job.parameters is not None:
            values = self._form_parameters(job, first)
            cause = self._user_cause(caller)  # ParametersDefinitionProperty._doBuild: a UserIdCause, always
        else:
            values = []
        item, created = self.jenkins.schedule(job, values, cause, delay)
        status = 201
        if not created and endpoint == "buildWithParameters" and \
                version_tuple(self.config.version) >= SEE_OTHER_SINCE:
            status = 303  # /build always answers 201 (ParameterizedJobMixIn.doBuild: "TODO JENKINS-66105")
        return self._redirect(caller, item_url(item.id), status)

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
        return [(p, p.value_from(submitted.get(p.name), form=True)) for p in job.parameters or ()]

    @staticmethod
    def _cause(job: JobDef, first: dict[str, str], caller: _Caller, remote: str) -> dict[str, Any]:
        """getBuildCause: a RemoteCause (with `cause` as its note) only when the job token is sent."""
        if job.token is not None and "token" in first:
            note = first.get("cause")
            text = f"Started by remote host {remote}" + (f" with note: {note}" if note else "")
            return {"_class": "hudson.model.Cause$RemoteCause", "addr": remote, "note": note,
                    "shortDescription": text}
        return SimulatedJenkins._user_cause(caller)

    @staticmethod
    def _user_cause(caller: _Caller) -> dict[str, Any]:
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
                scheme = "https" if self.server.tls is not None else "http"
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
                caller.base = f"{scheme}://{host}/"
                sim.check_crumb(method, self.headers, caller, params)
                response = sim.handle(method, url.path, params, caller, self.client_address[0], body,
                                      self.headers.get("Content-Type") or "")
                if fault is not None and fault.process:
                    time.sleep(fault.latency)
                    if fault.status:
                        response = self._faulted(fault, url, body)
        except JenkinsError as e:
            if e.status == 500:
                response = sim.oops(e.message)
            else:
                response = _Response(e.status, f"<html><body><h1>Error {e.status}</h1><p>{e.message}</p>"
                                                f"</body></html>".encode(), dict(e.headers))
        except Exception as e:  # a simulator bug looks like Jenkins' own 500, not a hung test
            response = sim.oops(f"{type(e).__name__}: {e}")
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
            if fault.status == 500:  # an exception after the queueing: Jenkins' oops page, nothing more
                response = self.server.sim.oops("java.io.IOException: Failed to persist config.xml")
                response.headers.update(fault.headers)
                return response
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
        self.server.sim.log_request(method, path, params, user, status, fault, arrived)
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
        """A client that rejects our certificate ends the handshake, and one killed mid-request (a `kill -9`
        of a daemon) resets its connection; Jetty logs both at debug, not as a crash."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
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
