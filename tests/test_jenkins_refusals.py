"""Against an independent Jenkins stand-in: a build is over when Jenkins says it is no longer building,
and permanent refusals are refused at once, with words that say what to change in the spec.

The stand-in is written from Jenkins' source, not from our simulator, so that the two cannot share a
blind spot: `Run.setResult` is allowed while the run is BUILDING and only makes the result worse
(a Pipeline step marks it UNSTABLE mid-run; FreeStyle publishers run after the builders' result is
set); `building` turns false at POST_PRODUCTION and `inProgress` at COMPLETED; the console's
`X-More-Data` follows `Run.isLogUpdated`. Refusals follow `ParameterizedJobMixIn.doBuildWithParameters`
(409 not buildable; 400 "<full name> is not parameterized" since 2.524, an IllegalStateException
before), `SimpleParameterDefinition.createValue` and `ChoiceParameterDefinition.checkValue`
(IllegalArgumentException), and an exception escaping a web method is `oops.jelly`: a 500 page with
only a Logging ID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from reconciler.core.runs import RunStatus
from reconciler.repo.history import History
from reconciler.store.sqlite import Store

from .conftest import TOKEN, USER, Harness, wait_for


@dataclass(frozen=True)
class Phase:
    """What a build says from `at` seconds after it started."""

    at: float
    result: str | None
    building: bool
    in_progress: bool
    line: str


PIPELINE = (Phase(0.0, None, True, True, "[Pipeline] Start of Pipeline"),
            Phase(0.6, "UNSTABLE", True, True, "[Pipeline] junit: 3 tests failed, marking the run UNSTABLE"),
            Phase(2.5, "FAILURE", False, False, "[Pipeline] deploy: exit code 1\nFinished: FAILURE"))
"""A Pipeline step sets UNSTABLE mid-run; a later stage fails it."""
FREESTYLE = (Phase(0.0, None, True, True, "Building in workspace"),
             Phase(0.5, "SUCCESS", True, True, "Build step 'Execute shell' marked build as success"),
             Phase(1.5, "UNSTABLE", True, True, "[JUnit] 2 failures: Build step 'Publish JUnit' changed result"),
             Phase(2.5, "UNSTABLE", False, True, "Archiving artifacts (post-production)"),
             Phase(3.0, "UNSTABLE", False, False, "Finished: UNSTABLE"))
"""Builders end SUCCESS, a publisher makes it UNSTABLE, then post-production (no longer building)."""
LONG_FREESTYLE = tuple(Phase(p.at * 3, p.result, p.building, p.in_progress, p.line) for p in FREESTYLE)
"""Long enough for a second process to start following it."""
QUICK = (Phase(0.0, "SUCCESS", False, False, "Finished: SUCCESS"),)


@dataclass
class Job:
    parameters: list[dict[str, Any]] | None = None
    """Jenkins' `parameterDefinitions`; None: no ParametersDefinitionProperty."""
    disabled: bool = False
    phases: tuple[Phase, ...] = QUICK
    broken: bool = False
    """Every trigger fails in Jenkins with an exception its definitions do not explain."""


@dataclass
class Build:
    number: int
    queue_id: int
    started: float
    parameters: list[dict[str, Any]] | None


