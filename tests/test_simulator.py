"""The simulator behaves as Jenkins does, as seen by third-party clients over real HTTP."""

from __future__ import annotations

import json
import time

import jenkins
import pytest
import requests

from reconciler.simulator import Simulator

from .conftest import TOKEN, USER

AUTH = (USER, TOKEN)


def client(sim: Simulator) -> jenkins.Jenkins:
    return jenkins.Jenkins(sim.url, username=USER, password=TOKEN, timeout=10)


def post(sim: Simulator, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.post(sim.url + path, allow_redirects=False, timeout=10, **kwargs)


def get(sim: Simulator, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.get(sim.url + path, allow_redirects=False, timeout=10, **kwargs)


# -- python-jenkins, the third-party client ---------------------------------------------------

@pytest.mark.parametrize("csrf", [True, False])
def test_python_jenkins_builds_a_job_and_follows_it_to_its_result(make_simulator, csrf):
    sim = make_simulator(csrf=csrf)
    server = client(sim)
    queue_id = server.build_job("manual")
    item = server.get_queue_item(queue_id)
    assert item["_class"] == "hudson.model.Queue$LeftItem"
    assert item["executable"]["number"] == 1
    info = server.get_build_info("manual", 1)
    assert info["building"] is True and info["result"] is None and info["queueId"] == queue_id

    sim.finish("manual", result="UNSTABLE")
    info = server.get_build_info("manual", 1)
    assert (info["building"], info["result"]) == (False, "UNSTABLE")
    assert "Finished: UNSTABLE" in server.get_build_console_output("manual", 1)
    assert server.get_job_info("manual")["nextBuildNumber"] == 2


def test_python_jenkins_passes_parameters_and_token(simulator):
    server = client(simulator)
    server.build_job("deploy", {"ENV": "prod", "VERSION": "2.0", "NOT_DEFINED": "x"},
                     token="deploy-job-token")
    info = server.get_build_info("deploy", 1)
    params = {p["name"]: p.get("value") for p in info["actions"][0]["parameters"]}
    # Undefined parameters are dropped (SECURITY-170); missing ones take their defaults;
    # a password parameter's value is never shown.
    assert params == {"ENV": "prod", "VERSION": "2.0", "DRY_RUN": True, "SECRET": None}
    assert info["actions"][1]["causes"][0]["_class"] == "hudson.model.Cause$RemoteCause"


def test_python_jenkins_reads_folder_jobs_with_spaces_and_non_ascii(simulator):
    server = client(simulator)
    server.build_job("team a/dëploy ü", {"TARGET": "eu"})
    info = server.get_build_info("team a/dëploy ü", 1)
    assert info["url"] == simulator.url + "job/team%20a/job/d%C3%ABploy%20%C3%BC/1/"
    folder = get(simulator, "job/team%20a/api/json").json()
    assert [j["name"] for j in folder["jobs"]] == ["dëploy ü"]


def test_build_on_an_unknown_job_is_404_for_python_jenkins(simulator):
    with pytest.raises(jenkins.NotFoundException):
        client(simulator).build_job("no-such-job")


# -- the seed article's plain HTTP ------------------------------------------------------------

def test_the_seed_articles_curl_call_queues_a_build_but_its_json_is_ignored(simulator):
    """`--data token=… --data-urlencode json=…` on buildWithParameters: Jenkins reads named
    parameters only, so the job runs with its defaults. Exactly what a reader would see."""
    r = post(simulator, "job/deploy/buildWithParameters",
             data={"token": "deploy-job-token", "json": json.dumps({"VERSION": "9.9"})})
    assert r.status_code == 201
    assert r.headers["Location"] == simulator.url + "queue/item/1/"
    build = simulator.builds("deploy")[0]
    assert {p.name: v for p, v in build.parameters}["VERSION"] == "1.0"


def test_build_with_the_json_form_field_sets_parameters(simulator):
    form = {"parameter": [{"name": "ENV", "value": "prod"}, {"name": "VERSION", "value": "3"}]}
    r = post(simulator, "job/deploy/build", data={"json": json.dumps(form)})
    assert r.status_code == 201
    build = simulator.builds("deploy")[0]
    assert {p.name: v for p, v in build.parameters} == \
        {"ENV": "prod", "VERSION": "3", "DRY_RUN": True, "SECRET": ""}


def test_build_of_a_parameterized_job_without_a_form_is_400(simulator):
    assert post(simulator, "job/deploy/build").status_code == 400


def test_json_form_naming_an_undefined_parameter_is_500(simulator):
    form = {"parameter": [{"name": "NOPE", "value": "1"}]}
    assert post(simulator, "job/deploy/build", data={"json": json.dumps(form)}).status_code == 500


# -- causes: who started the build ------------------------------------------------------------

def test_cause_note_is_used_only_with_the_job_token(simulator):
    post(simulator, "job/deploy/buildWithParameters", params={"cause": "no token", "VERSION": "a"})
    post(simulator, "job/deploy/buildWithParameters",
         params={"token": "deploy-job-token", "cause": "run 42", "VERSION": "b"})
    first, second = ([c for c in b.causes] for b in simulator.builds("deploy"))
    assert first[0]["shortDescription"] == "Started by user Alice Example"
    assert first[0]["userId"] == USER
    assert second[0]["shortDescription"] == "Started by remote host 127.0.0.1 with note: run 42"
    assert second[0]["note"] == "run 42"


# -- status codes Jenkins gives ---------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "job/plain/build", {}, 405),
    ("POST", "job/nope/build", {}, 404),
    ("POST", "job/plain/build", {"auth": (USER, "wrong")}, 401),
    ("POST", "job/plain/build", {"auth": ("reader", "reader-token")}, 403),
    ("POST", "job/plain/build", {"auth": None}, 403),
    ("POST", "job/deploy/buildWithParameters", {"params": {"token": "wrong"}}, 403),
    ("POST", "job/plain/buildWithParameters", {}, 500),
    ("POST", "job/off/build", {}, 409),
])
def test_refusals_carry_jenkins_status_codes(simulator, method, path, kwargs, status):
    kwargs.setdefault("auth", AUTH)
    r = requests.request(method, simulator.url + path, allow_redirects=False, timeout=10, **kwargs)
    assert r.status_code == status
    assert r.headers["X-Jenkins"]
    assert simulator.triggers() == []


