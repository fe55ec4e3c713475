"""The Jenkins client, over real HTTP against the simulator."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from reconciler.config import Server
from reconciler.core.errors import JenkinsRefused, JenkinsServerError, JenkinsUnavailable, LoginRedirect, Withheld
from reconciler.jenkins.client import Client, job_url, version_of
from reconciler.jenkins.contract import explain_500
from reconciler.simulator import Simulator

from .conftest import TOKEN, USER, post, posts, sim_config, wait_for

JOB_TOKEN = "deploy-job-token"


def client_for(sim, *, token: str = TOKEN, job_token: str | None = None, attempts: int = 4,
               verify: bool | str = True) -> Client:
    server = Server(name="default", url=sim.url, user=USER, token=token, job_token=job_token, verify=verify)
    return Client(server, attempts=attempts, backoff=0.01, max_backoff=0.05)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[bytes], bytes | list[bytes]]], tuple[Client, list[bytes]]]]:
    """A bare server on loopback for the HTTP the simulator never speaks: it reads each request (one
    per connection), writes what `answer` makes of it (a list: in parts, a moment apart), and closes.
    Yields a client for it and the requests it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def start(answer: Callable[[bytes], bytes | list[bytes]]) -> tuple[Client, list[bytes]]:
        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    request = conn.recv(65536)
                    received.append(request)
                    parts = answer(request)
                    for part in parts if isinstance(parts, list) else [parts]:
                        conn.sendall(part)
                        time.sleep(0.05)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        serving.append(thread)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        return Client(Server(name="default", url=url, user=USER, token=TOKEN), backoff=0.01), received

    serving: list[threading.Thread] = []
    yield start
    # close() alone leaves a thread blocked in accept() listening on the port, to answer a later
    # test's connection with this one's script; shutdown() wakes it.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for thread in serving:
        thread.join(timeout=5)


