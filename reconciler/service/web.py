"""The page: every trigger at a glance (`/`), one trigger's history (`/triggers/NAME`), the same as JSON
(`/api/v1/triggers`, `/api/v1/triggers/NAME`) and one stylesheet. It changes nothing.

It answers inside the probe server (probes.py): on that server's threads, within its limits on
connections and request time, so the daemon keeps one concurrency model. Everything on the page
comes from the triggers repository or from Jenkins, so everything is escaped (Jinja2's autoescape),
only http(s) URLs become links, and the Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, quote, unquote
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from reconciler import logs
from reconciler.core.errors import ConfigError, StateError
from reconciler.core.operations import holding
from reconciler.core.overview import Problem, Row, State, as_json, counts, outcome, overview, sparkline
from reconciler.core.runs import FINISHED, Run
from reconciler.service import records

if TYPE_CHECKING:
    from reconciler.service.daemon import Daemon

REFRESH_SECONDS = 30
"""The page reloads itself this often (a `Refresh` header: no script needed)."""
RECENT_RUNS = 20
"""Runs per trigger the sparkline draws."""
HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
"""On every answer: no script runs, whatever a spec or Jenkins managed to put in the page."""
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
HTML, JSON, TEXT = "text/html; charset=utf-8", "application/json", "text/plain; charset=utf-8"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Response:
    """What the server sends: the page's code knows nothing of sockets."""

    status: int
    body: bytes
    content_type: str = HTML
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Outcomes:
    """A trigger's latest outcomes, and what they were read for."""

    newest: Run
    outcomes: tuple[str, ...]
    settled: bool
    """Every run but the newest was finished: nothing but a new or changed newest run changes them."""


@dataclass(frozen=True, slots=True)
class RunHistory:
    """One run's history lines, in the order they were written."""

    run_id: str
    events: tuple[dict[str, Any], ...]

    @property
    def first(self) -> dict[str, Any]:
        return self.events[0]


