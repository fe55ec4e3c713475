"""An independent Jenkins stand-in for the reliability bench: `python bench/standin.py CONFIG.json`.

Written from Jenkins' documented remote API and its source, not from our client or the bundled
simulator, so that the two do not share a misreading. What it models, and where from:

- `POST /job/NAME/build` and `/buildWithParameters` (`ParameterizedJobMixIn.doBuild`,
  `ParametersDefinitionProperty.buildWithParameters`): Basic auth with an API token; a job with an
  authentication token that receives `token` gets a `Cause$RemoteCause` with the `cause` text as its
  note, otherwise a `Cause$UserIdCause` (`getBuildCause`); parameters the job does not define are
  dropped (SECURITY-170), missing ones take their default. `Queue.schedule2`: a request whose
  parameters equal those of an item still waiting is folded into it (`CauseAction.foldIntoExisting`:
  its cause is added to the item's) and answered 303 with that item's `Location`; a new item 201.
- Queue items wait the quiet period, then start on an executor; the build number is given when the
  build starts (`nextBuildNumber` grows then), so a number read before a POST bounds its build from
  below. A left item is kept 5 minutes (`Queue.LeftItem`), then `/queue/item/N/` answers 404.
- The remote API's `tree` (Stapler `TreePruner`): `a,b[c,d]{M,N}`; a range `{M,N}` keeps elements M
  to N-1, `{M,}` from M, `{,N}` up to N, `{N}` element N alone (`org.kohsuke.stapler.export.Range`).
  `builds` lists the newest 100 (`Job.getNewBuilds`: `getBuilds().limit(100)`), `allBuilds` every
  build; newest first. `_class` on every object.
- Every URL it writes is on its root URL ("Jenkins URL"), which may differ from the address it is
  reached at.

Control, for the bench (not Jenkins): `GET /_standin/ledger` (every POST received, every build with
its parameters and cause notes), `POST /_standin/faults` (`{"path": regex, "method", "status",
"latency", "times"}`: answer with `status` or answer late), `DELETE /_standin/faults`, `POST
/_standin/elsewhere` (`{"job", "count"}`: builds started by a person, through the same queue).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LEFT_ITEM_TTL = 300.0


# -- the remote API's tree ------------------------------------------------------------------------

def parse_tree(text: str) -> list[tuple[str, Any, tuple[int, int] | None]]:
    """`a,b[c]{0,10}` → [(a, None, None), (b, [(c, None, None)], (0, 10))]."""
    pos = 0

    def items() -> list[tuple[str, Any, tuple[int, int] | None]]:
        nonlocal pos
        out = []
        while pos < len(text):
            m = re.compile(r"[^,\[\]{}]*").match(text, pos)
            assert m is not None
            name, pos = m.group(0).strip(), m.end()
            sub, rng = None, None
            if pos < len(text) and text[pos] == "[":
                pos += 1
                sub = items()
                if pos < len(text) and text[pos] == "]":
                    pos += 1
            if pos < len(text) and text[pos] == "{":
                end = text.index("}", pos)
                rng = parse_range(text[pos + 1:end])
                pos = end + 1
            if name:
                out.append((name, sub, rng))
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break
        return out

    return items()


def parse_range(text: str) -> tuple[int, int]:
    big = 2 ** 31 - 1
    if "," not in text:
        n = int(text)
        return n, n + 1
    low, high = text.split(",", 1)
    return int(low) if low.strip() else 0, int(high) if high.strip() else big


def prune(value: Any, tree: list[tuple[str, Any, tuple[int, int] | None]] | None) -> Any:
    if tree is None:
        return value
    if isinstance(value, list):
        return [prune(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {"_class": value["_class"]} if "_class" in value else {}
    for name, sub, rng in tree:
        if name not in value:
            continue
        v = value[name]
        if callable(v):
            v = v()
        if isinstance(v, list) and rng is not None:
            v = v[rng[0]:rng[1]]
        out[name] = prune(v, sub) if sub is not None else shallow(v)
    return out


def shallow(v: Any) -> Any:
    """A property asked for without a sub-tree: Jenkins writes nested objects at depth 0 only."""
    if callable(v):
        v = v()
    if isinstance(v, list):
        return [shallow(x) for x in v]
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if not isinstance(x, (dict, list)) and not callable(x)}
    return v


# -- the model --------------------------------------------------------------------------------------

class Jenkins:
    def __init__(self, config: dict[str, Any]):
        self.root = config["root_url"]  # filled in once the port is known, unless configured
        self.users: dict[str, str] = config.get("users", {})
        self.quiet = float(config.get("quiet_period", 0))
        self.executors = int(config.get("executors", 64))
        self.jobs: dict[str, dict[str, Any]] = {}
        for job in config["jobs"]:
            self.jobs[job["name"]] = {"name": job["name"], "token": job.get("token"),
                                      "parameters": list(job.get("parameters") or []),
                                      "duration": float(job.get("duration", 0.05)), "next": 1, "builds": []}
        self.lock = threading.Lock()
        self.next_item = 1
        self.waiting: list[dict[str, Any]] = []
        self.left: dict[int, tuple[float, dict[str, Any]]] = {}
        self.posts: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        threading.Thread(target=self._run_queue, daemon=True).start()

    # urls
    def job_url(self, name: str) -> str:
        return self.root + "".join(f"job/{quote(part)}/" for part in name.split("/"))

    # the queue
    def schedule(self, job: dict[str, Any], params: list[tuple[str, str]] | None, cause: dict[str, Any]
                 ) -> tuple[dict[str, Any], bool]:
        """Queue.schedule2: fold into an item still waiting with equal parameters, or add one."""
        with self.lock:
            for item in self.waiting:
                if item["job"] is job and item["params"] == params:
                    if cause not in item["causes"]:
                        item["causes"].append(cause)
                    item["due"] = min(item["due"], time.monotonic() + self.quiet)
                    return item, False
            item = {"id": self.next_item, "job": job, "params": params, "causes": [cause],
                    "since": time.time(), "due": time.monotonic() + self.quiet, "cancelled": False, "build": None}
            self.next_item += 1
            self.waiting.append(item)
            return item, True

    def _run_queue(self) -> None:
        while True:
            time.sleep(0.01)
            now, wall = time.monotonic(), time.time()
            with self.lock:
                busy = sum(1 for j in self.jobs.values() for b in j["builds"][-self.executors:]
                           if b["start"] + b["duration"] > wall)
                for item in list(self.waiting):
                    if item["due"] > now or busy >= self.executors:
                        continue
                    job = item["job"]
                    build = {"number": job["next"], "queueId": item["id"], "params": item["params"],
                             "causes": list(item["causes"]), "start": wall, "duration": job["duration"]}
                    job["next"] += 1
                    job["builds"].append(build)
                    item["build"] = build
                    self.waiting.remove(item)
                    self.left[item["id"]] = (now, item)
                    busy += 1
                for key in [k for k, (at, _) in self.left.items() if now - at > LEFT_ITEM_TTL]:
                    del self.left[key]

    # JSON
    def _actions(self, params: list[tuple[str, str]] | None, causes: list[dict[str, Any]]) -> list[Any]:
        actions: list[Any] = []
        if params is not None:
            actions.append({"_class": "hudson.model.ParametersAction", "parameters": [
                {"_class": "hudson.model.StringParameterValue", "name": n, "value": v} for n, v in params]})
        actions.append({"_class": "hudson.model.CauseAction", "causes": causes})
        actions.append({})
        return actions

    def build_json(self, job: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        building = b["start"] + b["duration"] > time.time()
        return {"_class": "hudson.model.FreeStyleBuild", "actions": self._actions(b["params"], b["causes"]),
                "building": building, "inProgress": building, "displayName": f"#{b['number']}",
                "duration": 0 if building else int(b["duration"] * 1000), "id": str(b["number"]),
                "number": b["number"], "queueId": b["queueId"], "result": None if building else "SUCCESS",
                "timestamp": int(b["start"] * 1000), "url": f"{self.job_url(job['name'])}{b['number']}/",
                "fullDisplayName": f"{job['name']} #{b['number']}"}

    def item_json(self, item: dict[str, Any]) -> dict[str, Any]:
        job = item["job"]
        out = {"actions": self._actions(item["params"], item["causes"]), "blocked": False, "id": item["id"],
               "inQueueSince": int(item["since"] * 1000), "stuck": False, "url": f"queue/item/{item['id']}/",
               "task": {"_class": "hudson.model.FreeStyleProject", "name": job["name"].rsplit("/", 1)[-1],
                        "url": self.job_url(job["name"]), "color": "blue"}}
        if item["build"] is not None or item["cancelled"]:
            b = item["build"]
            out.update({"_class": "hudson.model.Queue$LeftItem", "buildable": False, "cancelled": item["cancelled"],
                        "executable": None if b is None else {
                            "_class": "hudson.model.FreeStyleBuild", "number": b["number"],
                            "url": f"{self.job_url(job['name'])}{b['number']}/"}, "why": None})
        else:
            out.update({"_class": "hudson.model.Queue$WaitingItem", "buildable": False,
                        "why": "In the quiet period.", "timestamp": int(item["since"] * 1000)})
        return out

    def job_json(self, job: dict[str, Any]) -> dict[str, Any]:
        newest_first = job["builds"][::-1]
        definitions = [{"_class": "hudson.model.StringParameterDefinition", "name": p, "type":
                        "StringParameterDefinition", "defaultParameterValue": {
                            "_class": "hudson.model.StringParameterValue", "name": p, "value": ""}}
                       for p in job["parameters"]]
        return {"_class": "hudson.model.FreeStyleProject", "name": job["name"].rsplit("/", 1)[-1],
                "fullName": job["name"], "url": self.job_url(job["name"]), "buildable": True, "disabled": False,
                "nextBuildNumber": job["next"], "concurrentBuild": True,
                "builds": lambda: [self.build_json(job, b) for b in newest_first[:100]],
                "allBuilds": lambda: [self.build_json(job, b) for b in newest_first],
                "property": [{"_class": "hudson.model.ParametersDefinitionProperty",
                              "parameterDefinitions": definitions}] if job["parameters"] else [],
                "inQueue": any(i["job"] is job for i in self.waiting)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    jenkins: Jenkins

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json;charset=utf-8") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Jenkins", "2.528.1")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, list[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        form = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        for k, v in parse_qs(body, keep_blank_values=True).items():
            form.setdefault(k, []).extend(v)
        return form

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Basic "):
            return None
        user, _, token = base64.b64decode(auth[6:]).decode().partition(":")
        return user if self.jenkins.users.get(user) == token else ""

    def _fault(self, path: str) -> dict[str, Any] | None:
        with self.jenkins.lock:
            for f in self.jenkins.faults:
                if re.search(f["path"], path) and f.get("method", self.command) == self.command and \
                        f.get("times", 1) != 0:
                    if "times" in f:
                        f["times"] -= 1
                    return f
        return None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        if path.startswith("/_standin/"):
            self._control(path)
            return
        fault = self._fault(path)
        if fault and fault.get("status"):
            self._form()
            self._send(int(fault["status"]), b"<html><body><h1>Not Found</h1></body></html>",
                       content_type="text/html")
            return
        if fault and fault.get("latency") and not fault.get("after"):
            time.sleep(float(fault["latency"]))
        user = self._user()
        if user == "":
            self._form()
            self._send(401, b"<html>Invalid password/token for user</html>", content_type="text/html")
            return
        query = parse_qs(split.query)
        tree = parse_tree(query["tree"][0]) if "tree" in query else None
        segments = [unquote(s) for s in path.split("/") if s]
        names = []
        while len(segments) >= 2 and segments[0] == "job":
            names.append(segments[1])
            segments = segments[2:]
        j = self.jenkins
        if names:
            job = j.jobs.get("/".join(names))
            if job is None:
                self._form()
                self._send(404, b"<html><body><h2>HTTP ERROR 404 Not Found</h2></body></html>",
                           content_type="text/html")
                return
            if self.command == "POST" and segments in (["build"], ["buildWithParameters"]):
                self._trigger(job, segments[0], user, fault)
                return
            with j.lock:
                if segments == ["api", "json"]:
                    self._send(200, prune(j.job_json(job), tree) if tree else _depth0(j.job_json(job)))
                    return
                if len(segments) >= 1 and segments[0].isdigit():
                    found = [b for b in job["builds"] if b["number"] == int(segments[0])]
                    if found and segments[1:] == ["api", "json"]:
                        self._send(200, prune(j.build_json(job, found[0]), tree) if tree else
                                   _depth0(j.build_json(job, found[0])))
                        return
                    if found and segments[1:] == ["logText", "progressiveText"]:
                        text = b"Started\nFinished: SUCCESS\n"
                        building = j.build_json(job, found[0])["building"]
                        self._send(200, b"" if building else text, {"X-Text-Size": str(0 if building else len(text)),
                                   **({"X-More-Data": "true"} if building else {})}, "text/plain;charset=utf-8")
                        return
        elif segments == ["queue", "api", "json"]:
            with j.lock:
                body = {"_class": "hudson.model.Queue", "discoverableItems": [],
                        "items": [j.item_json(i) for i in j.waiting]}
            self._send(200, prune(body, tree) if tree else body)
            return
        elif len(segments) == 5 and segments[:2] == ["queue", "item"] and segments[3:] == ["api", "json"]:
            with j.lock:
                wanted = int(segments[2]) if segments[2].isdigit() else -1
                item = next((i for i in j.waiting if i["id"] == wanted), None) or \
                    (j.left.get(wanted) or (0, None))[1]
                if item is not None:
                    self._send(200, prune(j.item_json(item), tree) if tree else j.item_json(item))
                    return
        elif segments == ["queue", "cancelItem"] and self.command == "POST":
            wanted = int((self._form().get("id") or ["-1"])[0])
            with j.lock:
                for item in list(j.waiting):
                    if item["id"] == wanted:
                        item["cancelled"] = True
                        j.waiting.remove(item)
                        j.left[wanted] = (time.monotonic(), item)
            self._send(204)
            return
        elif segments == ["me", "api", "json"]:
            self._send(200, {"_class": "hudson.model.User", "id": user or "anonymous"})
            return
        self._form()
        self._send(404, b"<html><body><h2>HTTP ERROR 404 Not Found</h2></body></html>", content_type="text/html")

    def _trigger(self, job: dict[str, Any], endpoint: str, user: str | None, fault: dict[str, Any] | None) -> None:
        form = self._form()
        j = self.jenkins
        token = (form.get("token") or [None])[0]
        with j.lock:
            j.posts.append({"job": job["name"], "at": time.time(),
                            "form": {k: v for k, v in form.items() if k != "token"}})
        if user is None and not (job["token"] and token == job["token"]):
            self._send(403, b"<html><body><p>anonymous is missing the Job/Build permission</p></body></html>",
                       content_type="text/html")
            return
        if job["token"] and token is not None:
            note = (form.get("cause") or [None])[0]
            addr = self.client_address[0]
            cause: dict[str, Any] = {"_class": "hudson.model.Cause$RemoteCause", "addr": addr, "note": note,
                                     "shortDescription": f"Started by remote host {addr}" +
                                     (f" with note: {note}" if note else "")}
        else:
            cause = {"_class": "hudson.model.Cause$UserIdCause", "userId": user, "userName": user,
                     "shortDescription": f"Started by user {user}"}
        params: list[tuple[str, str]] | None = None
        if job["parameters"]:
            if endpoint == "build":
                self._send(400, b"<html><body><p>Nothing is submitted</p></body></html>", content_type="text/html")
                return
            params = [(p, (form.get(p) or [""])[0]) for p in job["parameters"]]
        elif endpoint == "buildWithParameters":
            self._send(400, b"<html><body><p>the job is not parameterized</p></body></html>",
                       content_type="text/html")
            return
        item, created = j.schedule(job, params, cause)
        if fault and fault.get("latency") and fault.get("after"):
            time.sleep(float(fault["latency"]))  # queued, and the answer is late: a kill now loses it
        self._send(201 if created else 303, b"", {"Location": f"{j.root}queue/item/{item['id']}/"})

    def _control(self, path: str) -> None:
        j = self.jenkins
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if path == "/_standin/ledger":
            with j.lock:
                ledger = {"posts": list(j.posts), "builds": {
                    name: [{"number": b["number"], "queueId": b["queueId"], "params": dict(b["params"] or []),
                            "notes": [c.get("note") for c in b["causes"] if c.get("note")],
                            "users": [c.get("userId") for c in b["causes"] if c.get("userId")]}
                           for b in job["builds"]] for name, job in j.jobs.items()},
                    "waiting": len(j.waiting)}
            self._send(200, ledger)
        elif path == "/_standin/faults" and self.command == "POST":
            with j.lock:
                j.faults.append(body)
            self._send(204)
        elif path == "/_standin/faults" and self.command == "DELETE":
            with j.lock:
                j.faults.clear()
            self._send(204)
        elif path == "/_standin/elsewhere":
            job = j.jobs[body["job"]]
            for i in range(int(body.get("count", 1))):
                params = [(p, f"elsewhere-{time.time_ns()}-{i}") for p in job["parameters"]] or None
                j.schedule(job, params, {"_class": "hudson.model.Cause$UserIdCause", "userId": "someone",
                                         "shortDescription": "Started by user someone"})
            self._send(204)
        else:
            self._send(404)


def _depth0(obj: dict[str, Any]) -> dict[str, Any]:
    """Without `tree`, the object's own properties and its children's at depth 0 (`allBuilds` is
    exported with visibility -2: only a tree asks for it)."""
    out = {}
    for k, v in obj.items():
        if k == "allBuilds":
            continue
        v = v() if callable(v) else v
        if isinstance(v, list):
            out[k] = [{kk: vv for kk, vv in x.items() if kk in ("_class", "number", "url", "name", "value")}
                      if isinstance(x, dict) else x for x in v]
        else:
            out[k] = v
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (kill -9 is what the bench does) resets its connection: not news."""


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    host = config.get("host", "127.0.0.1")
    server = Server((host, int(config.get("port", 0))), Handler)
    reach = f"http://{host}:{server.server_address[1]}/"
    config["root_url"] = (config.get("root_url") or reach).replace("{port}", str(server.server_address[1]))
    Handler.jenkins = Jenkins(config)
    print(reach, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
