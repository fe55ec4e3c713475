"""Third-party Jenkins clients drive the simulator as they would drive Jenkins: python-jenkins,
jenkinsapi and api4jenkins, each through its common calls. Where one of them trips, the simulator
is what departs from Jenkins, not the client."""

from __future__ import annotations

import api4jenkins
import jenkins
import pytest
from jenkinsapi.jenkins import Jenkins as JenkinsApi

from .conftest import TOKEN, USER, wait_for

JOB_TOKEN = "deploy-job-token"


@pytest.fixture
def sim(make_simulator):
    return make_simulator(quiet_period=0.2, jobs=[
        {"name": "plain", "duration": 0},
        {"name": "deploy", "duration": None, "token": JOB_TOKEN, "concurrent": True,
         "parameters": [{"name": "ENV", "type": "choice", "choices": ["staging", "prod"]}, "VERSION"]},
        {"name": "flaky", "duration": 0, "result": ["SUCCESS", "FAILURE"]},
        {"name": "team/nested/pipe", "kind": "pipeline", "duration": None},
        {"name": "secret", "readers": ["reader"]},
    ])


def test_python_jenkins_triggers_follows_reads_and_stops(sim):
    server = jenkins.Jenkins(sim.url, username=USER, password=TOKEN, timeout=10)
    assert server.get_whoami()["id"] == USER
    assert server.get_version() == "2.479.3"

    plain = server.build_job("plain")
    item = wait_for(lambda: server.get_queue_item(plain).get("executable"), what="plain to leave the queue")
    assert item["number"] == 1
    queued = server.build_job("deploy", {"ENV": "prod", "VERSION": "2"}, token=JOB_TOKEN)
    number = wait_for(lambda: (server.get_queue_item(queued).get("executable") or {}).get("number"))
    info = server.get_build_info("deploy", number)
    params = {p["name"]: p["value"] for a in info["actions"] if "parameters" in a for p in a["parameters"]}
    assert params == {"ENV": "prod", "VERSION": "2"} and info["building"]
    assert "Started by remote host" in server.get_build_console_output("deploy", number)
    assert [b["number"] for b in server.get_running_builds() if b["name"] == "deploy"] == [number]
    server.stop_build("deploy", number)  # a 302 to the build's page, which python-jenkins then reads
    assert server.get_build_info("deploy", number)["result"] == "ABORTED"

    waiting = server.build_job("deploy", {"ENV": "staging", "VERSION": "3"}, token=JOB_TOKEN)
    server.cancel_queue(waiting)
    assert server.get_queue_item(waiting)["cancelled"] is True

    for _ in range(2):
        flaky_item = server.build_job("flaky")
        wait_for(lambda q=flaky_item: server.get_queue_item(q).get("executable"))
    wait_for(lambda: not server.get_job_info("flaky")["inQueue"])
    flaky = server.get_job_info("flaky")
    assert (flaky["lastStableBuild"]["number"], flaky["lastFailedBuild"]["number"]) == (1, 2)

    names = {j["fullname"] for j in server.get_all_jobs()}
    assert {"plain", "deploy", "team/nested/pipe"} <= names and "secret" not in names
    assert server.get_job_info("team/nested/pipe")["_class"].endswith("WorkflowJob")
    with pytest.raises(jenkins.JenkinsException, match=r"job\[secret\] does not exist"):
        server.get_job_info("secret")  # an unreadable job answers as a missing one: 404


def test_jenkinsapi_connects_lists_invokes_and_reads_a_build(sim):
    api = JenkinsApi(sim.url, username=USER, password=TOKEN, timeout=10)
    assert {"plain", "deploy"} <= set(api.keys())
    queue_item = api["deploy"].invoke(build_params={"ENV": "prod", "VERSION": "9"}, securitytoken=JOB_TOKEN)
    build = queue_item.block_until_building(delay=0.1)
    assert build.get_number() == 1 and build.is_running()
    assert build.get_params() == {"ENV": "prod", "VERSION": "9"}
    sim.finish("deploy", 1, "SUCCESS")
    assert api["deploy"].get_build(1).get_status() == "SUCCESS"
    assert api["deploy"].get_last_stable_buildnumber() == 1


def test_api4jenkins_triggers_a_folder_job_and_finds_it_running(sim):
    client = api4jenkins.Jenkins(sim.url, auth=(USER, TOKEN))
    assert client.me.api_json()["id"] == USER
    assert client.get_job("team/nested/pipe").api_json()["fullName"] == "team/nested/pipe"
    item = client.build_job("team/nested/pipe")
    build = wait_for(item.get_build, what="the pipeline to start")
    assert build.api_json()["_class"].endswith("WorkflowRun")
    assert [b.url for b in client.nodes.iter_builds()] == [build.url]
    assert "Started by user" in "".join(build.console_text())