def by_run(events: Iterable[dict[str, Any]]) -> list[RunHistory]:
    """History lines grouped by run, the newest run first."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        runs.setdefault(str(event.get("run_id")), []).append(event)
    return [RunHistory(run_id, tuple(lines)) for run_id, lines in reversed(runs.items())]


class Web:
    """Answers the page's requests from the daemon's catalog, state store and history."""

    def __init__(self, daemon: Daemon, prefix: str = "", clock: Callable[[], float] = time.time):
        if not _PREFIX.fullmatch(prefix.rstrip("/")):
            raise ConfigError(f"--web-prefix {prefix!r}: expected a path such as /reconciler "
                              "(letters, digits, '.', '_', '~', '-' between slashes)")
        self.daemon = daemon
        self.prefix = prefix.rstrip("/")
        self.clock = clock
        self._outcomes: dict[str, _Outcomes] = {}
        self._css = files("reconciler.service").joinpath("static/style.css").read_bytes()
        env = Environment(loader=PackageLoader("reconciler.service"), autoescape=True, undefined=StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
        env.filters.update(path=_path, link=_link, iso=_iso, when=_when, ago=_ago, duration=_duration, local=_local,
                           spark=lambda outcomes: Markup(sparkline(outcomes)), outcome=outcome, text=_text)
        self._index = env.get_template("index.html")
        self._trigger = env.get_template("trigger.html")
        self._missing = env.get_template("missing.html")

    def respond(self, target: str, headers: Mapping[str, str]) -> Response:
        """The answer to a GET (or a HEAD, whose body the server drops) of `target`, a path and query.
        A store or history that cannot be read is said in a 503 (the page is no worse than /readyz);
        anything else that goes wrong is logged and answered with a 500, never a dropped connection."""
        try:
            answer = self._route(target, headers)
        except (StateError, OSError) as e:
            answer = Response(503, f"cannot read the state or history now: {e}\n".encode(), TEXT)
        except Exception as e:
            logs.get().exception("web_request_failed", target=target, exc_info=e)
            answer = Response(500, b"the page failed; the daemon's log says why\n", TEXT)
        return replace(answer, headers=HEADERS + answer.headers)

    def _route(self, target: str, headers: Mapping[str, str]) -> Response:
        raw_path, _, query = target.partition("?")
        base = self._base(headers)
        path = raw_path
        for prefix in dict.fromkeys((base, self.prefix)):  # a proxy may strip the prefix, or pass it on
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                path = path[len(prefix):]
                break
        path = path or "/"
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if path == "/static/style.css":
            return Response(200, self._css, "text/css; charset=utf-8", (("Cache-Control", "max-age=300"),))
        if path == "/":
            return self._page_index(base, params)
        if path == "/api/v1/triggers":
            rows = _filtered(self.rows(), params)
            return self._json([as_json(row) for row in rows])
        for start, page in (("/triggers/", self._page_trigger), ("/api/v1/triggers/", self._api_trigger)):
            if path.startswith(start):
                name = unquote(path[len(start):])
                row = next(iter(self.rows(only=name)), None)
                if row is None:
                    return Response(404, self._missing.render(base=base, name=name).encode())
                return page(row, base)
        return Response(404, self._missing.render(base=base, name=None).encode())

    def rows(self, only: str | None = None) -> list[Row]:
        """Every trigger as the daemon sees it now, or `only` the one named (none if it has no spec,
        error or run)."""
        daemon, now = self.daemon, self.clock()
        entries = daemon.catalog.entries.copy()  # the loop's thread changes it: copied in one step
        rejected = daemon.catalog.rejected  # replaced whole by each scan, never changed in place
        specs = {name: e.spec for name, e in entries.items() if e.spec is not None}
        errors = {name: e.error for name, e in entries.items() if e.error is not None}
        errors.update((rel, e.error) for rel, e in rejected.items() if e.error is not None)
        store = daemon.store
        latest = store.latest()
        if only is None:
            recent = self._recent(latest)
        else:
            specs, errors, latest = _only(specs, only), _only(errors, only), _only(latest, only)
            recent = {only: tuple(outcome(run) for run in reversed(store.runs(only, RECENT_RUNS)))}
        current = [(s.name, s.revision) for s in specs.values() if s.schedule is None]
        fired, given_up = records.revisions(store, current)
        refused = {name: [Problem(error)] for name, (_, error) in daemon.against_policy.copy().items()}
        frozen = {name: str(freeze) for name, freeze in daemon.frozen.copy().items()}
        return overview(specs, errors, latest, datetime.fromtimestamp(now, UTC), recent=recent,
                        servers=daemon.servers, fired=fired, refused=refused, frozen=frozen,
                        paused=holding(store.pauses(), now), given_up=given_up)

    def _recent(self, latest: Mapping[str, Run]) -> dict[str, tuple[str, ...]]:
        """Each trigger's latest outcomes, oldest first. Decoding 20 runs of 1,000 triggers takes a second,
        so they are kept between requests, and read again only for a trigger whose newest run is another
        or has moved on, or whose older runs were not all finished (a finished run never changes)."""
        kept = self._outcomes
        fresh: dict[str, _Outcomes] = {}
        for name, run in latest.items():
            known = kept.get(name)
            if known is None or known.newest != run or not known.settled:
                runs = self.daemon.store.runs(name, RECENT_RUNS)
                known = _Outcomes(run, tuple(outcome(r) for r in reversed(runs)),
                                  all(r.status in FINISHED for r in runs[1:]))
            fresh[name] = known
        self._outcomes = fresh  # replaced whole: requests on other threads read the old one or this one
        return {name: known.outcomes for name, known in fresh.items()}

    def _base(self, headers: Mapping[str, str]) -> str:
        """Where the page lives for the browser: the ingress's `X-Forwarded-Prefix`, else --web-prefix."""
        forwarded = headers.get("X-Forwarded-Prefix")
        if forwarded is not None and _PREFIX.fullmatch(forwarded.rstrip("/")):
            return forwarded.rstrip("/")
        return self.prefix

    def _page_index(self, base: str, params: Mapping[str, str]) -> Response:
        rows = self.rows()
        shown = _filtered(rows, params)
        body = self._index.render(
            base=base, rows=shown, total=len(rows), counts=counts(rows), states=list(State),
            q=params.get("q", ""), state=params.get("state", ""), now=self.clock(), notes=self._notes())
        return self._html(body)

    def _page_trigger(self, row: Row, base: str) -> Response:
        runs = by_run(self.daemon.history.read(row.name))
        return self._html(self._trigger.render(base=base, row=row, runs=runs, now=self.clock(), notes=self._notes()))

    def _api_trigger(self, row: Row, base: str) -> Response:
        return self._json({**as_json(row), "history": self.daemon.history.read(row.name)[::-1]})

    def _notes(self) -> list[str]:
        """What /readyz would add: a standby, triggers not watched, history not pushed, not ready yet."""
        daemon = self.daemon
        return ([] if daemon.ready.is_set() else ["the first pass has not completed"]) + daemon.readiness_notes()

    @staticmethod
    def _html(body: str) -> Response:
        return Response(200, body.encode(), HTML, (("Refresh", str(REFRESH_SECONDS)), ("Cache-Control", "no-cache")))

    @staticmethod
    def _json(data: Any) -> Response:
        return Response(200, json.dumps(data, ensure_ascii=False, indent=1).encode(), JSON,
                        (("Cache-Control", "no-cache"),))



def _only(mapping: dict[str, T], name: str) -> dict[str, T]:
    return {name: mapping[name]} if name in mapping else {}


def _filtered(rows: list[Row], params: Mapping[str, str]) -> list[Row]:
    """The rows whose name has `q` in it (any case) and whose state is `state`, where given."""
    q, state = params.get("q", "").strip().casefold(), params.get("state", "")
    return [row for row in rows if (not q or q in row.name.casefold()) and (not state or row.state == state)]


def _path(name: str) -> str:
    """A trigger's name in a URL: each part encoded, its folders' `/` kept."""
    return quote(name, safe="/")


def _link(url: str | None) -> str | None:
    """A URL fit for an href: http(s) only (a history line could say `javascript:`)."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _iso(ts: float) -> str:
    """For a `datetime` attribute."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    seconds = now - ts
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _duration(ms: Any) -> str:
    if not isinstance(ms, int):
        return "" if ms is None else _text(ms)
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def _local(moment: datetime | None, timezone: str | None) -> str:
    """A tick in its schedule's time zone, as the spec's author thinks of it."""
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(timezone or "UTC")).strftime("%Y-%m-%d %H:%M %Z")


def _text(value: Any) -> str:
    """A history field that is not shown in a shape of its own, as text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
