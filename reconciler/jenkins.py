"""The Jenkins edge: triggering, following the queue and builds, finding a run after a crash.

Builds are triggered by `Poster`, from the executor's event loop (an asyncio Protocol feeding
httptools): many POSTs in flight on one thread. Everything else goes through `Client`, one urllib3
pool per server (keep-alive, sized, explicit timeouts; urllib3 called directly costs a third of the
CPU of requests). Both classify Jenkins' answers and back off the same way. Redirects are never
followed: behind an SSO proxy they lead to a login page, possibly on another host, and following one
would drop the POST and could hand credentials to that host.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import httptools
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError, SSLError

from .config import Server
from .errors import JenkinsRefused, JenkinsUnavailable, LoginRedirect

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_UNSAFE_IN_HEADER = re.compile(r"[\r\n\0]")
_NOTHING_TO_QUOTE = re.compile(r"[A-Za-z0-9_.~-]*")


def _form_quote(text: str) -> str:
    """`urlencode`'s quoting, without its cost for the usual value that has nothing to quote."""
    return text if _NOTHING_TO_QUOTE.fullmatch(text) else quote_plus(text)


def job_url(base: str, job: str) -> str:
    """`a b/ü` → `<base>job/a%20b/job/%C3%BC/`: every folder segment encoded on its own."""
    return base + "".join(f"job/{quote(seg, safe='')}/" for seg in job.split("/"))


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
    result: str | None
    duration_ms: int
    notes: tuple[str, ...] = ()


@dataclass
class RecentBuilds:
    by_number: dict[int, BuildState] = field(default_factory=dict)
    by_queue_id: dict[int, BuildState] = field(default_factory=dict)


BUILD_TREE = "number,building,result,duration,actions[causes[note]]"


def _build_state(b: dict[str, Any], url: str) -> BuildState:
    """The build as we record it; its URL is rebuilt on our base, like every URL Jenkins gives."""
    notes = tuple(c["note"] for a in b.get("actions") or () for c in (a or {}).get("causes") or ()
                  if c.get("note"))
    return BuildState(number=int(b["number"]), url=url, building=bool(b.get("building")),
                      result=b.get("result"), duration_ms=int(b.get("duration") or 0), notes=notes)


@dataclass(frozen=True)
class Found:
    """Where a run was found in Jenkins: a queue item, or a build."""

    queue_url: str | None = None
    build_url: str | None = None
    build_number: int | None = None


def _snippet(text: str) -> str:
    """Jenkins' error pages are HTML; keep their message only."""
    m = re.search(r"<p>(.*?)</p>", text, re.S) or re.search(r"<h1>(.*?)</h1>", text, re.S)
    plain = re.sub(r"<[^>]+>", " ", m.group(1) if m else text)
    return " ".join(plain.split())[:200]