@dataclass
class StandIn:
    jobs: dict[str, Job]
    version: str = "2.528.1"
    drop_more_data: bool = False
    """Behave like a proxy that drops headers it does not know, X-More-Data among them."""
    builds: dict[str, list[Build]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    logging_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin.get(self)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                standin.post(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- answers ----------------------------------------------------------------------------
    def send(self, h: BaseHTTPRequestHandler, status: int, body: str | bytes = b"",
             headers: dict[str, str] | None = None, content_type: str = "text/html;charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        h.send_response(status)
        h.send_header("X-Jenkins", self.version)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def json(self, h: BaseHTTPRequestHandler, value: Any) -> None:
        self.send(h, 200, json.dumps(value), content_type="application/json;charset=utf-8")

    def send_error(self, h: BaseHTTPRequestHandler, status: int, message: str) -> None:
        """`HttpResponses.errorWithoutStack` → `sendError`: Jetty's error page."""
        self.send(h, status, f"<html><head><title>Error {status} {message}</title></head><body>"
                             f"<h2>HTTP ERROR {status} {message}</h2><table><tr><th>URI:</th><td>{h.path}</td></tr>"
                             f"<tr><th>STATUS:</th><td>{status}</td></tr><tr><th>MESSAGE:</th><td>{message}</td>"
                             "</tr><tr><th>SERVLET:</th><td>Stapler</td></tr></table></body></html>")

    def oops(self, h: BaseHTTPRequestHandler) -> None:
        """An exception escaped a web method: `oops.jelly`, without the exception (no SHOW_STACK_TRACE)."""
        logging_id = str(uuid.uuid4())
        self.logging_ids.append(logging_id)
        self.send(h, 500, '<html><body><h1>Oops!</h1><div id="error-description"><h2>A problem occurred while '
                          f'processing the request</h2><p style="text-align: center">Logging ID={logging_id}</p>'
                          "</div></body></html>")

    # -- routes -----------------------------------------------------------------------------
    def post(self, h: BaseHTTPRequestHandler, body: str) -> None:
        url = urlsplit(h.path)
        self.posts.append(url.path)
        segments = [unquote(s) for s in url.path.split("/") if s]
        job = self.jobs.get(segments[1]) if len(segments) == 3 and segments[0] == "job" else None
        if job is None:
            return self.send_error(h, 404, "Not Found")
        name, endpoint = segments[1], segments[2]
        form = parse_qs(url.query, keep_blank_values=True)
        for key, values in parse_qs(body, keep_blank_values=True).items():
            form.setdefault(key, []).extend(values)
        if job.disabled:
            return self.send_error(h, 409, f"{name} is not buildable")
        if endpoint == "build":
            if job.parameters is not None and "json" not in form:
                return self.send_error(h, 400, "Nothing is submitted" if not form else
                                       "This page expects a form submission")
            return self.queue(h, name, None)
        if endpoint != "buildWithParameters":
            return self.send_error(h, 404, "Not Found")
        if job.parameters is None:
            if tuple(int(p) for p in self.version.split(".")) >= (2, 524):
                return self.send_error(h, 400, f"{name} is not parameterized")
            return self.oops(h)  # IllegalStateException("This build is not parameterized!")
        if job.broken:
            return self.oops(h)
        values = []
        for d in job.parameters:
            sent = form.get(d["name"])
            if sent is None:
                values.append({"name": d["name"], "value": (d.get("defaultParameterValue") or {}).get("value")})
                continue
            if len(sent) != 1:
                return self.oops(h)  # "Illegal number of parameter values for NAME"
            if d["type"] == "ChoiceParameterDefinition" and sent[0] not in d["choices"]:
                return self.oops(h)  # "Illegal choice for parameter NAME: VALUE"
            value: Any = sent[0] == "true" if d["type"] == "BooleanParameterDefinition" else sent[0]
            values.append({"name": d["name"], "value": value})
        return self.queue(h, name, values)

    def queue(self, h: BaseHTTPRequestHandler, job: str, parameters: list[dict[str, Any]] | None) -> None:
        with self._lock:
            builds = self.builds.setdefault(job, [])
            queue_id = 100 + sum(len(b) for b in self.builds.values())
            builds.append(Build(len(builds) + 1, queue_id, time.monotonic(), parameters))
        self.send(h, 201, headers={"Location": f"http://{h.headers['Host']}/queue/item/{queue_id}/"})

    def get(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        segments = [unquote(s) for s in url.path.split("/") if s]
        if segments == ["me", "api", "json"]:
            return self.json(h, {"id": USER})
        if segments == ["queue", "api", "json"]:
            return self.json(h, {"items": []})
        if segments[:2] == ["queue", "item"] and segments[3:] == ["api", "json"]:
            build = next((b for bs in self.builds.values() for b in bs if b.queue_id == int(segments[2])), None)
            if build is None:
                return self.send_error(h, 404, "Not Found")
            job = next(name for name, bs in self.builds.items() if build in bs)
            return self.json(h, {"_class": "hudson.model.Queue$LeftItem", "id": build.queue_id, "cancelled": False,
                                 "executable": {"number": build.number, "url": self.build_url(job, build)}})
        job = self.jobs.get(segments[1]) if len(segments) > 1 and segments[0] == "job" else None
        if job is None:
            return self.send_error(h, 404, "Not Found")
        name, rest = segments[1], segments[2:]
        builds = self.builds.get(name, [])
        if rest == ["api", "json"]:
            recent = [self.build_json(name, job, b) for b in reversed(builds)]
            prop = [] if job.parameters is None else [{"_class": "hudson.model.ParametersDefinitionProperty",
                                                       "parameterDefinitions": job.parameters}]
            return self.json(h, {"name": name, "buildable": not job.disabled, "property": prop,
                                 "builds": recent[:100], "allBuilds": recent})
        build = next((b for b in builds if rest and str(b.number) == rest[0]), None)
        if build is None:
            return self.send_error(h, 404, "Not Found")
        if rest[1:] == ["api", "json"]:
            return self.json(h, self.build_json(name, job, build))
        if rest[1:] == ["logText", "progressiveText"]:
            phases = self.reached(job, build)
            text = "".join(p.line + "\n" for p in phases).encode()
            start = int(parse_qs(url.query).get("start", ["0"])[0])
            more = phases[-1].building or phases[-1].in_progress  # Run.isLogUpdated: before COMPLETED
            headers = {"X-Text-Size": str(len(text))}
            if more and not self.drop_more_data:
                headers["X-More-Data"] = "true"
            return self.send(h, 200, text[start:], headers, "text/plain;charset=utf-8")
        return self.send_error(h, 404, "Not Found")

    def build_url(self, job: str, build: Build) -> str:
        return f"https://jenkins.example.com/job/{job}/{build.number}/"  # the root URL, not the request's host

    @staticmethod
    def reached(job: Job, build: Build) -> list[Phase]:
        elapsed = time.monotonic() - build.started
        return [p for p in job.phases if p.at <= elapsed]

    def build_json(self, name: str, job: Job, build: Build) -> dict[str, Any]:
        phase = self.reached(job, build)[-1]
        actions: list[dict[str, Any]] = [{"_class": "hudson.model.CauseAction",
                                          "causes": [{"shortDescription": f"Started by user {USER}"}]}]
        if build.parameters is not None:
            actions.append({"_class": "hudson.model.ParametersAction", "parameters": build.parameters})
        return {"_class": "hudson.model.FreeStyleBuild", "number": build.number, "queueId": build.queue_id,
                "url": self.build_url(name, build), "building": phase.building, "inProgress": phase.in_progress,
                "result": phase.result, "duration": 0 if phase.building else int(phase.at * 1000),
                "actions": actions}

    def result_now(self, job: str) -> tuple[str | None, bool]:
        build = self.builds[job][-1]
        phase = self.reached(self.jobs[job], build)[-1]
        return phase.result, phase.building


CHOICES = [{"name": "ENV", "type": "ChoiceParameterDefinition", "choices": ["staging", "prod"],
            "defaultParameterValue": {"value": "staging"}},
           {"name": "VERSION", "type": "StringParameterDefinition", "defaultParameterValue": {"value": "1.0"}}]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    made = StandIn({"pipeline": Job(phases=PIPELINE), "freestyle": Job(phases=FREESTYLE),
                    "long": Job(phases=LONG_FREESTYLE),
                    "plain": Job(), "deploy": Job(parameters=CHOICES), "off": Job(disabled=True),
                    "broken": Job(parameters=CHOICES, broken=True)})
    yield made
    made.close()


@pytest.fixture
def harness(tmp_path: Path, standin: StandIn) -> Iterator[Harness]:
    h = Harness(tmp_path, standin)  # type: ignore[arg-type]  # a stand-in, where the harness takes a simulator
    yield h
    h.stop()


def reconciler(*args: str, url: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "JENKINS_URL": url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return done, time.monotonic() - began


def dirs(tmp_path: Path, **specs: str) -> list[str]:
    """Write the specs; the options naming triggers, state and history, in that order."""
    triggers = tmp_path / "t"
    triggers.mkdir(exist_ok=True)
    for name, text in specs.items():
        (triggers / f"{name}.yaml").write_text(text)
    return ["--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]


# -- completion: by `building`, never by `result` alone -----------------------------------------

@pytest.mark.parametrize(("job", "mid", "final"), [("pipeline", "UNSTABLE", "FAILURE"),
                                                   ("freestyle", "SUCCESS", "UNSTABLE")])
def test_a_result_set_while_building_is_not_the_outcome_the_final_one_is_recorded(harness, standin, job, mid,
                                                                                   final):
    harness.write("t", f"job: {job}\n")
    harness.start()
    wait_for(lambda: standin.builds.get(job) and standin.result_now(job) == (mid, True), what=f"{mid} mid-run")
    time.sleep(0.2)  # several looks at the build, each seeing a result while it is still building
    [run] = harness.runs("t")
    assert run.status is RunStatus.BUILDING and run.result is None
    wait_for(lambda: harness.runs("t")[0].status is RunStatus.COMPLETED, what="the end of the build")
    assert harness.runs("t")[0].result == final

    def completed() -> list[str | None]:
        return [e.get("result") for e in History(harness.history).read("t") if e["event"] == "completed"]

    wait_for(completed, what="the completed line")  # written right after the store records the end
    assert completed() == [final]


def test_run_once_wait_returns_only_when_the_build_is_over_with_its_final_result(tmp_path, standin):
    common = dirs(tmp_path, t="job: pipeline\n")
    done, took = reconciler("run", "--once", "--wait", *common, url=standin.url)
    assert done.returncode == 3, done.stdout + done.stderr  # FAILURE, not SUCCESS
    assert '"t": "FAILURE"' in done.stdout and took >= PIPELINE[-1].at
    status = json.loads(reconciler("status", "--json", *common[:4], url=standin.url)[0].stdout)
    assert [(s["trigger"], s["last_run"]["status"], s["last_run"]["result"]) for s in status] == \
        [("t", "completed", "FAILURE")]
    history = reconciler("history", "t", *common[:2], *common[4:], url=standin.url)[0].stdout
    assert "completed" in history and "FAILURE" in history and "UNSTABLE" not in history


@pytest.mark.parametrize("drop_more_data", [False, True], ids=["x-more-data", "header-dropped-by-a-proxy"])
def test_logs_follow_reads_until_the_build_says_its_log_is_complete(tmp_path, standin, drop_more_data):
    standin.drop_more_data = drop_more_data
    common = dirs(tmp_path, t="job: long\n")
    env = {**os.environ, "JENKINS_URL": standin.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}
    waiting = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--once", "--wait", *common], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: standin.builds.get("long"), what="the POST")  # the store exists by then

        def started() -> bool:
            store = Store(tmp_path / "s.db")
            try:
                return any(r.build_url for r in store.runs("t"))
            finally:
                store.close()

        wait_for(started, what="the build in the state store")
        assert standin.result_now("long")[1], "the build ended before logs --follow began"
        followed, _ = reconciler("logs", "t", "--follow", *common[:4], url=standin.url)
    finally:
        waiting.wait(timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.startswith("Building in workspace") and followed.stdout.endswith("Finished: UNSTABLE\n")
    assert "post-production" in followed.stdout


# -- permanent refusals: at once, saying what to change ------------------------------------------

@pytest.mark.parametrize(("spec", "version", "words"), [
    ("job: missing\n", "2.528.1", "not found (404): check `job` in the spec"),
    ("job: off\n", "2.528.1", "disabled in Jenkins (409)"),
    ("job: plain\nparameters: {A: x}\n", "2.528.1", "the job is not parameterized, so buildWithParameters is "
                                                    "refused; remove `parameters:` from the spec"),
    ("job: plain\nparameters: {A: x}\n", "2.462.3", "job 'plain' is not parameterized (Jenkins 2.462.3 answers "
                                                    "buildWithParameters on it with a 500): remove `parameters:`"),
    ("job: deploy\nparameters: {ENV: qa}\n", "2.528.1", "Illegal choice for parameter 'ENV': 'qa' is not one of "
                                                        "staging, prod; change `parameters.ENV` in the spec"),
    ("job: deploy\n", "2.528.1", "the job is parameterized, so a POST to build without parameters is refused; "
                                 "add `parameters:`"),
], ids=["404", "409", "400-not-parameterized", "500-not-parameterized-before-2.524", "illegal-choice",
        "400-parameterized"])
def test_run_once_wait_ends_a_permanent_refusal_in_seconds_with_exit_3_and_what_to_change(tmp_path, standin, spec,
                                                                                          version, words):
    standin.version = version
    done, took = reconciler("run", "--once", "--wait", *dirs(tmp_path, t=spec), url=standin.url)
    assert done.returncode == 3 and '"t": "refused"' in done.stdout, done.stdout + done.stderr
    refused = [json.loads(line) for line in done.stdout.splitlines() if '"fire_refused"' in line]
    assert len(refused) == 1 and words in refused[0]["error"], refused
    assert took < 15 and len(standin.posts) == 1  # refused once, never posted again blind
    for logging_id in standin.logging_ids:
        assert logging_id not in done.stdout  # explained: the id of an explained exception is noise


def test_a_500_the_definitions_cannot_explain_is_retried_for_a_bounded_time_then_refused_with_its_logging_id(
        harness, standin):
    harness.write("t", "job: broken\nparameters: {ENV: prod}\n")
    harness.start().executor.server_error_for = 1.0  # read at each 500: the first is at least 20 ms away
    wait_for(lambda: harness.runs("t") and harness.runs("t")[0].status is RunStatus.REFUSED, what="the refusal")
    [run] = harness.runs("t")
    assert len(standin.posts) > 2 and run.attempts == len(standin.posts)  # retried with backoff meanwhile
    assert f"Logging ID={standin.logging_ids[-1]}" in run.last_error
    assert "do not explain it" in run.last_error and "Oops" not in run.last_error
    assert not standin.builds.get("broken")
