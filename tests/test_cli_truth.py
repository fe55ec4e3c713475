"""No command claims what did not happen: a lookup Jenkins refuses is a refusal on record, healed by
`retry` with exactly one POST, and a run Jenkins never accepted is never called fired.

Jenkins here is a stand-in written from its documented remote API (POST job/NAME/build answers 201
with a Location of queue/item/N/; GET …/api/json reads the queue and the job's builds), so that it can
answer what the simulator would not: a 401 to the lookups while still taking POSTs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from .test_cli import reconciler


class StandIn:
    def __init__(self) -> None:
        self.refuse_reads = True
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _answer(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                owner.requests.append(("GET", path))
                if path.startswith("/crumbIssuer/"):
                    self._answer(404)
                elif owner.refuse_reads:  # a read permission the job token does not grant, say
                    self._answer(401, {"error": "unauthorized"})
                elif path == "/queue/api/json":
                    self._answer(200, {"items": []})
                elif path.startswith("/queue/item/"):
                    self._answer(200, {"_class": "hudson.model.Queue$WaitingItem", "why": "quiet period"})
                elif path == "/job/deploy/api/json":
                    self._answer(200, {"builds": []})
                else:
                    self._answer(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = urlsplit(self.path).path
                owner.requests.append(("POST", path))
                if path == "/job/deploy/build":
                    self._answer(201, headers={"Location": f"http://127.0.0.1:{owner.port}/queue/item/7/"})
                else:
                    self._answer(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self) -> list[str]:
        return [path for method, path in self.requests if method == "POST"]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    s = StandIn()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_a_refused_lookup_is_a_visible_refusal_that_retry_heals_with_exactly_one_post(tmp_path, standin):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "deploy.yaml").write_text("job: deploy\n")
    env = {"JENKINS_URL": standin.url, "JENKINS_USER": "bot", "JENKINS_API_TOKEN": "api-token",
           "JENKINS_JOB_TOKEN": "job-token"}  # a job token: a fresh store's run is looked up before its POST
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]

    refused = reconciler("run", "--once", *common, env=env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert standin.posts() == []
    assert any(json.loads(line)["event"] == "fire_refused" for line in refused.stdout.splitlines())

    [row] = json.loads(reconciler("status", "--json", *common[:4]).stdout)
    assert row["state"] == "refused" and "401" in row["detail"] and "looking the run up" in row["detail"]
    assert row["last_run"]["status"] == "refused" and row["last_run"]["retry_at"]
    [verdict] = json.loads(reconciler("plan", "--json", *common, env=env).stdout)
    assert verdict["action"] == "pending" and "refused" in verdict["detail"]
    history = [json.loads(line)["event"] for line in (tmp_path / "h" / "deploy.jsonl").read_text().splitlines()]
    assert history == ["decided", "refused"]

    standin.refuse_reads = False
    healed = reconciler("retry", "deploy", *common[:4])
    assert healed.returncode == 0 and "1 refused run" in healed.stderr
    before = len(standin.requests)
    again = reconciler("run", "--once", *common, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert standin.posts() == ["/job/deploy/build"]
    after = standin.requests[before:]
    first_post = after.index(("POST", "/job/deploy/build"))
    assert ("GET", "/job/deploy/api/json") in after[:first_post]  # it looked itself up before posting

    [verdict] = json.loads(reconciler("plan", "--json", *common, env=env).stdout)
    assert verdict["action"] == "up to date"
    assert reconciler("run", "--once", *common, env=env).returncode == 0
    assert standin.posts() == ["/job/deploy/build"]