class Client:
    def __init__(self, server: Server, *, attempts: int = 4, backoff: float = 0.5, max_backoff: float = 30.0,
                 stop: threading.Event | None = None, sleep: Callable[[float], bool] | None = None):
        self.server = server
        self.base = server.url
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self.headers: dict[str, str] = {"User-Agent": "reconciler/0.1"}
        if server.user and server.token:
            self.headers.update(urllib3.make_headers(basic_auth=f"{server.user}:{server.token}"))
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if server.verify else "CERT_NONE"}
        if isinstance(server.verify, str):
            tls["ca_certs"] = server.verify
        self.pool = urllib3.PoolManager(
            num_pools=1, maxsize=max(server.concurrency * 2, 4), retries=False,
            timeout=urllib3.Timeout(connect=server.connect_timeout, read=server.read_timeout), **tls)
        self._crumb_lock = threading.Lock()

    def close(self) -> None:
        self.pool.clear()

    # -- reads, and the POSTs that are safe to repeat (stop, cancel); builds go through `Poster`
    def _request(self, method: str, url: str, what: str, *,
                 params: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """Send with bounded retries, exponential backoff and jitter on what may pass."""
        if params:
            url += "?" + urlencode(params)
        crumb_refreshed = False
        attempt = 0
        while True:
            attempt += 1
            retry_after = ""
            try:
                response = self.pool.request(method, url, headers=self.headers, redirect=False)
                error = self._classify(response.status, response.headers.get("Location", ""), response.data, what)
                retry_after = response.headers.get("Retry-After") or ""
            except NewConnectionError as e:  # before ConnectTimeoutError, its base class: nothing was sent
                error = JenkinsUnavailable(f"{what}: connection to {self._host} failed: {_reason(e)}")
            except ConnectTimeoutError:
                error = JenkinsUnavailable(f"{what}: connection to {self._host} timed out")
            except ReadTimeoutError:
                error = JenkinsUnavailable(f"{what}: no answer from {self._host} within "
                                           f"{self.server.read_timeout:g}s", maybe_received=True)
            except SSLError as e:
                raise JenkinsRefused(f"{what}: TLS failed with {self._host}: {_reason(e)}; check ca_bundle") from None
            except ProtocolError as e:
                error = JenkinsUnavailable(f"{what}: connection to {self._host} failed: {_reason(e)}",
                                           maybe_received=True)
            if error is None:
                return response
            if _crumb_refused(error) and not crumb_refreshed:
                crumb_refreshed = True
                self._refresh_crumb()
                attempt -= 1
                continue
            if self._sleep(self._retry_delay(error, attempt, retry_after, retry_ambiguous=True)):
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

    @property
    def _host(self) -> str:
        return urlsplit(self.base).netloc

    def _classify(self, status: int, location: str, data: bytes,
                  what: str) -> JenkinsUnavailable | JenkinsRefused | None:
        if status < 300:
            return None
        if 300 <= status < 400:
            target = location.split("?", 1)[0]
            if urlsplit(location).netloc not in ("", self._host) or "login" in location.lower():
                return LoginRedirect(f"{what}: redirected to {target}: is an SSO proxy in front of Jenkins? "
                                     f"Point the server url at an address that takes API tokens directly; "
                                     f"the redirect was not followed", status)
            return JenkinsRefused(f"{what}: unexpected redirect ({status}) to {target}", status)
        body = _snippet(data.decode("utf-8", "replace"))
        user = self.server.user or "anonymous"
        if status in RETRY_STATUSES and not (status == 500 and "not parameterized" in body):
            return JenkinsUnavailable(f"{what}: Jenkins answered {status}{': ' + body if body else ''}", status,
                                      maybe_received=status in (500, 502, 504))
        messages = {
            400: "Jenkins refused the request (400): the job may be parameterized; add `parameters:` to the spec",
            401: f"Jenkins rejected the credentials of user {user!r} (401): check JENKINS_USER and the API token",
            403: f"Jenkins refused (403): {body or 'forbidden'}; check that user {user!r} has Job/Build "
                 f"permission and that the job token is right",
            404: "not found (404): check the job name and folder path",
            405: "Jenkins refused the method (405)",
            409: "the job is disabled in Jenkins (409): enable it, or suspend the trigger",
            500: "the job takes no parameters (Jenkins: This build is not parameterized!): remove `parameters`",
        }
        text = messages.get(status, f"Jenkins answered {status}: {body}")
        if status == 403 and "No valid crumb" in body:
            text = "Jenkins refused (403): No valid crumb was included in the request"
        return JenkinsRefused(f"{what}: {text}", status)

    def _refresh_crumb(self) -> None:
        """Jenkins binds a crumb to the web session it was issued in: keep that session's cookie."""
        with self._crumb_lock:
            self.headers.pop("Cookie", None)
            r = self._request("GET", self.base + "crumbIssuer/api/json", "fetching a CSRF crumb")
            crumb = r.json()
            cookies = [c.split(";", 1)[0].strip() for c in r.headers.getlist("Set-Cookie")]
            field, value = str(crumb["crumbRequestField"]), str(crumb["crumb"])
            if any(_UNSAFE_IN_HEADER.search(v) for v in (field, value, *cookies)):
                raise JenkinsRefused("fetching a CSRF crumb: Jenkins' crumb or session cookie holds a line break, "
                                     "which would smuggle headers into our requests; not sending it")
            if cookies:
                self.headers["Cookie"] = "; ".join(cookies)
            self.headers[field] = value

    # -- triggering -------------------------------------------------------------------------
    def _trigger_form(self, parameters: tuple[tuple[str, str], ...] | None, cause: str | None) -> str:
        form: list[tuple[str, str]] = list(parameters or ())
        if self.server.job_token:
            form.append(("token", self.server.job_token))
            if cause:
                form.append(("cause", cause))
        return "&".join(f"{_form_quote(k)}={_form_quote(v)}" for k, v in form)

    def _queue_url(self, job: str, status: int, location: str) -> str:
        m = re.search(r"/queue/item/(\d+)/?$", location)
        if status != 201 or not m:
            raise JenkinsRefused(f"triggering {job}: Jenkins answered {status} without a queue item "
                                 "(a QueueDecisionHandler may have vetoed the build)", status)
        # Rebuilt on our base URL: Jenkins' configured root URL is often not the address we reach it at.
        return f"{self.base}queue/item/{m.group(1)}/"

    # -- following --------------------------------------------------------------------------
    def queue_item(self, queue_url: str, job: str) -> QueueState:
        try:
            r = self._request("GET", queue_url + "api/json", "reading a queue item")
        except JenkinsRefused as e:
            if e.status == 404:
                return QueueState("gone")
            raise
        item = r.json()
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
        r = self._request("GET", build_url + "api/json", "reading a build", params={"tree": BUILD_TREE})
        return _build_state(r.json(), build_url)

    def recent_builds(self, job: str, count: int = 100) -> RecentBuilds:
        """A job's latest builds in one read: following many runs of one job costs one request a
        round instead of one per run, for us and for Jenkins."""
        url = job_url(self.base, job)
        r = self._request("GET", url + "api/json", "reading recent builds",
                          params={"tree": f"builds[queueId,{BUILD_TREE}]{{0,{count}}}"})
        recent = RecentBuilds()
        for b in r.json().get("builds") or ():
            build = _build_state(b, f"{url}{b['number']}/")
            recent.by_number[build.number] = build
            if b.get("queueId") is not None:
                recent.by_queue_id[int(b["queueId"])] = build
        return recent

    def find(self, job: str, *, run_id: str | None = None, tag_param: str | None = None,
             queue_id: int | None = None) -> Found | None:
        """Look a run up by what Jenkins kept of it: the cause note, a tag parameter, a queue id."""

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
            queue = self._request("GET", self.base + "queue/api/json", "searching the queue",
                                  params={"tree": "items[id,url,task[url],actions[causes[note],"
                                                  "parameters[name,value]]]"}).json()
            for item in queue.get("items") or ():
                if (item.get("task") or {}).get("url") == url and matches(item):
                    return Found(queue_url=self.base + item["url"])
        builds = self._request("GET", url + "api/json", "searching builds",
                               params={"tree": "builds[number,url,queueId,actions[causes[note],"
                                               "parameters[name,value]]]{0,100}"}).json()
        for b in builds.get("builds") or ():
            if matches(b):
                return Found(build_url=f"{url}{b['number']}/", build_number=int(b["number"]))
        return None

    def cancel(self, queue_url: str) -> None:
        item_id = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._request("POST", self.base + "queue/cancelItem", "cancelling a queue item", params={"id": item_id})

    def stop_build(self, build_url: str) -> None:
        try:
            self._request("POST", build_url + "stop", "stopping a build")
        except JenkinsRefused as e:
            if e.status != 302:
                raise


_HEADERS_READ = frozenset((b"location", b"retry-after", b"content-length", b"transfer-encoding"))
"""The answer's headers anything here reads; the rest (Jenkins sends a dozen) are not decoded."""


class _Answer:
    """One response, as httptools' parser calls back with it."""

    __slots__ = ("body", "complete", "headers", "keep_alive", "parser", "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = self.keep_alive = False
        self.status = 0
        """Set once the headers are in."""

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _HEADERS_READ:
            self.headers[name.decode()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers.clear()
            self.status = 0
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    def ended_by_close(self) -> bool:
        """At EOF: a body framed by neither length nor chunks ends with the connection (RFC 9112 6.3)."""
        self.complete = bool(self.status) and not {"content-length", "transfer-encoding"} & self.headers.keys()
        return self.complete


class _Connection(asyncio.Protocol):
    """A kept-alive connection to Jenkins, fed straight into the parser of the answer it waits for.
    Streams added a buffer, a future per read and a timer per read: a sixth of a POST's CPU."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: _Answer | None = None
        self.answered: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.closed = False

    def expect(self, answered: asyncio.Future[None], deadline: float) -> _Answer:
        self.answer, self.answered, self.deadline = _Answer(), answered, deadline
        return self.answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for: what follows on this connection is not to be trusted
            self.close()
            return
        try:
            self.answer.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if not self.answer.complete:
                self.settle(e)
                return
            self.close()  # a whole answer, then bytes that are none: keep the answer, not the connection
        if self.answer.complete:
            self.settle(None)

    def eof_received(self) -> None:
        self.connection_lost(None)

    def connection_lost(self, exc: Exception | None) -> None:
        """At EOF an answer framed by neither length nor chunks is whole (RFC 9112 6.3); any other is cut short."""
        self.closed = True
        if self.answer is not None and not self.answer.complete:
            self.settle(None if self.answer.ended_by_close() else
                        exc or ConnectionResetError("Jenkins closed the connection before it answered"))

    def settle(self, error: BaseException | None) -> None:
        answered = self.answered
        if answered is not None and not answered.done():
            if error is None:
                answered.set_result(None)
            else:
                answered.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _NotConnected(Exception):
    """The connection was never made: nothing was sent."""


class _TLSFailed(Exception):
    """The TLS handshake failed: a configuration to fix (CA bundle, plain http), not an outage."""


class Poster:
    """A server's build POSTs, sent from an asyncio loop: many in flight on one thread. In a burst
    that costs a third less CPU per fire than worker threads taking turns on the GIL (`bench/`).
    Answers are parsed by httptools (llhttp, Node's parser, in C) as their bytes arrive; the request,
    a few headers we make ourselves, is written out by hand. h11 did the same in pure Python at a
    fifth of the daemon's CPU per fire in a burst; aiohttp cost 14 MB of RSS. Answers overdue are
    found by one sweep of the POSTs in flight every second (or quarter read timeout), not a timer each.
    Everything else (following, finding, crumbs) stays on the blocking client: it is not hot.
    """

    def __init__(self, client: Client):
        self.client = client
        parts = urlsplit(client.base)
        self._hostname = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = _tls_context(client.server.verify) if parts.scheme == "https" else None
        self._idle: list[_Connection] = []
        """Keep-alive connections; at most `concurrency` exist, as the executor sends no more at once."""
        self._busy: set[_Connection] = set()
        self._sweeping = False
        self._targets: dict[tuple[str, str], str] = {}
        """Each job's request path, quoted once: a few hundred jobs serve ten thousand triggers."""

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def trigger(self, job: str, parameters: tuple[tuple[str, str], ...] | None, cause: str | None) -> str:
        """POST build or buildWithParameters; returns the queue item URL Jenkins answers with.

        Ambiguous failures (the request may have arrived) are not retried here: the caller
        decides, because only it knows whether it can look the run up in Jenkins first.
        """
        c = self.client
        endpoint = "build" if parameters is None else "buildWithParameters"
        target = self._targets.get((job, endpoint))
        if target is None:
            target = self._targets[job, endpoint] = urlsplit(job_url(c.base, job)).path + endpoint
        body = c._trigger_form(parameters, cause).encode()
        what, host = f"triggering {job}", c._host
        crumb_refreshed = False
        attempt = 0
        while True:
            attempt += 1
            headers = [("Host", host), *c.headers.items(), ("Content-Type", "application/x-www-form-urlencoded"),
                       ("Content-Length", str(len(body)))]
            retry_after = ""
            try:
                status, answer, data = await self._exchange(_request_head(target, headers) + body)
                location = answer.get("location", "")
                error = c._classify(status, location, data, what)
                retry_after = answer.get("retry-after", "")
                if error is None:
                    return c._queue_url(job, status, location)
            except _TLSFailed as e:
                raise JenkinsRefused(f"{what}: TLS failed with {host}: {e}; check ca_bundle") from None
            except _NotConnected as e:
                error = JenkinsUnavailable(f"{what}: connection to {host} {e}")
            except TimeoutError:
                error = JenkinsUnavailable(f"{what}: no answer from {host} within {c.server.read_timeout:g}s",
                                           maybe_received=True)
            except (OSError, httptools.HttpParserError) as e:
                error = JenkinsUnavailable(f"{what}: connection to {host} failed: {_reason(e)}", maybe_received=True)
            if _crumb_refused(error) and not crumb_refreshed:
                crumb_refreshed = True
                await asyncio.to_thread(c._refresh_crumb)
                attempt -= 1
                continue
            if await sleep_unless_stopped(c.stop, c._retry_delay(error, attempt, retry_after, retry_ambiguous=False)):
                raise error

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """One request and its whole answer: status, the headers we read (lower-cased names), body."""
        conn = self._reuse() or await self._connect()
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        answer = conn.expect(answered, loop.time() + self.client.server.read_timeout)
        self._busy.add(conn)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_every(), self._sweep)
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            await answered
        except BaseException:
            conn.close()
            raise
        finally:
            conn.answer = conn.answered = None
            self._busy.discard(conn)
        if answer.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        return answer.status, answer.headers, bytes(answer.body)

    def _sweep_every(self) -> float:
        return min(1.0, self.client.server.read_timeout / 4)

    def _sweep(self) -> None:
        """Time out answers past their deadline: one timer for every POST in flight, not one each."""
        now = asyncio.get_running_loop().time()
        for conn in list(self._busy):
            if conn.deadline <= now:
                conn.settle(TimeoutError())
        self._sweeping = bool(self._busy)
        if self._sweeping:
            asyncio.get_running_loop().call_later(self._sweep_every(), self._sweep)

    def _reuse(self) -> _Connection | None:
        """An idle connection Jenkins has not closed meanwhile (a POST on one it has would be ambiguous)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        server = self.client.server
        try:
            _, conn = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    _Connection, self._hostname, self._port, ssl=self._tls,
                    server_hostname=self._hostname if self._tls else None),
                server.connect_timeout)
        except TimeoutError:
            raise _NotConnected("timed out") from None
        except ssl.SSLError as e:  # an OSError too: first
            raise _TLSFailed(_reason(e)) from None
        except OSError as e:  # asyncio words a refusal "Connect call failed (addr)": say it plainly
            reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or _reason(e)
            raise _NotConnected(f"failed: {reason}") from None
        return conn


def _request_head(target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers. Every value is ours or checked where it came in (the crumb)."""
    return (f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


async def sleep_unless_stopped(stop: threading.Event, seconds: float) -> bool:
    """`stop.wait(seconds)` for code on an event loop: True, early, if `stop` is set."""
    end = time.monotonic() + seconds
    while not stop.is_set() and (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.1))
    return stop.is_set()


def _crumb_refused(error: JenkinsUnavailable | JenkinsRefused) -> bool:
    return error.status == 403 and "No valid crumb" in str(error)


def _reason(e: Exception) -> str:
    """The innermost useful words of a transport error (urllib3, ssl, OS), without URLs or object reprs."""
    inner = e.args[-1] if isinstance(e, ProtocolError) and e.args else e  # ("Connection aborted.", cause)
    text = str(inner.args[0] if isinstance(inner, SSLError) and inner.args else inner)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(r"(\w+Error\(.*?\))", text)
    if m:
        return m.group(1).strip()
    return re.sub(r"<[^>]+>", "", text)[:160]
