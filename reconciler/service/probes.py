"""`--listen`: /healthz (the loop is alive), /readyz (ready to work), /metrics (Prometheus), and the web
page (web.py) unless `--web-listen` gives it an address of its own, served by this same server.

Whoever reaches the port may hold connections open; each costs a thread and a descriptor. So a
whole request (its line and headers) must arrive within READ_TIMEOUT in total, however slowly it
trickles in, and be at most MAX_REQUEST bytes; at most MAX_CONNECTIONS are served at once, and a
connection beyond that takes the place of the one that has waited longest for its request (a client
that sends at once, as kubelet and Prometheus do, is then answered however many slow ones there
are). A client that misbehaves costs its connection, never a traceback in the log.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from reconciler import logs
from reconciler.core.errors import ConfigError
from reconciler.metrics import Metrics
from reconciler.service.daemon import Daemon
from reconciler.service.supervisor import Supervisor
from reconciler.service.web import Web

MAX_CONNECTIONS = 32
READ_TIMEOUT = 5.0
"""Seconds a connection may take to send its whole request; kubelet and Prometheus send theirs at once."""
MAX_REQUEST = 16 * 1024
"""Bytes of request line and headers read at most; a probe's request is a few hundred."""
TAKE_OVER_WAIT = 0.5
"""How long a new connection waits for the slot of the slow one it displaced."""


class _Refused(OSError):
    """A client that sent too much, or too slowly: its connection is closed."""


class _DeadlineReader:
    """The request's bytes, read against one deadline for the whole request and a cap on bytes (the
    socket's own timeout applies per read: one byte every 2 s would keep a connection for ever)."""

    def __init__(self, sock: socket.socket, deadline: float, cap: int):
        self._sock, self._deadline, self._left = sock, deadline, cap
        self._buffer = b""

    def readline(self, limit: int = -1) -> bytes:
        while b"\n" not in self._buffer and (limit < 0 or len(self._buffer) < limit):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise _Refused("the request did not arrive in time")
            if self._left <= 0:
                raise _Refused("the request is too large")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(min(4096, self._left))
            except TimeoutError:
                raise _Refused("the request did not arrive in time") from None
            if not chunk:
                break
            self._left -= len(chunk)
            self._buffer += chunk
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if limit >= 0:
            end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def read(self, size: int = -1) -> bytes:
        """A probe request has no body; whatever is sent after the headers is not read."""
        return b""

    def close(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _ProbeServer
    timeout = READ_TIMEOUT

    head = False
    """Answering a HEAD: the headers a GET would get, no body."""

    def setup(self) -> None:
        super().setup()
        self.rfile = _DeadlineReader(self.connection, time.monotonic() + READ_TIMEOUT, MAX_REQUEST)  # type: ignore[assignment]

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.request_read(self.connection)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """Probes are polled every few seconds; they do not belong in the log."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if self.server.probes and path in ("/healthz", "/readyz", "/metrics"):
            self._probe(path)
        elif self.server.web is not None:
            self._page()
        else:
            self._send(404, b"not found\n")

    def do_HEAD(self) -> None:
        self.head = True
        self.do_GET()

    def _refuse(self) -> None:
        """Nothing served here changes anything."""
        self._send(405, b"read-only: GET or HEAD\n", headers=(("Allow", "GET, HEAD"),))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _page(self) -> None:
        assert self.server.web is not None
        answer = self.server.web.respond(self.path, self.headers)
        self._send(answer.status, answer.body, answer.content_type, headers=answer.headers)

    def _probe(self, path: str) -> None:
        daemon, metrics = self.server.daemon, self.server.metrics
        notes: list[str] = []
        if path == "/healthz":
            problems = daemon.liveness_problems()
        elif path == "/readyz":
            problems = daemon.readiness_problems()
            notes = daemon.readiness_notes()
        else:
            self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            return
        body = "".join(f"{line}\n" for line in (problems or ["ok"]) + notes).encode()
        self._send(503 if problems else 200, body)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not self.head:
            self.wfile.write(body)


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], daemon: Daemon, metrics: Metrics, web: Web | None, probes: bool):
        self.daemon = daemon
        self.metrics = metrics
        self.web = web
        self.probes = probes
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._waiting: dict[socket.socket, float] = {}
        """Connections holding a slot that have not sent their whole request yet, with when they came."""
        self._waiting_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._displace_slowest()
            if not self._slots.acquire(timeout=TAKE_OVER_WAIT):
                self.shutdown_request(request)
                return
        with self._waiting_lock:
            self._waiting[request] = time.monotonic()
        super().process_request(request, client_address)

    def _displace_slowest(self) -> None:
        """Close the connection that has waited longest for its request: its thread ends, its slot frees."""
        with self._waiting_lock:
            if not self._waiting:
                return
            slowest = min(self._waiting, key=self._waiting.__getitem__)
            del self._waiting[slowest]
        with contextlib.suppress(OSError):
            slowest.shutdown(socket.SHUT_RDWR)

    def request_read(self, request: socket.socket) -> None:
        with self._waiting_lock:
            self._waiting.pop(request, None)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up, resets, sends too much or too slowly costs its connection, and is no
        news: socketserver would print a traceback for each."""


class Probes:
    def __init__(self, listen: str, daemon: Daemon, metrics: Metrics, *, web: Web | None = None,
                 probes: bool = True):
        flag = "--listen" if probes else "--web-listen"
        host, _, port = listen.rpartition(":")
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{flag} {listen!r}: expected HOST:PORT with a port number, e.g. 0.0.0.0:9090")
        try:
            self._server = _ProbeServer((host.strip("[]") or "0.0.0.0", int(port)), daemon, metrics, web, probes)
        except OSError as e:
            raise ConfigError(f"{flag} {listen}: cannot listen there: {e.strerror}") from None
        self.address = f"{self._server.server_address[0]}:{self._server.server_address[1]}"

    def start(self, supervisor: Supervisor) -> Probes:
        """Serve on a thread the daemon's supervisor owns, stopped with the rest."""
        supervisor.start("probes", self._server.serve_forever)
        supervisor.on_stop(self.stop)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(daemon: Daemon, listen: str | None, web_listen: str | None = None, web_prefix: str = "") -> list[Probes]:
    """Start what `--listen` and `--web-listen` ask for: the page beside the probes, or on an address of its
    own (loopback behind an authenticating proxy, say), with the same limits either way."""
    web, metrics, log = Web(daemon, web_prefix), daemon.executor.metrics, logs.get()
    started = []
    if listen:
        probes = Probes(listen, daemon, metrics, web=None if web_listen else web).start(daemon.supervisor)
        log.info("probes_listening", address=probes.address,
                 **({} if web_listen else {"page": f"http://{probes.address}{web.prefix}/"}))
        started.append(probes)
    if web_listen:
        page = Probes(web_listen, daemon, metrics, web=web, probes=False).start(daemon.supervisor)
        log.info("web_listening", address=page.address, page=f"http://{page.address}{web.prefix}/")
        started.append(page)
    return started