@pytest.fixture
def tls_simulator(tmp_path: Path) -> Iterator[tuple[Simulator, str]]:
    """A simulator behind HTTPS with a certificate from a private CA; yields it and the CA's bundle."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    sim = Simulator(sim_config(), tls=context).start()
    yield sim, str(bundle)
    sim.stop()


def test_job_urls_encode_each_folder_segment():
    assert job_url("http://j/", "team a/dëploy ü") == "http://j/job/team%20a/job/d%C3%ABploy%20%C3%BC/"


def test_trigger_posts_build_and_returns_the_queue_item(simulator):
    queue_url = post(client_for(simulator), "plain", None, "ignored without a job token")
    assert queue_url == simulator.url + "queue/item/1/"
    [request] = simulator.triggers("plain")
    assert request.path == "/job/plain/build" and request.user == USER
    assert request.param("cause") is None


def test_trigger_with_parameters_and_job_token_sends_the_cause(simulator):
    client = client_for(simulator, job_token=JOB_TOKEN)
    post(client, "deploy", (("ENV", "prod"), ("VERSION", "2")), "release 2 [reconciler run abc]")
    [request] = simulator.triggers("deploy")
    assert request.path == "/job/deploy/buildWithParameters"
    assert (request.param("ENV"), request.param("token"), request.param("cause")) == \
        ("prod", JOB_TOKEN, "release 2 [reconciler run abc]")
    assert request.params.keys() >= {"ENV", "VERSION"}
    assert "token" not in simulator.requests[-1].path


def answers(*said: bool) -> Callable[[], bool]:
    """A lease guard that answers as told, in turn, then keeps its last answer."""
    left = list(said)
    return lambda: left.pop(0) if len(left) > 1 else left[0]


def test_a_lease_lapsing_between_the_last_check_and_the_write_sends_no_byte(simulator):
    """The guard said yes before the attempt and no as the bytes were to be written (the lease lapsed
    in between): Jenkins receives nothing, not even the request line."""
    client = client_for(simulator, job_token=JOB_TOKEN)
    client.trigger("deploy", (("ENV", "prod"), ("VERSION", "on time")), "c", answers(True))  # kept alive
    asked = len(simulator.requests)
    with pytest.raises(Withheld):
        client.trigger("deploy", (("ENV", "prod"), ("VERSION", "late")), "c", answers(True, False))
    time.sleep(0.3)
    assert len(simulator.requests) == asked
    assert [r.param("VERSION") for r in simulator.triggers("deploy")] == ["on time"]


def test_a_lease_that_lapsed_while_the_post_was_written_is_said(simulator):
    """Asked again right after each write: a stall between the last yes and the write (a pause, a
    GIL wait) past the lease is reported, so the caller can say the next leader may post it too."""
    client = client_for(simulator, job_token=JOB_TOKEN)
    asked = []
    on_time = client.trigger("deploy", (("ENV", "prod"), ("VERSION", "a")), "c", lambda: not asked.append(1))
    questions = len(asked)  # before the attempt, then before and after each write
    late = client.trigger("deploy", (("ENV", "prod"), ("VERSION", "b")), "c", answers(*[True] * (questions - 1), False))
    assert (on_time.late, late.late) == (False, True)
    assert [r.param("VERSION") for r in simulator.triggers("deploy")] == ["a", "b"]


def test_a_folder_job_with_spaces_and_non_ascii_is_triggered(simulator):
    post(client_for(simulator), "team a/dëploy ü", (("TARGET", "eu"),), None)
    assert len(simulator.builds("team a/dëploy ü")) == 1


def test_following_the_queue_to_the_build_and_its_result(simulator):
    client = client_for(simulator)
    queue_url = post(client, "manual", None, None)
    state = client.queue_item(queue_url, "manual")
    assert (state.kind, state.build_number) == ("left", 1)
    assert client.build(state.build_url).building is True
    simulator.finish("manual", 1, "FAILURE")
    build = client.build(state.build_url)
    assert (build.building, build.result) == (False, "FAILURE")


def test_a_crumb_is_fetched_when_jenkins_asks_and_refreshed_when_stale(make_simulator):
    sim = make_simulator(csrf_exempt_api_token=False)
    client = client_for(sim)
    post(client, "plain", None, None)
    sim.expire_crumbs()
    post(client, "plain", None, None)
    statuses = [(r.path, r.status) for r in sim.requests]
    assert statuses == [("/job/plain/build", 403), ("/crumbIssuer/api/json", 200), ("/job/plain/build", 201),
                        ("/job/plain/build", 403), ("/crumbIssuer/api/json", 200), ("/job/plain/build", 201)]


def test_an_sso_redirect_is_reported_and_never_followed(simulator):
    simulator.sso()
    with pytest.raises(LoginRedirect, match=r"redirected to http://localhost:\d+/sso/login: is an SSO proxy"):
        post(client_for(simulator), "plain", None, None)
    assert not [r for r in simulator.requests if r.path.startswith("/sso")]
    assert len(simulator.requests) == 1  # not retried either


def test_503_is_retried_with_backoff_until_it_recovers(simulator):
    simulator.fault(path="/build$", status=503, times=2)
    post(client_for(simulator), "plain", None, None)
    assert [r.status for r in simulator.requests] == [503, 503, 201]


def test_retries_are_bounded(simulator):
    simulator.fault(path="/build$", status=503)
    with pytest.raises(JenkinsUnavailable, match="Jenkins answered 503"):
        post(client_for(simulator, attempts=3), "plain", None, None)
    assert len(simulator.requests) == 3


def test_stopping_cuts_a_posts_backoff_short(simulator):
    simulator.fault(path="/build$", status=503)
    stop = threading.Event()
    server = Server(name="default", url=simulator.url, user=USER, token=TOKEN)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(JenkinsUnavailable, match="Jenkins answered 503"):
        post(Client(server, backoff=30, max_backoff=30, stop=stop), "plain", None, None)
    assert time.monotonic() - started < 10  # not the 15-30 s backoff
    assert len(simulator.requests) == 1


def test_a_502_on_a_post_may_have_been_acted_on_so_it_is_not_blindly_retried(simulator):
    simulator.fault(path="/build$", status=502)
    with pytest.raises(JenkinsUnavailable) as e:
        post(client_for(simulator), "plain", None, None)
    assert e.value.maybe_received and len(simulator.requests) == 1


def test_a_dropped_connection_on_a_post_is_ambiguous_and_left_to_the_caller(simulator):
    simulator.fault(path="/build$", drop="after", times=1)
    with pytest.raises(JenkinsUnavailable) as e:
        post(client_for(simulator), "plain", None, None)
    assert e.value.maybe_received
    assert len(simulator.builds("plain")) == 1  # Jenkins did build: the caller must look before retrying


def test_a_post_left_unanswered_past_the_read_timeout_is_ambiguous_and_left_to_the_caller(simulator):
    simulator.fault(path="/build$", latency=1.0, times=1)
    server = Server(name="default", url=simulator.url, user=USER, token=TOKEN, read_timeout=0.2)
    with pytest.raises(JenkinsUnavailable, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.2s") as e:
        post(Client(server, backoff=0.01), "plain", None, None)
    assert e.value.maybe_received
    wait_for(lambda: len(simulator.builds("plain")) == 1, what="Jenkins to build it all the same")


def test_a_refused_connection_is_retried_and_said_plainly():
    server = Server(name="default", url="http://127.0.0.1:9/", user=USER, token=TOKEN)
    with pytest.raises(JenkinsUnavailable, match=r"connection to 127\.0\.0\.1:9 failed: Connection refused$") as e:
        post(Client(server, attempts=2, backoff=0.01), "plain", None, None)
    assert not e.value.maybe_received  # nothing was sent: safe to POST again


def test_posts_in_a_row_share_one_kept_alive_connection(simulator):
    assert len(set(posts(client_for(simulator), "plain", None, None, 3))) == 3
    assert len({r.peer for r in simulator.triggers("plain")}) == 1


def test_posts_in_a_row_share_one_kept_alive_connection_over_https_too(tls_simulator):
    sim, bundle = tls_simulator
    assert len(set(posts(client_for(sim, verify=bundle), "plain", None, None, 3))) == 3
    assert len({r.peer for r in sim.triggers("plain")}) == 1


def test_bytes_after_a_whole_answer_leave_the_answer_standing(scripted):
    client, _ = scripted(lambda _: b"HTTP/1.1 201 Created\r\nLocation: /queue/item/7/\r\nContent-Length: 0\r\n\r\n"
                                   b"HTTP/1.1 what is this")
    assert post(client, "plain", None, None).endswith("/queue/item/7/")


def test_an_answer_that_ends_when_the_connection_closes_is_read_whole(scripted):
    client, received = scripted(lambda _: b"HTTP/1.1 302 Found\r\nLocation: https://sso.example.com/login?to=x\r\n"
                                          b"\r\n<html>Sign in</html>")
    with pytest.raises(LoginRedirect, match=r"redirected to https://sso\.example\.com/login: is an SSO proxy"):
        post(client, "plain", None, None)
    assert received[0].startswith(b"POST /job/plain/build HTTP/1.1\r\n") and len(received) == 1


CREATED = b"HTTP/1.1 201 Created\r\nLocation: /queue/item/7/\r\n"


@pytest.mark.parametrize("answer", [
    [CREATED + b"Transfer-Encoding: chunked\r\n\r\n", b"4\r\nok\r\n\r\n", b"0\r\n\r\n"],
    [b"HTTP/1.1 100 Continue\r\n\r\n", CREATED + b"Content-Length: 0\r\n\r\n"],
], ids=["chunked, in parts", "after an interim 100 Continue"])
def test_an_answer_is_read_whole_however_it_is_framed(scripted, answer):
    client, _ = scripted(lambda _: answer)
    assert post(client, "plain", None, None) == client.base + "queue/item/7/"


def test_an_answer_cut_short_is_ambiguous_and_left_to_the_caller(scripted):
    client, _ = scripted(lambda _: b"HTTP/1.1 201 Created\r\nLocation: /queue/item/7/\r\nContent-Length: 40\r\n\r\n{")
    with pytest.raises(JenkinsUnavailable, match="closed the connection before it answered") as e:
        post(client, "plain", None, None)
    assert e.value.maybe_received


def test_a_crumb_that_would_smuggle_a_header_in_is_refused_and_never_sent(scripted):
    def jenkins(request: bytes) -> bytes:
        if request.startswith(b"GET /crumbIssuer/"):
            body = b'{"crumbRequestField": "Jenkins-Crumb", "crumb": "c\\r\\nX-Forwarded-User: admin"}'
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        body = b"<html><body><p>No valid crumb was included in the request</p></body></html>"
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    client, received = scripted(jenkins)
    with pytest.raises(JenkinsRefused, match="crumb holds a line break"):
        post(client, "plain", None, None)
    assert [r.split(b" ", 2)[:2] for r in received] == [[b"POST", b"/job/plain/build"],
                                                        [b"GET", b"/crumbIssuer/api/json"]]
    assert not any(b"X-Forwarded-User" in r for r in received)


def test_a_dropped_connection_on_a_get_is_retried(simulator):
    client = client_for(simulator)
    queue_url = post(client, "plain", None, None)
    simulator.fault(path="/queue/item/", drop="before", times=1)
    assert client.queue_item(queue_url, "plain").kind == "left"


@pytest.mark.parametrize(("job", "params", "kwargs", "message"), [
    ("nope", None, {}, "not found (404)"),
    ("plain", None, {"token": "wrong-token"}, "rejected the credentials of user 'alice' (401)"),
    ("deploy", (("A", "1"),), {"job_token": "wrong-job-token"}, "Invalid token provided"),
    ("off", None, {}, "disabled in Jenkins (409)"),
    ("deploy", None, {}, "add `parameters:` to the spec"),
])
def test_refusals_are_not_retried_and_say_what_to_fix(simulator, job, params, kwargs, message):
    with pytest.raises(JenkinsRefused, match=re.escape(message)) as e:
        post(client_for(simulator, **kwargs), job, params, None)
    assert len(simulator.requests) == 1
    for secret in ("wrong-token", "wrong-job-token", TOKEN):
        assert secret not in str(e.value)


def test_jenkins_own_500_is_left_to_the_caller_which_the_job_definitions_explain(make_simulator):
    """Before 2.524 buildWithParameters on a job without parameters is an IllegalStateException: a bare 500.
    The client neither retries it (a 500 may follow the queueing) nor keeps its page; the definitions explain."""
    sim = make_simulator(version="2.462.3")
    client = client_for(sim)
    with pytest.raises(JenkinsServerError, match=r"^triggering plain: Jenkins answered 500") as e:
        post(client, "plain", (("A", "1"),), None)
    assert len(sim.requests) == 1 and e.value.maybe_received and "Exception" not in str(e.value)
    assert client.version == (2, 462, 3)
    assert "not parameterized" in explain_500("plain", (("A", "1"),), client.definition("plain"), client.version)
    assert client.definition("plain") is client.definition("plain") and len(sim.requests) == 2  # read once


def test_a_500_without_jenkins_behind_it_is_a_proxy_failing_and_may_pass(scripted):
    client, _ = scripted(lambda _: b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(JenkinsUnavailable) as e:
        post(client, "plain", None, None)
    assert not isinstance(e.value, JenkinsServerError) and e.value.maybe_received


def test_a_405_says_to_name_a_job_that_can_be_built(scripted):
    client, received = scripted(lambda _: b"HTTP/1.1 405 Method Not Allowed\r\nX-Jenkins: 2.528.1\r\n"
                                          b"Content-Length: 0\r\n\r\n")
    with pytest.raises(JenkinsRefused, match=r"\(405 Method Not Allowed\): check that `job` in the spec names a job"):
        post(client, "folder", None, None)
    assert len(received) == 1


def test_jenkins_versions_are_read_from_x_jenkins():
    assert version_of("2.528.1") == (2, 528, 1) and version_of("2.579-SNAPSHOT") == (2, 579)
    assert version_of("") is None


def test_a_run_is_found_by_the_run_id_in_its_cause_note_in_queue_and_builds(make_simulator):
    sim = make_simulator(quiet_period=60)
    client = client_for(sim, job_token=JOB_TOKEN)
    queue_url = post(client, "deploy", (("VERSION", "1"),), "x [reconciler run r-1]")
    assert client.find("deploy", run_id="r-1").queue_url == queue_url
    assert client.find("deploy", run_id="r-2") is None


def test_a_build_is_found_by_a_tag_parameter_or_its_queue_id(simulator):
    client = client_for(simulator)
    queue_url = post(client, "team a/dëploy ü", (("TARGET", "r-9"),), None)
    found = client.find("team a/dëploy ü", run_id="r-9", tag_param="TARGET")
    assert found.build_number == 1
    queue_id = int(queue_url.rstrip("/").rsplit("/", 1)[1])
    assert client.find("team a/dëploy ü", queue_id=queue_id).build_number == 1


def test_a_vanished_queue_item_reads_as_gone(simulator):
    client = client_for(simulator)
    simulator.state.jenkins.quiet_period = 60
    queue_url = post(client, "plain", None, None)
    simulator.restart()
    assert client.queue_item(queue_url, "plain").kind == "gone"


def test_https_is_verified_against_the_configured_ca_bundle(tls_simulator):
    sim, bundle = tls_simulator
    queue_url = post(client_for(sim, verify=bundle), "plain", None, None)
    assert queue_url.startswith("https://") and len(sim.triggers("plain")) == 1


def test_a_certificate_from_an_unknown_ca_is_refused_with_advice_and_nothing_is_sent(tls_simulator):
    sim, _ = tls_simulator
    with pytest.raises(JenkinsRefused, match=r"TLS failed with 127\.0\.0\.1:\d+: .*certificate verify failed.*"
                                             r"check ca_bundle"):
        post(client_for(sim), "plain", None, None)
    assert sim.requests == []


def test_verification_can_be_turned_off_for_a_lab_jenkins(tls_simulator):
    sim, _ = tls_simulator
    queue_url = post(client_for(sim, verify=False), "plain", None, None)
    assert queue_url.startswith("https://") and len(sim.triggers("plain")) == 1


@pytest.fixture
def mtls_simulator(tmp_path: Path) -> Iterator[tuple[Simulator, str, str]]:
    """A simulator behind HTTPS that demands a client certificate, as an mTLS ingress does; yields it,
    the CA bundle and a client certificate (with its key) issued by that CA."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    bundle, cert = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(bundle))
    ca.issue_cert("reconciler@example.com").private_key_and_cert_chain_pem.write_to_path(str(cert))
    sim = Simulator(sim_config(), tls=context).start()
    yield sim, str(bundle), str(cert)
    sim.stop()


