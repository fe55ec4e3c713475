"""The Jenkins edge: triggering, following the queue and builds, finding a run after a crash.

One `requests.Session` per server carries every request: pooled keep-alive connections (as many as
the server's `concurrency`), the proxy from the config or `HTTPS_PROXY`/`NO_PROXY`, the CA bundle, a
client certificate for mTLS ingresses, connect and read timeouts. Every request (thousands of trigger
POSTs and queue lookups in a burst) is sent through that session's urllib3 pools directly
(`Client._send`), with all of the above, without requests' preparation of every request. Redirects
are never followed: behind an SSO proxy they lead to a login page, possibly on another host, and
following one would drop the POST and could hand credentials to that host.

Jenkins builds every absolute URL it returns from its configured root URL, which is often not the
address we reach it at (a Service name versus the public ingress). So URLs from Jenkins are read for
their path only (the queue item id, the job's segments, the build number) and rebuilt on our base.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from reconciler.config import Server
from reconciler.core.errors import JenkinsRefused, JenkinsServerError, JenkinsUnavailable, LoginRedirect, Withheld
from reconciler.core.redact import clip, page_message
from reconciler.core.spec import job_url

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ACCEPTED = frozenset({200, 201, 303})
"""A trigger POST answered with a queue item: 201 queued it; 303 (Jenkins 2.308 to mid-2024) and 200
(since jenkinsci/jenkins#9446) mean an identical request was already waiting and this one joined it."""
MAX_HOLD = 300.0
"""The longest Retry-After honoured for the whole server: a longer one is a misconfiguration to outlast."""
_QUEUE_ITEM = re.compile(r"/queue/item/(\d+)/?$")
_LOGGING_ID = re.compile(r"Logging ID=([0-9A-Za-z-]{1,64})")
DEFINITION_MAX_AGE = 60.0
"""How long a job's parameter definitions, read to explain a 500, are taken as still true."""


def job_of(url: str) -> str | None:
    """The job a Jenkins URL names, by its decoded `job/NAME` segments, whatever the host or the root
    URL's path prefix: `https://ci.example.com/jenkins/job/a%20b/job/c/` → `a b/c`."""
    segments = [unquote(s) for s in urlsplit(url).path.split("/") if s]
    if "job" not in segments:
        return None
    segments = segments[segments.index("job"):]
    names = [segments[i + 1] for i in range(0, len(segments) - 1, 2) if segments[i] == "job"]
    return "/".join(names) or None


@dataclass(frozen=True)
class Accepted:
    """Jenkins' answer to a trigger POST: the queue item, whether it already existed, and whether the
    lease lapsed while its bytes were being written (`late`: a stall right after the last check)."""

    queue_url: str
    joined: bool = False
    late: bool = False


@dataclass(frozen=True)
class QueueState:
    kind: str  # waiting | left | cancelled | gone
    build_url: str | None = None
    build_number: int | None = None
    why: str | None = None


@dataclass(frozen=True)
class BuildState:
    number: int
    url: str
    building: bool
    """Jenkins' `building`: true until the result is final. `result` may be set before (`Run.setResult`
    is allowed while building and only gets worse), so a build is over only when this is false."""
    result: str | None
    duration_ms: int
    notes: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()
    """What Jenkins says started it ("Started by remote host … with note: …", "Started by user …")."""
    parameters: dict[str, str] | None = None
    """What it ran with (password values masked); None when the build has no parameters at all."""
    log_open: bool = False
    """The console may still grow: building, or in post-production (`inProgress`, exported since 2.369)."""


@dataclass
class RecentBuilds:
    by_number: dict[int, BuildState] = field(default_factory=dict)
    by_queue_id: dict[int, BuildState] = field(default_factory=dict)


FIRST_READ = 10
"""Builds a lookup reads with the job's next number: the common case (a few builds since) in one read."""
PAGE = 500
"""Builds per further read of a lookup."""
BUILD_TREE = ("number,building,inProgress,result,duration,actions[causes[note,shortDescription],"
              "parameters[_class,name,value]]")
MASKED = "****"


def _build_state(b: dict[str, Any], url: str) -> BuildState:
    actions = [a or {} for a in b.get("actions") or ()]
    causes = [c for a in actions for c in a.get("causes") or ()]
    parameters = None
    for action in actions:
        if "parameters" in action:
            parameters = {str(p.get("name")): MASKED if str(p.get("_class", "")).endswith("PasswordParameterValue")
                          else _as_sent(p.get("value")) for p in action.get("parameters") or ()}
    # A build that says neither is taken as running: its result alone never ends it.
    building = bool(b.get("building", b.get("inProgress", True)))
    return BuildState(number=int(b["number"]), url=url, building=building,
                      result=b.get("result"), duration_ms=int(b.get("duration") or 0),
                      notes=tuple(c["note"] for c in causes if c.get("note")),
                      causes=tuple(str(c.get("shortDescription")) for c in causes if c.get("shortDescription")),
                      parameters=parameters, log_open=building or bool(b.get("inProgress")))


def _as_sent(value: Any) -> str:
    """A parameter value as we send it: Jenkins answers booleans as JSON booleans."""
    return ("true" if value else "false") if isinstance(value, bool) else "" if value is None else str(value)


@dataclass(frozen=True)
class ParameterDefinition:
    type: str
    """Jenkins' name for it: StringParameterDefinition, ChoiceParameterDefinition, BooleanParameterDefinition…"""
    choices: tuple[str, ...] = ()
    has_default: bool = True


@dataclass(frozen=True)
class JobDefinition:
    buildable: bool
    parameters: dict[str, ParameterDefinition] | None
    """None: the job takes no parameters (no ParametersDefinitionProperty)."""


@dataclass(frozen=True)
class Found:
    """Where a run was found in Jenkins: a queue item, or a build."""

    queue_url: str | None = None
    build_url: str | None = None
    build_number: int | None = None


def version_of(header: str) -> tuple[int, ...] | None:
    """`X-Jenkins: 2.528.1` → (2, 528, 1); `2.579-SNAPSHOT` → (2, 579); None when it names no version."""
    m = re.match(r"\d+(?:\.\d+)*", header.strip())
    return tuple(int(part) for part in m.group(0).split(".")) if m else None


def _snippet(text: str) -> str:
    """Jenkins' error pages are HTML; keep their own message line only, redacted, then cut (whatever
    else the page holds, an echo of our request's headers or form included, is no one's business)."""
    return page_message(text)


_SENDING = threading.local()
"""The guard of the request this thread is sending, if it has one (`may_send` of a trigger POST), and
whether a write of it went out after the guard would have said no (`late`)."""


def sent_late() -> bool:
    """Whether a write of this thread's last trigger POST went out after its guard would have said no:
    asked once the POST is answered, or failed (a late request may still have reached Jenkins)."""
    return bool(getattr(_SENDING, "late", False))


class _LastMoment:
    """A connection that asks the request's guard right before each write of its bytes, once the
    connection is made: a paused leader that resumes with its lease lapsed writes nothing. What is
    left between the question and the write is a comparison and a method call (see README, "What is
    left"); a write refused between the headers and the body leaves Jenkins an incomplete request,
    which it drops when the connection closes. The question is asked again once a write is done: a
    stall in that gap is never silent (`late`)."""

    sock: Any

    def send(self, data: Any) -> None:
        may_send = getattr(_SENDING, "may_send", None)
        if may_send is None:
            super().send(data)  # type: ignore[misc]
            return
        if self.sock is None:
            self.connect()  # type: ignore[attr-defined]
        if isinstance(data, bytes):
            if may_send():
                self.sock.sendall(data)
                _SENDING.late = getattr(_SENDING, "late", False) or not may_send()
                return
        elif may_send():
            super().send(data)  # type: ignore[misc]
            _SENDING.late = getattr(_SENDING, "late", False) or not may_send()
            return
        self.close()  # type: ignore[attr-defined]
        raise Withheld("not sent: this replica's lease may have lapsed")


class _HTTPConnection(_LastMoment, HTTPConnection):
    pass


class _HTTPSConnection(_LastMoment, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter, its pools (proxied ones included) making `_LastMoment` connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


def session_for(server: Server, env: Mapping[str, str] | None = None) -> requests.Session:
    """A session as the operator configured the server: pool size, credentials, TLS, client
    certificate, proxy. What requests would read from the environment on every request (proxies with
    NO_PROXY, REQUESTS_CA_BUNDLE) is read once, here: every request of a server goes to one host, and
    walking the whole environment twice a request is most of what requests adds per POST. Explicit settings
    win over the environment, as they would not with `trust_env` on (psf/requests#3829)."""
    env = os.environ if env is None else env
    session = requests.Session()
    session.trust_env = False
    adapter = _Adapter(pool_connections=1, pool_maxsize=max(server.concurrency, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "reconciler/0.1"
    if server.user and server.token:
        session.auth = (server.user, server.token)
    if server.client_cert:
        session.cert = (server.client_cert, server.client_key) if server.client_key else server.client_cert
    if server.proxy:
        session.proxies = {"http": server.proxy, "https": server.proxy}
    else:
        session.proxies = requests.utils.get_environ_proxies(server.url)
    session.verify = server.verify if server.verify is not True else \
        env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
    if server.verify is False:  # said once at start (`server_insecure`), not on every request
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return session


class Client:
    """One server's requests, safe to call from many threads at once."""

    def __init__(self, server: Server, *, attempts: int = 4, backoff: float = 0.5, max_backoff: float = 30.0,
                 stop: threading.Event | None = None, sleep: Callable[[float], bool] | None = None):
        self.server = server
        self.base = server.url
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self.session = session_for(server)
        self._adapter = self.session.get_adapter(self.base)
        self._urllib3_timeout = urllib3.Timeout(connect=server.connect_timeout, read=server.read_timeout)
        self._pools: dict[str, Any] = {}
        """Each origin's urllib3 pool as requests' adapter chose it (proxy, TLS settings, CA bundle checked
        on disk): asked for once, not on every request; asked again if the pool manager closed it."""
        self._base_headers: tuple[dict[str, str], dict[str, str]] | None = None
        """Requests' headers without a form and with one, but the crumb and the cookie (`_headers`)."""
        self._crumb: dict[str, str] = {}
        """The CSRF crumb header, once Jenkins asked for one; replaced whole, never changed in place."""
        self._crumb_lock = threading.Lock()
        self.version: tuple[int, ...] | None = None
        """The Jenkins version the last answer named (`X-Jenkins`): some refusals depend on it."""
        self._definitions: dict[str, tuple[float, JobDefinition]] = {}
        self._definitions_lock = threading.Lock()
        self.hold_until = 0.0
        """Until when (time.monotonic()) Jenkins asked us to wait, by a 429 or 503 (and its Retry-After):
        the executor starts no POST to this server before then."""

    def close(self) -> None:
        self.session.close()

    def _headers(self, form: bool) -> dict[str, str]:
        """Every request's headers as requests would send them, but the crumb and the cookie: made at the
        first request, so that credentials Latin-1 cannot encode fail a request, as with requests, not the start."""
        if self._base_headers is None:
            plain = dict(self.session.headers)
            if self.session.auth:
                plain.update(urllib3.util.make_headers(basic_auth=":".join(self.session.auth)))
            self._base_headers = (plain, {**plain, "Content-Type": "application/x-www-form-urlencoded"})
        return self._base_headers[form]

    def _send(self, method: str, url: str, body: bytes | None = None) -> requests.Response:
        """One request through the session's own urllib3 pools, as requests' adapter sends it (the same
        pools and `_LastMoment` connections, TLS settings, client certificate, proxy, retries, timeouts,
        session cookie, redirects not followed), without what requests does around it on every request:
        preparing it anew (its argument checks against `typing` Protocols alone cost more than the rest
        of a fire) and building a full answer. Failures are raised as requests' adapter raises them, and
        the answer is a `requests.Response`, so `_attempts` classifies every request alike. A body is a
        form; a GET sends none."""
        session, adapter = self.session, self._adapter
        target = requests.PreparedRequest()
        target.url = url
        headers = {**self._headers(bool(body)), **self._crumb}
        if session.cookies:  # the session Jenkins bound the crumb to
            cookies = requests.cookies.get_cookie_header(session.cookies, requests.Request(method, url))
            if cookies:
                headers["Cookie"] = cookies
        origin = url[:url.find("/", url.find("//") + 2)]
        try:
            for fresh in (False, True):
                pool = None if fresh else self._pools.get(origin)
                if pool is None or pool.pool is None:  # the first request there, or its pool was closed
                    pool = adapter.get_connection_with_tls_context(target, session.verify, proxies=session.proxies,
                                                                   cert=session.cert)
                    adapter.cert_verify(pool, url, session.verify, session.cert)
                    self._pools[origin] = pool
                try:
                    raw = pool.urlopen(method, adapter.request_url(target, session.proxies), body=body,
                                       headers=headers, redirect=False, assert_same_host=False,
                                       retries=adapter.max_retries, timeout=self._urllib3_timeout,
                                       preload_content=True, decode_content=True)
                    break
                except urllib3.exceptions.ClosedPoolError:  # closed since it was chosen: nothing was sent
                    if fresh:
                        raise
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _as_requests_error(e) from e
        if "Set-Cookie" in raw.headers:
            requests.cookies.extract_cookies_to_jar(session.cookies, requests.Request(method, url), raw)
        response = requests.Response()
        response.status_code, response.url, response.raw, response.reason = raw.status, url, raw, raw.reason
        response.headers = requests.structures.CaseInsensitiveDict(raw.headers)
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response._content = raw.data  # read whole (preload_content): the connection is back in its pool
        return response

    @property
    def _host(self) -> str:
        return urlsplit(self.base).netloc

    # -- one request ------------------------------------------------------------------------
    def _request(self, method: str, url: str, what: str, *, params: dict[str, str] | None = None,
                 data: list[tuple[str, str]] | None = None, retry_ambiguous: bool = True,
                 accept: Callable[[requests.Response], bool] | None = None,
                 may_send: Callable[[], bool] | None = None) -> requests.Response:
        """Send with bounded retries, exponential backoff and jitter on what may pass. `accept` says
        which answers are success beyond 2xx. Without `retry_ambiguous`, an attempt that may have
        reached Jenkins is not repeated here: the caller decides, as only it can look the run up."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        body = None if data is None and method == "GET" else urlencode(data or []).encode("ascii")
        return self._attempts(lambda: self._send(method, url, body), what, retry_ambiguous=retry_ambiguous,
                              accept=accept, may_send=may_send)

    def _attempts(self, send: Callable[[], requests.Response], what: str, *, retry_ambiguous: bool,
                  accept: Callable[[requests.Response], bool] | None,
                  may_send: Callable[[], bool] | None) -> requests.Response:
        """The retry loop around `send` (one request through `_send`), for the trigger POST and every other
        request alike: one classification of answers and failures serves them all."""
        crumb_refreshed = False
        attempt = 0
        while True:
            attempt += 1
            retry_after = ""
            if may_send is not None and not may_send():
                raise Withheld(f"{what}: not sent, this replica's lease may have lapsed")
            _SENDING.may_send = may_send  # asked again as the bytes are written (`_LastMoment`)
            try:
                response = send()
                self.version = version_of(response.headers.get("X-Jenkins", "")) or self.version
                if accept is not None and accept(response):
                    return response
                error = self._classify(response, what)
                retry_after = response.headers.get("Retry-After") or ""
            except requests.RequestException as e:
                error = self._transport_error(e, what)
            except Withheld as e:
                raise Withheld(f"{what}: {e}") from None
            finally:
                _SENDING.may_send = None
            if error is None:
                return response
            if _crumb_refused(error) and not crumb_refreshed:
                crumb_refreshed = True
                self._refresh_crumb()
                attempt -= 1
                continue
            if error.status in (429, 503):  # the whole server waits, not only this request
                hold = min(float(retry_after), MAX_HOLD) if retry_after.isdigit() else \
                    min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                self.hold_until = max(self.hold_until, time.monotonic() + hold)
            if self._sleep(self._retry_delay(error, attempt, retry_after, retry_ambiguous)):
                raise error

    def _retry_delay(self, error: JenkinsUnavailable | JenkinsRefused, attempt: int, retry_after: str,
                     retry_ambiguous: bool) -> float:
        """How long to wait before attempt `attempt + 1`; raises `error` when there is to be none."""
        if not error.retryable or attempt >= self.attempts or \
                (isinstance(error, JenkinsUnavailable) and error.maybe_received and not retry_ambiguous):
            raise error
        if retry_after.isdigit():
            return min(self.max_backoff, float(retry_after))
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _transport_error(self, e: requests.RequestException, what: str) -> JenkinsUnavailable | JenkinsRefused:
        host = self._host
        if isinstance(e, requests.exceptions.SSLError):
            reason = _reason(e)
            if "wrong version number" in reason.lower():
                return JenkinsRefused(f"{what}: {host} does not speak TLS on that port (it answered like plain "
                                      "HTTP): use an http:// url, or the port Jenkins serves HTTPS on")
            if "certificate required" in reason and not self.server.client_cert:
                return JenkinsRefused(f"{what}: {host} asks for a client certificate (mTLS): set client_cert "
                                      "(and client_key) for this server")
            return JenkinsRefused(f"{what}: TLS failed with {host}: {reason}; check ca_bundle, or client_cert "
                                  "if the ingress asks for one")
        if isinstance(e, requests.exceptions.ProxyError):
            return JenkinsUnavailable(f"{what}: the proxy in front of {host} failed: {_reason(e)}")
        if isinstance(e, requests.exceptions.ConnectTimeout):  # nothing was sent
            return JenkinsUnavailable(f"{what}: connection to {host} timed out")
        if isinstance(e, requests.exceptions.ReadTimeout):
            return JenkinsUnavailable(f"{what}: no answer from {host} within {self.server.read_timeout:g}s",
                                      maybe_received=True)
        if isinstance(e, requests.exceptions.InvalidHeader):
            return JenkinsRefused(f"{what}: Jenkins' crumb or session cookie is not a valid header value "
                                  "(a line break would smuggle headers into our requests); not sending it")
        reason = _reason(e)
        refused = "NewConnectionError" in repr(e) or "Name or service not known" in reason
        return JenkinsUnavailable(f"{what}: connection to {host} failed: {reason}", maybe_received=not refused)

    def _classify(self, response: requests.Response, what: str) -> JenkinsUnavailable | JenkinsRefused | None:
        status = response.status_code
        if status < 300:
            return None
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            target = location.split("?", 1)[0]
            if urlsplit(location).netloc not in ("", self._host) or "login" in location.lower():
                target = clip(target, 200)
                return LoginRedirect(f"{what}: redirected to {target}: is an SSO proxy in front of Jenkins? "
                                     f"Point the server url at an address that takes API tokens directly; "
                                     f"the redirect was not followed", status)
            return JenkinsRefused(f"{what}: unexpected redirect ({status}) to {clip(target, 200)}", status)
        page = response.content[:1 << 20].decode("utf-8", "replace")
        body = _snippet(page)
        user = self.server.user or "anonymous"
        logging_id = _LOGGING_ID.search(page)
        if status == 500 and (logging_id or "X-Jenkins" in response.headers):
            # Jenkins' own 500 (oops.jelly): only the Logging ID, never the page, which may show a stack trace.
            shown = logging_id.group(1) if logging_id else None
            return JenkinsServerError(f"{what}: Jenkins answered 500{f' (Logging ID={shown})' if shown else ''}",
                                      shown)
        if status in RETRY_STATUSES:
            return JenkinsUnavailable(f"{what}: Jenkins answered {status}{': ' + body if body else ''}", status,
                                      maybe_received=status in (500, 502, 504))
        messages = {
            400: f"Jenkins refused the request (400): {body}",
            401: f"Jenkins rejected the credentials of user {user!r} (401): check JENKINS_USER and the API token",
            403: f"Jenkins refused (403): {body or 'forbidden'}; check that user {user!r} has Job/Build "
                 f"permission and that the job token is right",
            404: f"not found (404): check `job` in the spec (the full path, folders joined by /), and that user "
                 f"{user!r} may see the job: Jenkins answers 404 for a job it hides",
            405: "Jenkins does not take this request (405 Method Not Allowed): check that `job` in the spec names "
                 "a job that can be built, not a folder or a view",
            409: "the job is disabled in Jenkins (409): it is not buildable; enable it in Jenkins, or remove the spec",
        }
        text = messages.get(status, f"Jenkins answered {status}: {body}")
        if status == 400 and "is not parameterized" in page:  # since 2.524 (jenkinsci/jenkins#10954)
            text = ("Jenkins refused (400): the job is not parameterized, so buildWithParameters is refused; "
                    "remove `parameters:` from the spec")
        elif status == 400 and ("Nothing is submitted" in page or "expects a form submission" in page):
            text = ("Jenkins refused (400): the job is parameterized, so a POST to build without parameters is "
                    "refused; add `parameters:` to the spec (even empty: `parameters: {}`)")
        elif status == 403 and "No valid crumb" in body:
            text = "Jenkins refused (403): No valid crumb was included in the request"
        return JenkinsRefused(f"{what}: {text}", status)

    def _refresh_crumb(self) -> None:
        """Jenkins binds a crumb to the web session it was issued in; the session keeps its cookie."""
        with self._crumb_lock:
            self.session.cookies.clear()
            self._crumb = {}
            crumb = self._request("GET", self.base + "crumbIssuer/api/json", "fetching a CSRF crumb").json()
            field_name, value = str(crumb["crumbRequestField"]), str(crumb["crumb"])
            if any(c in field_name + value for c in "\r\n\0"):
                raise JenkinsRefused("fetching a CSRF crumb: Jenkins' crumb holds a line break, which would "
                                     "smuggle headers into our requests; not sending it")
            self._crumb = {field_name: value}

    # -- triggering -------------------------------------------------------------------------
    def trigger(self, job: str, parameters: tuple[tuple[str, str], ...] | None, cause: str | None,
                may_send: Callable[[], bool] | None = None) -> Accepted:
        """POST build or buildWithParameters; returns the queue item Jenkins answers with.

        Ambiguous failures (the request may have arrived) are not retried here: the caller decides,
        because only it knows whether it can look the run up in Jenkins first. `may_send` is asked
        right before every attempt (a retry comes after a backoff, by which time a lease may have
        lapsed); when it says no, Withheld is raised and nothing is sent.
        """
        form: list[tuple[str, str]] = list(parameters or ())
        if self.server.job_token:
            form.append(("token", self.server.job_token))
            if cause:
                form.append(("cause", cause))
        endpoint = "build" if parameters is None else "buildWithParameters"
        url, body = job_url(self.base, job) + endpoint, urlencode(form).encode("ascii")
        _SENDING.late = False
        response = self._attempts(lambda: self._send("POST", url, body), f"triggering {job}", retry_ambiguous=False,
                                  accept=_queued, may_send=may_send)
        item = _QUEUE_ITEM.search(urlsplit(response.headers.get("Location", "")).path)
        if response.status_code not in ACCEPTED or item is None:
            raise JenkinsRefused(f"triggering {job}: Jenkins answered {response.status_code} without a queue item "
                                 "(a QueueDecisionHandler may have vetoed the build)", response.status_code)
        return Accepted(f"{self.base}queue/item/{item.group(1)}/", joined=response.status_code != 201,
                        late=sent_late())

    # -- following --------------------------------------------------------------------------
    def _json(self, url: str, what: str, tree: str | None = None) -> Any:
        return self._request("GET", url + "api/json", what, params={"tree": tree} if tree else None).json()

    def queue_length(self) -> int:
        """How many items wait in Jenkins' queue (all jobs'), for a server's `max_queued`."""
        return len(self._json(self.base + "queue/", "reading the queue", tree="items[id]").get("items") or ())

    def queue_item(self, queue_url: str, job: str) -> QueueState:
        try:
            item = self._json(queue_url, "reading a queue item")
        except JenkinsRefused as e:
            if e.status == 404:
                return QueueState("gone")
            raise
        if not item.get("_class", "").endswith("$LeftItem"):
            return QueueState("waiting", why=item.get("why"))
        if item.get("cancelled"):
            return QueueState("cancelled")
        executable = item.get("executable") or {}
        if not executable.get("url"):
            return QueueState("waiting", why="left the queue, build not started yet")
        number = int(executable["number"])
        return QueueState("left", build_url=f"{job_url(self.base, job)}{number}/", build_number=number)

    def build(self, build_url: str) -> BuildState:
        return _build_state(self._json(build_url, "reading a build", BUILD_TREE), build_url)

    def recent_builds(self, job: str, count: int = 100) -> RecentBuilds:
        """A job's latest `count` builds in one read: following many runs of one job costs one request a
        round instead of one per run, for us and for Jenkins. `builds` holds the newest 100 at most
        (Job.getNewBuilds); more come from `allBuilds`, which the range keeps Jenkins from loading whole."""
        url = job_url(self.base, job)
        recent = RecentBuilds()
        field_name = "builds" if count <= 100 else "allBuilds"
        for b in self._json(url, "reading recent builds", f"{field_name}[queueId,{BUILD_TREE}]{{0,{count}}}").get(
                field_name) or ():
            build = _build_state(b, f"{url}{b['number']}/")
            recent.by_number[build.number] = build
            if b.get("queueId") is not None:
                recent.by_queue_id[int(b["queueId"])] = build
        return recent

    def next_build_number(self, job: str) -> int:
        """The number Jenkins gives the job's next build: read before a POST, it bounds every later lookup
        of that POST's build from below (numbers only grow), however many builds follow."""
        return int(self._json(job_url(self.base, job), f"reading job {job}", "nextBuildNumber")["nextBuildNumber"])

    def find(self, job: str, *, run_id: str | None = None, tag_param: str | None = None,
             queue_id: int | None = None, since: int | None = None) -> Found | None:
        """Look a run up by what Jenkins kept of it (the cause note, a tag parameter, its queue id) in the
        queue, then in the job's builds numbered `since` or higher, every one of them: the newest few in
        the read that also says the next number, the rest, if more have run since, in ranges of
        `allBuilds`. Without `since` (a run an earlier version posted, or a fresh pod's) every build the
        job keeps is read. A 404 means "no such job" only from the job's own URL: raised as
        JenkinsRefused(404). The queue's 404 (an ingress that routes only /job/…) is no answer at all:
        the builds are read all the same, and an item still waiting is joined, not doubled, by the
        POST that follows (Jenkins coalesces identical requests)."""

        def matches(obj: dict[str, Any]) -> bool:
            if queue_id is not None and obj.get("queueId", obj.get("id")) == queue_id:
                return True
            if run_id is None:
                return False
            for action in obj.get("actions") or ():
                for cause in action.get("causes") or ():
                    if run_id in (cause.get("note") or ""):
                        return True
                for p in action.get("parameters") or ():
                    if tag_param and p.get("name") == tag_param and p.get("value") == run_id:
                        return True
            return False

        url = job_url(self.base, job)
        if run_id is not None:
            try:
                queue = self._json(self.base + "queue/", "searching the queue",
                                   "items[id,url,task[url],actions[causes[note],parameters[name,value]]]")
            except JenkinsRefused as e:
                if e.status != 404:
                    raise
                queue = {}
            for item in queue.get("items") or ():
                if job_of((item.get("task") or {}).get("url") or "") == job and matches(item):
                    return Found(queue_url=f"{self.base}queue/item/{int(item['id'])}/")
        fields = "number,queueId,actions[causes[note],parameters[name,value]]"
        first = self._json(url, "searching builds", f"nextBuildNumber,builds[{fields}]{{0,{FIRST_READ}}}")
        builds = first.get("builds") or []
        # Builds are listed newest first, one number each at most: those numbered `since` or more are
        # among the first `next - since`.
        end = None if since is None else max(0, int(first.get("nextBuildNumber") or 0) - since)
        offset, asked = 0, FIRST_READ
        while True:
            for b in builds:
                if since is not None and int(b["number"]) < since:
                    return None
                if matches(b):
                    return Found(build_url=f"{url}{b['number']}/", build_number=int(b["number"]))
            offset += len(builds)
            if len(builds) < asked:
                return None  # the end of the job's list
            # On until a build older than `since` shows (one past `end`, so a run not posted costs no extra
            # read): builds that started since the first read push the older ones down, past `end`.
            upto = offset + PAGE if end is None else min(offset + PAGE, max(end + 1, offset + FIRST_READ))
            asked, field_name = upto - offset, "builds" if upto <= 100 else "allBuilds"
            builds = self._json(url, "searching builds", f"{field_name}[{fields}]{{{offset},{upto}}}").get(
                field_name) or []

    def job_definition(self, job: str) -> JobDefinition:
        """What the job accepts, in one read (no POST): buildable or not, and its parameter definitions."""
        tree = ("buildable,disabled,property[parameterDefinitions[name,type,choices,"
                "defaultParameterValue[value]]]")
        info = self._json(job_url(self.base, job), f"reading job {job}", tree)
        definitions: dict[str, ParameterDefinition] | None = None
        for prop in info.get("property") or ():
            if "parameterDefinitions" in (prop or {}):
                definitions = {}
                for d in prop.get("parameterDefinitions") or ():
                    default = d.get("defaultParameterValue")
                    definitions[str(d.get("name"))] = ParameterDefinition(
                        type=str(d.get("type") or ""), choices=tuple(str(c) for c in d.get("choices") or ()),
                        has_default=default is not None)
        return JobDefinition(buildable=bool(info.get("buildable", True)) and not info.get("disabled"),
                             parameters=definitions)

    def definition(self, job: str) -> JobDefinition:
        """`job_definition`, read at most once a minute per job: it explains the 500s of a sick Jenkins
        without adding a read to each of them."""
        now = time.monotonic()
        with self._definitions_lock:
            cached = self._definitions.get(job)
        if cached is not None and now - cached[0] < DEFINITION_MAX_AGE:
            return cached[1]
        definition = self.job_definition(job)
        with self._definitions_lock:
            self._definitions[job] = (now, definition)
        return definition

    def console(self, build_url: str, start: int = 0) -> tuple[str, int, bool]:
        """The console from byte `start`: the text, where to start next, and whether the build goes on."""
        r = self._request("GET", build_url + "logText/progressiveText", "reading a console",
                          params={"start": str(start)})
        more = r.headers.get("X-More-Data", "").lower() == "true"
        return r.content.decode("utf-8", "replace"), int(r.headers.get("X-Text-Size") or start), more

    def whoami(self) -> str:
        """The user Jenkins takes our credentials for (`anonymous` without them)."""
        return str(self._json(self.base + "me/", "reading who we are", "id").get("id") or "anonymous")

    def cancel(self, queue_url: str) -> None:
        item_id = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._request("POST", self.base + "queue/cancelItem", "cancelling a queue item", params={"id": item_id})

    def stop_build(self, build_url: str) -> None:
        """Jenkins answers a stop with a redirect back to the build's page: that is success."""
        self._request("POST", build_url + "stop", "stopping a build", accept=lambda r: r.status_code == 302)


def _as_requests_error(e: Exception) -> requests.RequestException:
    """A urllib3 failure of `_send` as requests' adapter raises it (`HTTPAdapter.send`), for the one
    classification of transport errors (`Client._transport_error`)."""
    reason = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
    if isinstance(reason, urllib3.exceptions.ProxyError):
        return requests.exceptions.ProxyError(e)
    if isinstance(reason, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(e)
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and \
            not isinstance(reason, urllib3.exceptions.NewConnectionError):
        return requests.exceptions.ConnectTimeout(e)
    if isinstance(e, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(e)
    if isinstance(e, urllib3.exceptions.InvalidHeader):
        return requests.exceptions.InvalidHeader(e)
    return requests.exceptions.ConnectionError(e)


def _queued(response: requests.Response) -> bool:
    return response.status_code in ACCEPTED and \
        _QUEUE_ITEM.search(urlsplit(response.headers.get("Location", "")).path) is not None


def _crumb_refused(error: JenkinsUnavailable | JenkinsRefused) -> bool:
    return error.status == 403 and "No valid crumb" in str(error)


def _reason(e: BaseException) -> str:
    """The innermost useful words of a transport error (requests, urllib3, ssl, OS), without URLs or reprs."""
    text = str(e)
    if "IncompleteRead" in text or "RemoteDisconnected" in text or "Response ended prematurely" in text:
        return "Jenkins closed the connection before it answered"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or \
        re.search(r"\[SSL: [A-Z0-9_]+\] ([^(')\"]+?)\s*\(_ssl", text) or \
        re.search(r"(\w+(?:Error|Disconnected)\(.*?\))", text)
    if m:
        return clip(m.group(1).strip(), 160)
    return clip(re.sub(r"<[^>]+>", "", text), 160)