def test_get_with_the_right_job_token_builds_as_current_jenkins_allows(simulator):
    r = get(simulator, "job/deploy/buildWithParameters", params={"token": "deploy-job-token"},
            auth=None, headers={})
    assert r.status_code == 403  # anonymous without Overall/Read sees nothing
    r = get(simulator, "job/deploy/buildWithParameters", params={"token": "deploy-job-token"})
    assert r.status_code == 201


# -- CSRF crumbs ------------------------------------------------------------------------------

def test_api_token_requests_need_no_crumb(simulator):
    assert post(simulator, "job/plain/build").status_code == 201


def test_crumb_is_required_without_the_api_token_exemption_and_bound_to_the_session(make_simulator):
    sim = make_simulator(csrf_exempt_api_token=False)
    r = post(sim, "job/plain/build")
    assert r.status_code == 403 and "No valid crumb" in r.text

    session = requests.Session()
    session.auth = AUTH
    crumb = session.get(sim.url + "crumbIssuer/api/json", timeout=10).json()
    assert crumb["crumbRequestField"] == "Jenkins-Crumb"
    headers = {crumb["crumbRequestField"]: crumb["crumb"]}
    # The crumb without its session cookie is refused; with it, accepted.
    assert post(sim, "job/plain/build", headers=headers).status_code == 403
    assert session.post(sim.url + "job/plain/build", headers=headers, timeout=10).status_code == 201

    sim.expire_crumbs()
    r = session.post(sim.url + "job/plain/build", headers=headers, timeout=10)
    assert r.status_code == 403 and "No valid crumb" in r.text


def test_crumb_issuer_is_404_when_csrf_protection_is_off(make_simulator):
    assert get(make_simulator(csrf=False), "crumbIssuer/api/json").status_code == 404


# -- the queue --------------------------------------------------------------------------------

def test_queue_item_waits_out_the_quiet_period_then_leaves_with_its_build(make_simulator):
    sim = make_simulator(quiet_period=0.3)
    location = post(sim, "job/plain/build").headers["Location"]
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$WaitingItem"
    assert item["why"].startswith("In the quiet period")
    time.sleep(0.35)
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$LeftItem"
    assert item["cancelled"] is False and item["executable"]["number"] == 1


def test_delay_zero_overrides_the_quiet_period(make_simulator):
    sim = make_simulator(quiet_period=60)
    location = post(sim, "job/plain/build", params={"delay": "0sec"}).headers["Location"]
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).json()["executable"]


@pytest.mark.parametrize(("version", "joined", "page"), [("2.300", 201, 404), ("2.400", 303, 404),
                                                        ("2.479.3", 303, 200)])
