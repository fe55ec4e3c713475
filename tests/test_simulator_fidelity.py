"""The simulator answers as Jenkins' source says it does; each test names the source it follows
(jenkinsci/jenkins core unless it says Stapler: jenkinsci/stapler)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests

from reconciler.simulator import SimConfigError, from_mapping, job_from_mapping

from .conftest import TOKEN, USER, wait_for

AUTH = (USER, TOKEN)
ADMIN = {"alice": {"token": TOKEN, "full_name": "Alice Example",
                   "permissions": ["read", "build", "configure", "administer"]},
         "reader": {"token": "reader-token", "permissions": ["read"]}}


def post(sim, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.post(sim.url + path, allow_redirects=False, timeout=10, **kwargs)


def get(sim, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.get(sim.url + path, allow_redirects=False, timeout=10, **kwargs)


# -- 1. a result while building -------------------------------------------------------------

def test_a_pipeline_reports_unstable_mid_run_and_ends_failure(make_simulator):
    """hudson/model/Run.java: setResult is allowed while BUILDING and only makes the result worse;
    isBuilding() and isInProgress() are exported. A finished build is `building: false`, not `result`."""
    sim = make_simulator(jobs=[{"name": "p", "kind": "pipeline", "duration": 0.6, "result": "FAILURE",
                                "result_while_building": "UNSTABLE", "result_at": 0.1}])
    post(sim, "job/p/build")
    time.sleep(0.2)
    build = get(sim, "job/p/1/api/json").json()
    assert (build["building"], build["inProgress"], build["result"]) == (True, True, "UNSTABLE")
    assert build["duration"] == 0
    assert get(sim, "job/p/api/json").json()["lastCompletedBuild"] is None
    build = wait_for(lambda: (b := get(sim, "job/p/1/api/json").json())["building"] is False and b)
    assert (build["inProgress"], build["result"]) == (False, "FAILURE")
    assert build["duration"] >= 500


def test_set_result_while_building_only_gets_worse(simulator):
    """hudson/model/Run.java setResult: `if (result == null || r.isWorseThan(result)) result = r`."""
    post(simulator, "job/manual/build")
    simulator.set_result("manual", 1, "FAILURE")
    simulator.set_result("manual", 1, "UNSTABLE")  # better: ignored
    build = get(simulator, "job/manual/1/api/json").json()
    assert (build["building"], build["result"]) == (True, "FAILURE")
    simulator.finish("manual", 1, "SUCCESS")
    assert get(simulator, "job/manual/1/api/json").json()["result"] == "FAILURE"


def test_a_freestyle_build_runs_its_publishers_after_its_result_is_set(make_simulator):
    """hudson/model/AbstractBuild.java: the builders set the result (setResult), then post2 runs the
    publishers while the build is still BUILDING; then Run.State.POST_PRODUCTION (Run.isBuilding false,
    Run.isInProgress true, the log still written: Run.isLogUpdated) before COMPLETED."""
    sim = make_simulator(jobs=[{"name": "f", "duration": 0.5, "result": "FAILURE", "publishers": 0.4,
                                "post_production": 0.3}])
    post(sim, "job/f/build")
    time.sleep(0.2)
    build = get(sim, "job/f/1/api/json").json()
    assert (build["building"], build["inProgress"], build["result"]) == (True, True, "FAILURE")
    assert build["builtOn"] == "" and build["executor"] is not None
    time.sleep(0.4)
    build = get(sim, "job/f/1/api/json").json()
    assert (build["building"], build["inProgress"], build["result"]) == (False, True, "FAILURE")
    assert get(sim, "job/f/1/logText/progressiveText").headers.get("X-More-Data") == "true"
    # PeepholePermalink: completed means `!run.isBuilding()`
    assert get(sim, "job/f/api/json").json()["lastCompletedBuild"]["number"] == 1
    build = wait_for(lambda: (b := get(sim, "job/f/1/api/json").json())["inProgress"] is False and b)
    assert build["executor"] is None
    assert "X-More-Data" not in get(sim, "job/f/1/logText/progressiveText").headers


def test_new_job_settings_are_validated():
    with pytest.raises(SimConfigError, match="result_while_building 'BAD'"):
        job_from_mapping({"name": "x", "result_while_building": "BAD"})
    with pytest.raises(SimConfigError, match="only get worse"):
        job_from_mapping({"name": "x", "result": "SUCCESS", "result_while_building": "UNSTABLE"})
    with pytest.raises(SimConfigError, match="`publishers` needs a `duration`"):
        job_from_mapping({"name": "x", "duration": None, "publishers": 1})
    with pytest.raises(SimConfigError, match="`post_production` is a number"):
        job_from_mapping({"name": "x", "post_production": "soon"})
    with pytest.raises(SimConfigError, match="not a Jenkins version"):
        from_mapping({"version": "latest"})
    with pytest.raises(SimConfigError, match="unknown permissions admin"):
        from_mapping({"users": {"a": {"token": "t", "permissions": ["admin"]}}})


# -- 2. answers by version, and 500s that say nothing ----------------------------------------

@pytest.mark.parametrize(("version", "status"), [("2.462.3", 500), ("2.528.1", 400)])
def test_build_with_parameters_on_a_job_without_parameters(make_simulator, version, status):
    """jenkins/model/ParameterizedJobMixIn.java doBuildWithParameters: since jenkinsci/jenkins#10954
    (2.524) `errorWithoutStack(SC_BAD_REQUEST, getFullName() + " is not parameterized")`; before, an
    IllegalStateException("This build is not parameterized!"), rendered by oops.jelly as a bare 500."""
    sim = make_simulator(version=version, jobs=[{"name": "team/plain"}])
    r = post(sim, "job/team/job/plain/buildWithParameters", params={"A": "1"})
    assert (r.status_code, r.headers["X-Jenkins"]) == (status, version)
    if status == 400:
        assert "team/plain is not parameterized" in r.text
    else:
        assert "not parameterized" not in r.text and re.search(r"Logging ID=[0-9a-f-]{36}", r.text)


def test_an_illegal_choice_is_a_500_that_names_only_a_logging_id(simulator):
    """hudson/model/ChoiceParameterDefinition.java checkValue throws IllegalArgumentException("Illegal
    choice for parameter …"); jenkins/model/Jenkins/oops.jelly shows "A problem occurred while processing
    the request" and "Logging ID=" only, the stack trace only with SHOW_STACK_TRACE."""
    r = post(simulator, "job/deploy/buildWithParameters", params={"ENV": "moon"})
    assert r.status_code == 500
    assert "A problem occurred while processing the request" in r.text
    logging_id = re.search(r"Logging ID=([0-9a-f-]{36})", r.text).group(1)
    assert "Illegal choice" not in r.text and "moon" not in r.text
    assert dict(simulator.state.oopses)[logging_id].endswith("Illegal choice for parameter ENV: moon")
    assert simulator.builds("deploy") == []


def test_show_stack_trace_shows_the_exception(make_simulator):
    """jenkins/model/Jenkins/oops.jelly: `<j:if test="${app.shouldShowStackTrace()}">`."""
    sim = make_simulator(show_stack_trace=True)
    assert "Illegal choice for parameter ENV: moon" in \
        post(sim, "job/deploy/buildWithParameters", params={"ENV": "moon"}).text


def test_a_repeated_parameter_is_a_500(simulator):
    """hudson/model/SimpleParameterDefinition.java createValue(StaplerRequest2): more than one value is
    IllegalArgumentException("Illegal number of parameter values for NAME: N")."""
    r = post(simulator, "job/deploy/buildWithParameters", params=[("VERSION", "1"), ("VERSION", "2")])
    assert r.status_code == 500 and "Logging ID=" in r.text and "Illegal number" not in r.text


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("TRUE", True), ("on", False), ("yes", False),
                                            ("1", False), ("false", False)])
