"""History pushed to git by the daemon: a bare repository on disk as the remote, real clones, real kills."""

from __future__ import annotations

import base64
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from reconciler.config import HistoryRemote
from reconciler.core.errors import HistoryGitError
from reconciler.repo.writeback import Writeback, summary

from .conftest import TOKEN, USER, wait_for

DEPLOY = "job: deploy\nparameters: {ENV: prod, VERSION: '2'}\n"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Person", "GIT_AUTHOR_EMAIL": "p@x",
           "GIT_COMMITTER_NAME": "Person", "GIT_COMMITTER_EMAIL": "p@x"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=check, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """The remote: a bare repository with a `main` branch holding a README, as a triggers repo might."""
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True, capture_output=True)
    (seed / "README.md").write_text("triggers\n")
    git(seed, "add", ".")
    git(seed, "commit", "-qm", "start")
    git(seed, "push", "-q", "origin", "HEAD:main")
    return bare


def remote_for(tmp_path: Path, origin: Path, **kw) -> HistoryRemote:
    return HistoryRemote(repository=str(origin), clone=str(tmp_path / kw.pop("clone", "clone")),
                         interval=kw.pop("interval", 0.2), timeout=20, author_name="reconciler-bot",
                         author_email="bot@example.com", **kw)


def pushed(origin: Path, branch: str = "reconciler-history", path: str = "history") -> list[dict]:
    """Every history line on the remote branch, as a person cloning it would read them."""
    files = git(origin, "ls-tree", "-r", "--name-only", branch, "--", path, check=False).split()
    lines = []
    for name in files:
        lines += [json.loads(line) for line in git(origin, "show", f"{branch}:{name}").splitlines()]
    return lines


def commits(origin: Path, branch: str = "reconciler-history") -> list[str]:
    return git(origin, "log", "--format=%an|%s", branch, check=False).splitlines()


def test_outcomes_are_committed_and_pushed_in_batches_to_a_branch_of_their_own(harness, origin, tmp_path):
    harness.remote = remote_for(tmp_path, origin)
    harness.job_token = "deploy-job-token"
    for n in range(3):
        harness.write(f"team/deploy-{n}", f"job: plain\ncause: run {n}\n")
    harness.start()
    wait_for(lambda: sum(e["event"] == "completed" for e in pushed(origin)) == 3, what="three outcomes pushed")
    lines = pushed(origin)
    assert sorted(e["trigger"] for e in lines if e["event"] == "decided") == [f"team/deploy-{n}" for n in range(3)]
    assert len({(e["run_id"], e["event"]) for e in lines}) == len(lines), "no line twice"
    log = commits(origin)
    assert len(log) <= 4 and all(c.startswith("reconciler-bot|history: ") for c in log)
    assert git(origin, "log", "-1", "--format=%s", "main").strip() == "start", "the specs' branch is left alone"
    message = git(origin, "log", "--format=%B", "reconciler-history")
    assert "team/deploy-0: completed SUCCESS #" in message


def test_history_beside_the_specs_merges_with_people_pushing_at_the_same_time(harness, origin, tmp_path):
    """`branch: main`: the daemon's pushes and a person's race; rejected pushes are rebased, nothing lost."""
    harness.remote = remote_for(tmp_path, origin, branch="main", interval=0.05)
    person = tmp_path / "person"
    subprocess.run(["git", "clone", "-q", str(origin), str(person)], check=True, capture_output=True)
    stop = threading.Event()
    edits = []

    def edit() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            (person / "NOTES.md").write_text(f"edit {n}\n")
            git(person, "add", ".")
            git(person, "commit", "-qm", f"edit {n}")
            while subprocess.run(["git", "-C", str(person), "push", "-q", "origin", "HEAD:main"],
                                 capture_output=True).returncode != 0:
                git(person, "pull", "-q", "--rebase", "origin", "main")
            edits.append(n)
            stop.wait(0.5)  # a very busy person: two pushes a second

    for n in range(10):
        harness.write(f"d{n}", f"job: plain\ncause: run {n}\n")
    harness.start()
    wait_for(lambda: sum(e["event"] == "completed" for e in pushed(origin, "main")) == 10, timeout=60,
             what="ten outcomes pushed to main")
    editor = threading.Thread(target=edit)
    editor.start()
    try:
        wait_for(lambda: edits, what="the person's first push, after the daemon's last fetch")
        for n in range(10, 20):
            harness.write(f"d{n}", f"job: plain\ncause: run {n}\n")
        wait_for(lambda: sum(e["event"] == "completed" for e in pushed(origin, "main")) == 20, timeout=90,
                 what="twenty outcomes pushed to main")
    finally:
        stop.set()
        editor.join()
    lines = pushed(origin, "main")
    assert len({(e["run_id"], e["event"]) for e in lines}) == len(lines) == 20 * 4  # decided, queued, started, done
    subjects = git(origin, "log", "--format=%s", "main").splitlines()
    assert all(f"edit {n}" in subjects for n in edits), "every edit of the person is kept"
    assert any("history_push_rejected" in line for line in harness.logs.getvalue().splitlines()), \
        "the race happened: at least one push of the daemon's was rejected and rebased"