def test_identical_requests_in_the_quiet_period_coalesce_into_one_item(make_simulator, version, joined, page):
    """201 before JENKINS-66105 (2.308), 303 after; since jenkinsci/jenkins#9446 the page it points to exists."""
    sim = make_simulator(quiet_period=60, version=version)
    a = post(sim, "job/deploy/buildWithParameters", params={"VERSION": "1"})
    b = post(sim, "job/deploy/buildWithParameters", params={"VERSION": "1"})
    c = post(sim, "job/deploy/buildWithParameters", params={"VERSION": "2"})
    assert (a.status_code, b.status_code, c.status_code) == (201, joined, 201)
    assert a.headers["Location"] == b.headers["Location"] != c.headers["Location"]
    assert a.headers["X-Jenkins"] == version
    items = get(sim, "queue/api/json").json()["items"]
    assert len(items) == 2
    assert requests.get(a.headers["Location"], auth=AUTH, timeout=10).status_code == page
    assert [post(sim, "job/plain/build").status_code for _ in range(2)] == [201, 201]  # /build: always 201


def test_a_coalesced_request_keeps_the_shorter_due_time(make_simulator):
    sim = make_simulator(quiet_period=60)
    location = post(sim, "job/deploy/buildWithParameters", params={"VERSION": "1"}).headers["Location"]
    assert post(sim, "job/deploy/buildWithParameters", params={"VERSION": "1", "delay": "0sec"}).status_code == 303
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).json()["executable"]["number"] == 1


def test_delay_is_milliseconds_unless_it_says_sec_and_the_queue_takes_whole_seconds(make_simulator):
    """jenkins/util/TimeDuration.fromString: a bare number is milliseconds, `sec`/`secs` seconds, no
    other unit (`1500ms` is an IllegalArgumentException: a 500). ParameterizedJobMixIn.doBuild then
    schedules with `delay.getTimeInSeconds()` (millis / 1000), so 1500 ms waits 1 s and 999 ms none."""
    sim = make_simulator(quiet_period=60)
    started = time.monotonic()
    location = post(sim, "job/plain/build", params={"delay": "1500"}).headers["Location"]
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"].endswith("$WaitingItem")
    assert item["timestamp"] - item["inQueueSince"] == 1000
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).json()["executable"]["number"] == 1
    location = post(sim, "job/plain/build", params={"delay": "999"}).headers["Location"]
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).json()["executable"]["number"] == 2
    assert post(sim, "job/plain/build", params={"delay": "soon"}).status_code == 500
    assert post(sim, "job/plain/build", params={"delay": "1500ms"}).status_code == 500


def test_a_freestyle_job_builds_one_at_a_time_and_the_next_item_is_blocked(make_simulator):
    sim = make_simulator()
    post(sim, "job/serial/buildWithParameters", params={"N": "1", "token": "deploy-job-token"})
    second = post(sim, "job/serial/buildWithParameters", params={"N": "2", "token": "deploy-job-token"})
    item = requests.get(second.headers["Location"] + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$BlockedItem" and item["blocked"] and not item["buildable"]
    assert item["why"].startswith("Build #1 is already in progress")
    assert get(sim, "job/serial/api/json").json()["concurrentBuild"] is False
    sim.finish("serial", 1)
    assert requests.get(second.headers["Location"] + "api/json", auth=AUTH, timeout=10).json()[
        "executable"]["number"] == 2


def test_a_pipeline_job_runs_concurrently_with_workflow_classes(make_simulator):
    sim = make_simulator()
    for n in ("1", "2"):
        post(sim, "job/pipe/buildWithParameters", params={"N": n, "token": "deploy-job-token"})
    job = get(sim, "job/pipe/api/json").json()
    assert job["_class"] == "org.jenkinsci.plugins.workflow.job.WorkflowJob" and job["concurrentBuild"] is True
    build = get(sim, "job/pipe/2/api/json").json()
    assert build["_class"] == "org.jenkinsci.plugins.workflow.job.WorkflowRun" and build["building"]


def test_a_buildable_item_waits_for_a_free_executor(make_simulator):
    sim = make_simulator(executors=1)
    post(sim, "job/manual/build")
    location = post(sim, "job/manual/build", params={"delay": "0"}).headers["Location"]
    # Same job, no parameters, the first already left the queue: a second item, waiting.
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$BuildableItem"
    assert item["why"] == "Waiting for next available executor"
    sim.finish("manual", 1)
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["executable"]["number"] == 2


def test_cancelling_a_queue_item(make_simulator):
    sim = make_simulator(quiet_period=60)
    location = post(sim, "job/plain/build").headers["Location"]
    item_id = location.rstrip("/").rsplit("/", 1)[1]
    assert post(sim, "queue/cancelItem", params={"id": item_id}).status_code == 204
    item = requests.get(location + "api/json", auth=AUTH, timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$LeftItem" and item["cancelled"] is True
    assert item["executable"] is None
    assert post(sim, "queue/cancelItem", params={"id": item_id}).status_code == 500  # "Could not cancel run"
    assert post(sim, "queue/cancelItem", params={"id": "999"}).status_code == 404


def test_left_items_are_forgotten_after_their_time_but_the_build_knows_its_queue_id(make_simulator):
    sim = make_simulator(left_item_ttl=0.2)
    location = post(sim, "job/plain/build").headers["Location"]
    queue_id = int(location.rstrip("/").rsplit("/", 1)[1])
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).status_code == 200
    time.sleep(0.25)
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).status_code == 404
    tree = "builds[number,queueId]"
    builds = get(sim, "job/plain/api/json", params={"tree": tree}).json()["builds"]
    assert builds == [{"_class": "hudson.model.FreeStyleBuild", "number": 1, "queueId": queue_id}]