def test_requests_go_through_the_proxy_the_operator_configured(simulator, proxy):
    server = Server(name="default", url=simulator.url, user=USER, token=TOKEN, proxy=proxy.url)
    client = Client(server, backoff=0.01)
    queue_url = post(client, "plain", None, None)
    assert client.queue_item(queue_url, "plain").kind in ("waiting", "left")
    assert f"POST {simulator.url}job/plain/build HTTP/1.1" in proxy.forwarded()
    assert f"GET {queue_url}api/json HTTP/1.1" in proxy.forwarded()
    assert len(simulator.triggers("plain")) == 1


def test_https_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(tls_simulator, proxy, monkeypatch):
    sim, bundle = tls_simulator
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # what an operator exports; the request itself is real
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    post(client_for(sim, verify=bundle), "plain", None, None)
    host = sim.url.removeprefix("https://").rstrip("/")
    assert [line for line in proxy.forwarded() if line.startswith(f"CONNECT {host} HTTP/")]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    before = len(proxy.forwarded())
    post(client_for(sim, verify=bundle), "plain", None, None)
    assert len(proxy.forwarded()) == before and len(sim.triggers("plain")) == 2


def test_a_client_certificate_is_presented_to_an_ingress_that_demands_one(mtls_simulator):
    sim, bundle, cert = mtls_simulator
    server = Server(name="default", url=sim.url, user=USER, token=TOKEN, verify=bundle, client_cert=cert)
    assert post(Client(server), "plain", None, None).startswith("https://")
    with pytest.raises(JenkinsRefused, match=r"client_cert"):  # the alert, or an EOF if the alert loses the race
        post(client_for(sim, verify=bundle), "plain", None, None)
    assert len(sim.triggers("plain")) == 1


def test_https_against_a_plain_http_port_is_named_as_such(simulator):
    server = Server(name="default", url=simulator.url.replace("http://", "https://"), user=USER, token=TOKEN)
    with pytest.raises(JenkinsRefused, match=r"does not speak TLS on that port .* use an http:// url"):
        post(Client(server), "plain", None, None)