def test_a_history_file_a_person_appended_to_merges_line_by_line(origin, tmp_path):
    """Both sides appended to one file: git's union merge keeps both lines, in one file."""
    remote = remote_for(tmp_path, origin, branch="main")
    writeback = Writeback(remote)
    writeback.prepare()
    (writeback.history_dir / "t.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (writeback.history_dir / "t.jsonl").write_text('{"event":"decided","run_id":"a","trigger":"t"}\n')
    writeback.sync()
    person = tmp_path / "person"
    subprocess.run(["git", "clone", "-q", str(origin), str(person)], check=True, capture_output=True)
    with (person / "history" / "t.jsonl").open("a") as f:
        f.write('{"event":"note","run_id":"p","trigger":"t"}\n')
    git(person, "commit", "-qam", "a note")
    git(person, "push", "-q", "origin", "HEAD:main")
    with (writeback.history_dir / "t.jsonl").open("a") as f:
        f.write('{"event":"completed","run_id":"a","trigger":"t"}\n')
    writeback.sync()
    assert sorted(e["run_id"] + e["event"] for e in pushed(origin, "main")) == ["acompleted", "adecided", "pnote"]


def daemon_process(harness, config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "JENKINS_JOB_TOKEN": harness.job_token or ""}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(harness.triggers),
                             "--state", str(harness.state), "--config", str(config), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def write_config(path: Path, origin: Path, clone: Path, interval: float) -> Path:
    path.write_text(f"history:\n  repository: {origin}\n  clone: {clone}\n  interval: {interval}\n"
                    "  author: {name: reconciler-bot, email: bot@example.com}\n")
    return path


def test_kill_9_between_writing_and_pushing_loses_no_line_and_writes_none_twice(make_harness, origin, tmp_path):
    harness = make_harness(job_token="deploy-job-token")
    harness.triggers.mkdir(parents=True)
    harness.write("deploy", DEPLOY)
    clone = tmp_path / "clone"
    slow = write_config(tmp_path / "slow.yaml", origin, clone, interval=3600)  # nothing pushed for an hour
    proc = daemon_process(harness, slow)
    try:
        wait_for(lambda: (clone / "history" / "deploy.jsonl").exists() and
                 "started" in (clone / "history" / "deploy.jsonl").read_text(), what="lines written, not pushed")
        assert pushed(origin) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    harness.sim.finish("deploy", 1, "SUCCESS")
    proc = daemon_process(harness, write_config(tmp_path / "fast.yaml", origin, clone, interval=0.1))
    try:
        wait_for(lambda: [e["event"] for e in pushed(origin)] == ["decided", "queued", "started", "completed"],
                 what="the lines of the killed process, and the outcome, pushed once each")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert len(harness.sim.triggers("deploy")) == 1


def test_git_down_never_stops_firing_and_the_lines_go_up_when_it_is_back(harness, origin, tmp_path):
    harness.remote = remote_for(tmp_path, origin)
    harness.write("first", "job: plain\n")
    daemon = harness.start()
    wait_for(lambda: any(e["event"] == "completed" for e in pushed(origin)), what="the first outcome pushed")
    away = origin.with_name("away.git")
    origin.rename(away)  # the remote is unreachable
    harness.write("second", "job: plain\ncause: the second\n")
    wait_for(lambda: harness.runs("second") and harness.runs("second")[0].status == "completed",
             what="the second fire, with git down")
    wait_for(lambda: "history_push_failed" in harness.logs.getvalue(), what="the failed push to be logged")
    wait_for(lambda: daemon.writeback.unpushed_age() > 0.2)
    assert any("not yet pushed" in note for note in daemon.readiness_notes())
    assert daemon.readiness_problems() == [], "git being down does not make the daemon unready"
    away.rename(origin)
    wait_for(lambda: any(e["trigger"] == "second" and e["event"] == "completed" for e in pushed(origin)),
             timeout=30, what="the waiting lines pushed once git is back")
    assert daemon.writeback.unpushed_age() == 0


def test_a_fresh_pod_after_a_kill_right_behind_a_post_builds_once(make_harness, origin, tmp_path):
    """The old pod's lines for the fire never reached git; the new pod has a new clone and an empty
    store. The run id follows from the trigger and revision, so the new pod finds the build."""
    harness = make_harness(job_token="deploy-job-token")
    harness.triggers.mkdir(parents=True)
    harness.write("old", "job: plain\n")
    harness.write("deploy", DEPLOY)
    proc = daemon_process(harness, write_config(tmp_path / "a.yaml", origin, tmp_path / "clone-a", interval=0.1))
    try:
        wait_for(lambda: any(e["trigger"] == "old" and e["event"] == "completed" for e in pushed(origin)),
                 what="an earlier outcome pushed")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    harness.write("deploy", DEPLOY.replace("'2'", "'3'"))
    proc = daemon_process(harness, write_config(tmp_path / "b.yaml", origin, tmp_path / "clone-b", interval=3600))
    try:
        wait_for(lambda: len(harness.sim.triggers("deploy")) == 2, what="the POST of the new revision")
    finally:
        proc.send_signal(signal.SIGKILL)  # right behind the POST: none of its lines reached git
        proc.wait()
    harness.state.unlink()
    for leftover in tmp_path.glob("state.db-*"):
        leftover.unlink()
    proc = daemon_process(harness, write_config(tmp_path / "c.yaml", origin, tmp_path / "clone-c", interval=0.1))
    try:
        wait_for(lambda: sum(e["event"] == "started" and e["trigger"] == "deploy" for e in pushed(origin)) == 2,
                 what="the new pod to follow the build it found")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert len(harness.sim.triggers("deploy")) == 2, "one build per revision, none again"
    assert len(harness.sim.triggers("plain")) == 1, "the pushed history told the new pod what had fired"
    assert "fire_found" in out


def test_an_empty_store_waits_for_the_history_rather_than_fire_blind(harness, origin, tmp_path):
    harness.remote = remote_for(tmp_path, origin)
    away = origin.with_name("away.git")
    origin.rename(away)
    harness.write("deploy", "job: plain\n")
    daemon = harness.start(wait=False)
    wait_for(lambda: "history_unavailable" in harness.logs.getvalue(), what="the wait to be logged")
    assert harness.sim.triggers() == []
    assert any("waiting for the history branch" in p for p in daemon.readiness_problems())
    away.rename(origin)
    wait_for(lambda: len(harness.sim.triggers("plain")) == 1, timeout=30, what="the fire once git answers")


def test_readyz_and_metrics_say_how_old_the_oldest_unpushed_line_is(harness, origin, tmp_path):
    from reconciler.service.probes import Probes

    harness.remote = remote_for(tmp_path, origin)
    harness.write("deploy", "job: plain\n")
    daemon = harness.start()
    wait_for(lambda: pushed(origin))
    origin.rename(origin.with_name("away.git"))
    harness.write("again", "job: plain\ncause: again\n")
    wait_for(lambda: daemon.writeback.unpushed_age() > 1, what="an unpushed line a second old")
    probes = Probes("127.0.0.1:0", daemon, daemon.executor.metrics).start(daemon.supervisor)
    try:
        ready = requests.get(f"http://{probes.address}/readyz", timeout=5)
        metrics = requests.get(f"http://{probes.address}/metrics", timeout=5).text
    finally:
        probes.stop()
    assert ready.status_code == 200 and ready.text.startswith("ok\nhistory: the oldest line not yet pushed")
    [age] = [line for line in metrics.splitlines() if line.startswith("reconciler_history_unpushed_age_seconds ")]
    assert float(age.split()[1]) > 1


def test_a_commit_message_counts_outcomes_and_names_them():
    diff = "\n".join("+" + json.dumps(e) for e in [
        {"event": "decided", "trigger": "a", "fire_key": "r1", "run_id": "1"},
        {"event": "completed", "trigger": "a", "fire_key": "r1", "run_id": "1", "result": "SUCCESS", "number": 4},
        {"event": "completed", "trigger": "b", "fire_key": "r9", "run_id": "2", "result": "FAILURE", "number": 7},
        {"event": "refused", "trigger": "c", "fire_key": "r2", "run_id": "3"}])
    message = summary("+++ b/history/a.jsonl\n" + diff)
    first, _, *rest = message.splitlines()
    assert first == "history: 1 completed FAILURE, 1 completed SUCCESS, 1 decided, 1 refused (3 triggers)"
    assert "a: completed SUCCESS #4 (r1, run 1)" in rest and "c: refused (r2, run 3)" in rest


class GitOverHttp(BaseHTTPRequestHandler):
    """A git server over HTTP that wants a token: `git http-backend` (git's own CGI) behind a check of
    the Authorization header, as a forge would."""

    root: Path
    expected: str
    seen: list[str]

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        if auth != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_USER": "bot",
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "GIT_CONFIG_GLOBAL": os.devnull,
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env["CONTENT_LENGTH"] = str(len(body))
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for k, v in headers:
            if k.lower() != "status":
                self.send_header(k, v.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_an_https_token_is_sent_as_a_header_and_written_nowhere(harness, origin, tmp_path):
    """The token reaches the server as basic auth on every request, through git's environment: never in a
    URL, the clone's config, a commit, a log line or an error."""
    secret = "ghp-very-secret-token"
    handler = type("Handler", (GitOverHttp,), {"root": tmp_path, "seen": [],
                                                "expected": "Basic " + base64.b64encode(
                                                    f"x-access-token:{secret}".encode()).decode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/origin.git"
        harness.remote = replace(remote_for(tmp_path, origin, token=secret), repository=url)
        harness.write("deploy", "job: plain\n")
        harness.start()
        wait_for(lambda: any(e["event"] == "completed" for e in pushed(origin)), what="the outcome pushed over HTTP")
        harness.stop()
    finally:
        server.shutdown()
    assert handler.seen and all(auth == handler.expected for auth in handler.seen)
    clone = Path(harness.remote.clone)
    written = (clone / ".git" / "config").read_text() + harness.logs.getvalue() + \
        git(origin, "log", "--format=%B", "reconciler-history")
    for form in (secret, base64.b64encode(f"x-access-token:{secret}".encode()).decode()):
        assert form not in written


@pytest.fixture
def sshd(tmp_path):
    """A real sshd on a loopback port that lets one key in, and the known_hosts line for it."""
    daemon = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(daemon):
        pytest.skip("openssh-server is not installed (Debian: apt-get install openssh-server; .ci/run does)")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\n"
        f"PidFile {keys / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n")
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation folder sshd insists on
    except PermissionError:
        pytest.skip("sshd needs /run/sshd, which only root may make here")
    proc = subprocess.Popen([daemon, "-D", "-e", "-f", str(keys / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what="sshd to listen")
    host_key = (keys / "host.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield port, keys
    proc.terminate()
    proc.wait(timeout=10)


def test_history_is_pushed_over_ssh_with_the_deploy_key_and_only_to_a_known_host(harness, origin, tmp_path, sshd):
    port, keys = sshd
    url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}{origin}"
    harness.remote = replace(remote_for(tmp_path, origin), repository=url, ssh_key=str(keys / "client"),
                             known_hosts=str(keys / "known_hosts"))
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: any(e["event"] == "completed" for e in pushed(origin)), timeout=30, what="a push over ssh")
    harness.stop()
    # The same remote, but a host key the operator never trusted: nothing is pushed, and the log says why.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "other")], check=True)
    other = (keys / "other.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {other[0]} {other[1]}\n")
    stranger = Writeback(replace(harness.remote, clone=str(tmp_path / "clone-2")))
    with pytest.raises(HistoryGitError, match="cannot fetch") as refused:
        stranger.prepare()
    assert "Host key verification failed" in str(refused.value)