def test_a_boolean_parameter_is_true_only_for_true(simulator, raw, value):
    """hudson/model/BooleanParameterDefinition.java createValue(String): Boolean.parseBoolean, reached from
    SimpleParameterDefinition.createValue(StaplerRequest2) for a query or form field."""
    post(simulator, "job/deploy/buildWithParameters", params={"DRY_RUN": raw})
    build = get(simulator, "job/deploy/1/api/json").json()
    assert {p["name"]: p.get("value") for p in build["actions"][0]["parameters"]}["DRY_RUN"] is value


def test_python_m_reconciler_simulator_takes_version_and_log(tmp_path):
    """The simulator started as a given Jenkins version answers with it in X-Jenkins (every response
    carries it: jenkins/model/Jenkins.java VERSION, set by the filter that adds X-Jenkins)."""
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.simulator", "--port", "0", "--version",
                             "2.528.1", "--log", str(log), "--job", "plain", "--user", "alice:t0k3n"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        r = requests.post(url + "job/plain/buildWithParameters", auth=("alice", "t0k3n"), timeout=10)
        assert (r.status_code, r.headers["X-Jenkins"]) == (400, "2.528.1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    line = json.loads(log.read_text().splitlines()[-1])
    assert (line["method"], line["path"], line["status"], line["user"]) == \
        ("POST", "/job/plain/buildWithParameters", 400, "alice")


# -- 3. Stapler and queue details ------------------------------------------------------------

def test_empty_path_segments_are_skipped(simulator):
    """Stapler's TokenList: `new StringTokenizer(url, "/\\\\")`, which drops empty tokens."""
    assert get(simulator, "/job//plain//api/json").json()["name"] == "plain"
    assert post(simulator, "/job/plain//build").status_code == 201


def test_tree_wildcard_returns_every_field(simulator):
    """Stapler's NamedPathPruner.accept: a property's own subtree, else the subtree of `*`."""
    post(simulator, "job/plain/build")
    builds = get(simulator, "job/plain/api/json", params={"tree": "builds[*]"}).json()["builds"]
    assert {"number", "result", "building", "inProgress", "url", "actions"} <= set(builds[0])
    job = get(simulator, "job/plain/api/json", params={"tree": "*"}).json()
    assert {"name", "color", "builds", "healthReport", "lastUnstableBuild"} <= set(job)


def test_location_is_built_from_the_request_host_and_urls_from_the_root_url(make_simulator):
    """Stapler ResponseImpl.sendRedirect(int, String) makes the Location absolute from the request's
    scheme, Host and port; JSON `url` fields use Jenkins' configured root URL (Jenkins.getRootUrl)."""
    sim = make_simulator(root_url="https://jenkins.example.com/ci/")
    port = sim.url.rsplit(":", 1)[1].rstrip("/")
    r = post(sim, "job/plain/build", headers={"Host": f"localhost:{port}"})
    assert r.headers["Location"] == f"http://localhost:{port}/queue/item/1/"
    item = get(sim, "queue/item/1/api/json").json()
    assert item["task"]["url"] == "https://jenkins.example.com/ci/job/plain/"


def test_cancel_queue_on_the_item_itself(make_simulator):
    """hudson/model/Queue.java Item.doCancelQueue: 204, also for an item that already left (nothing is
    cancelled then); Queue.doCancelItem keeps its 204/500/404."""
    sim = make_simulator(quiet_period=60)
    post(sim, "job/plain/build")
    assert post(sim, "queue/item/1/cancelQueue").status_code == 204
    assert get(sim, "queue/item/1/api/json").json()["cancelled"] is True
    assert post(sim, "queue/item/1/cancelQueue").status_code == 204
    assert post(sim, "queue/item/99/cancelQueue").status_code == 404
    assert get(sim, "queue/item/1/cancelQueue").status_code == 405
    post(sim, "job/plain/build")
    assert post(sim, "queue/cancelItem", params={"id": "2"}).status_code == 204


def test_progressive_text_starts_over_when_start_is_past_the_end(simulator):
    """Stapler's LargeText.doProgressText: `if (source.length() < start) start = 0; // text rolled over`;
    X-Text-Size is where the next read starts; a `start` that is no number is a NumberFormatException."""
    post(simulator, "job/manual/build")
    whole = get(simulator, "job/manual/1/logText/progressiveText").content
    r = get(simulator, "job/manual/1/logText/progressiveText", params={"start": 10_000})
    assert r.content == whole and r.headers["X-Text-Size"] == str(len(whole))
    r = get(simulator, "job/manual/1/logText/progressiveText", params={"start": len(whole)})
    assert r.content == b"" and r.headers["X-More-Data"] == "true"
    assert get(simulator, "job/manual/1/logText/progressiveText", params={"start": "x"}).status_code == 500


def test_depth_expands_nested_objects(simulator):
    """Stapler's Api.doJson `depth`: nested objects are exported in full one level deeper per unit."""
    post(simulator, "job/plain/build")
    shallow = get(simulator, "job/plain/api/json").json()["builds"][0]
    deep = get(simulator, "job/plain/api/json", params={"depth": 1}).json()["builds"][0]
    assert "result" not in shallow and deep["result"] == "SUCCESS"
    root = get(simulator, "api/json", params={"depth": 1}).json()
    assert "nextBuildNumber" in next(j for j in root["jobs"] if j["name"] == "plain")


def test_a_blocked_item_keeps_its_buildable_start(make_simulator):
    """hudson/model/Queue.java NotWaitingItem.buildableStartMilliseconds: set when the item leaves the
    waiting list, exported on BlockedItem and BuildableItem, and kept as it moves between them."""
    sim = make_simulator(executors=1)
    post(sim, "job/serial/buildWithParameters", params={"N": "1"})
    before = int(time.time() * 1000)
    post(sim, "job/serial/buildWithParameters", params={"N": "2"})
    blocked = get(sim, "queue/item/2/api/json").json()
    assert blocked["_class"] == "hudson.model.Queue$BlockedItem"
    assert before - 50 <= blocked["buildableStartMilliseconds"] <= int(time.time() * 1000)
    post(sim, "job/plain/build")  # takes no executor while serial #1 holds the only one
    sim.finish("serial", 1)
    assert get(sim, "queue/item/2/api/json").json()["executable"]["number"] == 2


def test_quiet_down_queues_but_starts_nothing(make_simulator):
    """jenkins/model/Jenkins.java doQuietDown / doCancelQuietDown (HttpRedirect "."; `quietingDown` is
    exported) and hudson/model/Queue.java isBlockedByShutdown: items stay in the queue until cancelled."""
    sim = make_simulator(users=ADMIN)
    assert post(sim, "quietDown", auth=("reader", "reader-token")).status_code == 403
    r = post(sim, "quietDown")
    assert r.status_code == 302 and r.headers["Location"] == sim.url
    assert get(sim, "api/json").json()["quietingDown"] is True
    assert post(sim, "job/plain/build").status_code == 201
    item = get(sim, "queue/item/1/api/json").json()
    assert item["_class"] == "hudson.model.Queue$BuildableItem" and sim.builds("plain") == []
    assert post(sim, "cancelQuietDown").status_code == 302
    assert get(sim, "api/json").json()["quietingDown"] is False
    assert get(sim, "queue/item/1/api/json").json()["executable"]["number"] == 1


# -- 4. exported fields ------------------------------------------------------------------------

def test_builds_and_jobs_export_what_clients_read(make_simulator):
    """hudson/model/Run.java (artifacts, keepLog, inProgress, executor), AbstractBuild (builtOn,
    changeSet, culprits), WorkflowRun (changeSets); Job.java lastUnstableBuild and healthReport
    (Job.getBuildHealthReports: the share of recent builds that did not fail)."""
    sim = make_simulator(jobs=[{"name": "f", "result": ["SUCCESS", "UNSTABLE", "FAILURE"]},
                               {"name": "p", "kind": "pipeline"}])
    for _ in range(3):
        post(sim, "job/f/build", params={"delay": "0"})
    post(sim, "job/p/build")
    build = get(sim, "job/f/3/api/json").json()
    for key in ("artifacts", "builtOn", "changeSet", "culprits", "keepLog", "inProgress", "executor"):
        assert key in build
    assert (build["keepLog"], build["inProgress"], build["executor"]) == (False, False, None)
    assert "changeSets" in get(sim, "job/p/1/api/json").json()
    job = get(sim, "job/f/api/json").json()
    assert job["lastUnstableBuild"]["number"] == 2 and job["lastSuccessfulBuild"]["number"] == 2
    assert job["healthReport"][0]["score"] == 66
    assert post(sim, "job/f/1/toggleLogKeep", auth=("reader", "reader-token")).status_code == 403


# -- 5. setting a Jenkins up ---------------------------------------------------------------------

CONFIG = """<?xml version='1.1' encoding='UTF-8'?>
<project><description>made by a client</description><properties>
<hudson.model.ParametersDefinitionProperty><parameterDefinitions>
<hudson.model.StringParameterDefinition><name>VERSION</name><defaultValue>1.0</defaultValue></hudson.model.StringParameterDefinition>
<hudson.model.ChoiceParameterDefinition><name>ENV</name><choices class="java.util.Arrays$ArrayList">
<a class="string-array"><string>staging</string><string>prod</string></a></choices>
</hudson.model.ChoiceParameterDefinition>
<hudson.model.BooleanParameterDefinition><name>DRY</name><defaultValue>true</defaultValue></hudson.model.BooleanParameterDefinition>
</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>
<disabled>false</disabled><concurrentBuild>true</concurrentBuild><builders/></project>"""
XML = {"Content-Type": "text/xml; charset=utf-8"}


def test_create_read_update_disable_and_delete_a_job(make_simulator):
    """hudson/model/ItemGroupMixIn.java createTopLevelItem (XML body: 200; an existing name: a Failure,
    400), AbstractItem.doConfigDotXml (GET reads, POST updates), ParameterizedJob.doDisable/doEnable
    (HttpRedirect "."), ParameterizedJobMixIn.doBuild (409 when not buildable), AbstractItem.doDoDelete."""
    sim = make_simulator(users=ADMIN, jobs=[])
    assert post(sim, "createItem", params={"name": "made"}, data=CONFIG, headers=XML).status_code == 200
    assert post(sim, "createItem", params={"name": "made"}, data=CONFIG, headers=XML).status_code == 400
    assert post(sim, "createItem", params={"name": "x"}, data=CONFIG, headers=XML,
                auth=("reader", "reader-token")).status_code == 403
    job = get(sim, "job/made/api/json").json()
    definitions = {d["name"]: d for d in job["property"][0]["parameterDefinitions"]}
    assert definitions["ENV"]["choices"] == ["staging", "prod"]
    assert definitions["DRY"]["defaultParameterValue"]["value"] is True
    assert job["description"] == "made by a client"
    assert post(sim, "job/made/buildWithParameters", params={"ENV": "nope"}).status_code == 500
    assert get(sim, "job/made/config.xml").text == CONFIG
    assert post(sim, "job/made/config.xml", data=CONFIG.replace("<string>prod</string>", ""),
                headers=XML).status_code == 200
    assert get(sim, "job/made/api/json").json()["property"][0]["parameterDefinitions"][1]["choices"] == ["staging"]

    r = post(sim, "job/made/disable")
    assert r.status_code == 302 and r.headers["Location"] == sim.url + "job/made/"
    job = get(sim, "job/made/api/json").json()
    assert (job["color"], job["buildable"]) == ("disabled", False)
    assert post(sim, "job/made/buildWithParameters").status_code == 409
    assert post(sim, "job/made/enable").status_code == 302
    assert post(sim, "job/made/buildWithParameters").status_code == 201
    assert post(sim, "job/made/doDelete").status_code == 302
    assert get(sim, "job/made/api/json").status_code == 404


def test_created_xml_is_read_without_entities(make_simulator):
    """Jenkins reads config.xml with XStream and no DTD; the simulator refuses one outright."""
    sim = make_simulator(users=ADMIN, jobs=[])
    evil = '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><project>&x;</project>'
    assert post(sim, "createItem", params={"name": "evil"}, data=evil, headers=XML).status_code == 500
    assert get(sim, "job/evil/api/json").status_code == 404


def test_list_views(make_simulator):
    """hudson/model/View.java create (XML: 200; mode form: 302), doDoDelete; hudson/model/ListView.java
    doAddJobToView / doRemoveJobFromView (200, a Failure for an unknown job)."""
    sim = make_simulator(users=ADMIN, views=[{"name": "ops", "jobs": ["plain"]}])
    assert [v["name"] for v in get(sim, "api/json").json()["views"]] == ["all", "ops"]
    assert [j["name"] for j in get(sim, "view/ops/api/json").json()["jobs"]] == ["plain"]
    r = post(sim, "createView", data={"name": "mine", "mode": "hudson.model.ListView", "json": "{}"})
    assert r.status_code == 302
    assert post(sim, "view/mine/addJobToView", params={"name": "deploy"}).status_code == 200
    assert post(sim, "view/mine/addJobToView", params={"name": "nope"}).status_code == 400
    assert [j["name"] for j in get(sim, "view/mine/api/json").json()["jobs"]] == ["deploy"]
    assert "<string>deploy</string>" in get(sim, "view/mine/config.xml").text
    assert post(sim, "view/mine/removeJobFromView", params={"name": "deploy"}).status_code == 200
    assert get(sim, "view/mine/api/json").json()["jobs"] == []
    assert post(sim, "view/mine/doDelete").status_code == 302
    assert get(sim, "view/mine/api/json").status_code == 404
    assert post(sim, "view/all/doDelete").status_code == 400


# -- 6. the request log ------------------------------------------------------------------------

def test_request_log_has_one_json_line_per_request_and_no_secret(make_simulator, tmp_path):
    """What was sent, for a user debugging a spec; never the Authorization header, a token or a
    password parameter's value."""
    log = tmp_path / "requests.jsonl"
    sim = make_simulator(log=str(log))
    post(sim, "job/deploy/buildWithParameters", params={"token": "deploy-job-token", "SECRET": "hunter2",
                                                        "VERSION": "7"})
    get(sim, "job/nope/api/json")
    sim.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["method"], x["path"], x["status"], x["user"]) for x in lines] == [
        ("POST", "/job/deploy/buildWithParameters", 201, USER), ("GET", "/job/nope/api/json", 404, USER)]
    assert lines[0]["query"]["VERSION"] == ["7"] and lines[0]["time"].endswith("Z")
    text = log.read_text()
    for secret in ("deploy-job-token", "hunter2", TOKEN, "Authorization", "Basic "):
        assert secret not in text