def test_builds_lists_the_newest_hundred_all_builds_every_one_and_ranges_slice(make_simulator):
    sim = make_simulator(executors=200)
    session = requests.Session()
    for _ in range(105):
        session.post(f"{sim.url}job/plain/build", auth=AUTH, timeout=10).raise_for_status()

    def numbers(tree: str, key: str = "builds") -> list[int]:
        return [b["number"] for b in get(sim, "job/plain/api/json", params={"tree": tree}).json()[key]]

    assert numbers("builds[number]") == list(range(105, 5, -1))  # Job.getNewBuilds: limit(100)
    assert numbers("allBuilds[number]", "allBuilds") == list(range(105, 0, -1))
    assert numbers("builds[number]{0,3}") == [105, 104, 103]
    assert numbers("builds[number]{2,}")[:2] == [103, 102]
    assert numbers("builds[number]{,2}") == [105, 104]
    assert numbers("builds[number]{1}") == [104]
    assert "allBuilds" not in get(sim, "job/plain/api/json").json()


# -- builds -----------------------------------------------------------------------------------

def test_progressive_text_reports_more_data_while_the_build_runs(simulator):
    post(simulator, "job/manual/build")
    r = get(simulator, "job/manual/1/logText/progressiveText", params={"start": 0})
    assert r.headers["X-More-Data"] == "true"
    size = int(r.headers["X-Text-Size"])
    assert size == len(r.content) > 0
    simulator.finish("manual", 1, "FAILURE")
    r = get(simulator, "job/manual/1/logText/progressiveText", params={"start": size})
    assert "X-More-Data" not in r.headers
    assert r.text == "Finished: FAILURE\n"


def test_stopping_a_build_aborts_it(simulator):
    post(simulator, "job/manual/build")
    assert post(simulator, "job/manual/1/stop").status_code == 302
    build = get(simulator, "job/manual/1/api/json").json()
    assert (build["building"], build["result"]) == (False, "ABORTED")


def test_results_follow_the_configured_sequence(make_simulator):
    sim = make_simulator(jobs=[{"name": "flaky", "result": ["SUCCESS", "FAILURE"]}])
    for _ in range(3):
        post(sim, "job/flaky/build", params={"delay": "0"})
    assert [b.result for b in sim.builds("flaky")] == ["SUCCESS", "FAILURE", "SUCCESS"]


def test_job_tree_reports_builds_with_results_and_causes(simulator):
    post(simulator, "job/plain/build")
    tree = "builds[number,result,actions[causes[userId]]],lastBuild[number],nextBuildNumber"
    job = get(simulator, "job/plain/api/json", params={"tree": tree}).json()
    assert job["nextBuildNumber"] == 2
    assert job["lastBuild"] == {"_class": "hudson.model.FreeStyleBuild", "number": 1}
    build = job["builds"][0]
    assert build["result"] == "SUCCESS"
    causes = [c for a in build["actions"] for c in a.get("causes", [])]
    assert causes == [{"_class": "hudson.model.Cause$UserIdCause", "userId": USER}]


def test_root_api_describes_the_instance(simulator):
    r = get(simulator, "api/json")
    assert r.headers["X-Jenkins"]
    names = {j["name"] for j in r.json()["jobs"]}
    assert {"plain", "deploy", "team a"} <= names


# -- faults -----------------------------------------------------------------------------------

def test_injected_503_then_recovery(simulator):
    simulator.fault(path="/build$", status=503, times=1)
    assert post(simulator, "job/plain/build").status_code == 503
    assert post(simulator, "job/plain/build").status_code == 201
    assert [r.status for r in simulator.requests if r.path.endswith("/build")] == [503, 201]


def test_dropped_before_processing_builds_nothing(simulator):
    simulator.fault(path="/build$", drop="before", times=1)
    with pytest.raises(requests.ConnectionError):
        post(simulator, "job/plain/build")
    assert simulator.builds("plain") == []


def test_dropped_after_processing_built_all_the_same(simulator):
    simulator.fault(path="/build$", drop="after", times=1)
    with pytest.raises(requests.ConnectionError):
        post(simulator, "job/plain/build")
    assert len(simulator.builds("plain")) == 1


def test_latency_is_injected(simulator):
    simulator.fault(path="/api/json$", latency=0.2, times=1)
    started = time.monotonic()
    get(simulator, "api/json")
    assert time.monotonic() - started >= 0.2


def test_sso_mode_redirects_everything_to_a_login_page_on_another_host(simulator):
    simulator.sso()
    r = post(simulator, "job/plain/build")
    assert r.status_code == 302
    assert r.headers["Location"].startswith("http://localhost:")
    assert "/sso/login" in r.headers["Location"]
    assert simulator.builds("plain") == []


def test_restart_forgets_the_queue_but_keeps_build_numbers(make_simulator):
    sim = make_simulator(quiet_period=60)
    post(sim, "job/plain/build", params={"delay": "0"})
    location = post(sim, "job/plain/build").headers["Location"]
    sim.restart()
    assert requests.get(location + "api/json", auth=AUTH, timeout=10).status_code == 404
    post(sim, "job/plain/build", params={"delay": "0"})
    assert [b.number for b in sim.builds("plain")] == [1, 2]


def test_anonymous_read_lets_anonymous_see_but_not_build(make_simulator):
    sim = make_simulator(anonymous_read=True)
    assert get(sim, "api/json", auth=None).status_code == 200
    assert post(sim, "job/plain/build", auth=None).status_code == 403


# -- the record of requests and the HTTP control API -----------------------------------------

def test_every_request_is_recorded_with_user_parameters_and_headers(simulator):
    post(simulator, "job/deploy/buildWithParameters", data={"VERSION": "7"},
         headers={"X-Trace": "abc"})
    request = simulator.requests[-1]
    assert (request.method, request.path, request.user, request.status) == \
        ("POST", "/job/deploy/buildWithParameters", USER, 201)
    assert request.param("VERSION") == "7"
    assert request.headers["X-Trace"] == "abc"


def test_control_api_drives_a_simulator_in_another_process(simulator):
    requests.post(simulator.url + "_sim/faults", json={"path": "/build$", "status": 502, "times": 1},
                  timeout=10)
    assert post(simulator, "job/manual/build").status_code == 502
    assert post(simulator, "job/manual/build").status_code == 201
    r = requests.post(simulator.url + "_sim/finish", params={"job": "manual", "result": "FAILURE"},
                      timeout=10)
    assert r.json() == {"number": 1, "result": "FAILURE"}
    recorded = requests.get(simulator.url + "_sim/requests", timeout=10).json()
    assert [r["status"] for r in recorded if r["path"].endswith("/build")] == [502, 201]


def test_a_mistyped_job_setting_is_refused_with_the_known_ones():
    from reconciler.simulator import SimConfigError, job_from_mapping

    with pytest.raises(SimConfigError, match=r"unknown job settings: duraton \(known: .*duration"):
        job_from_mapping({"name": "x", "duraton": 5})


def test_a_request_cut_off_in_its_body_builds_nothing(simulator):
    """A client killed between a POST's headers and the end of its body: Jenkins never sees a whole request."""
    import base64
    import socket

    host, port = simulator.url.removeprefix("http://").rstrip("/").split(":")
    auth = base64.b64encode(b"alice:alice-api-token").decode()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"POST /job/deploy/buildWithParameters HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}"
                     "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nENV=prod"
                     .encode())
    time.sleep(0.3)
    assert simulator.builds("deploy") == [] and simulator.triggers("deploy") == []
