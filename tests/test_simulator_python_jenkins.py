"""python-jenkins as an external witness beyond triggering: the calls a client makes to set a Jenkins up
(jobs from config.xml, views, nodes, quiet-down), counted and printed like the other clients'.

Calls that need a plugin the simulator does not model (credentials, promotions, Pipeline stages, test
reports, env vars, the script console, plugin installs, workspaces) are not in the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jenkins

from .conftest import TOKEN, USER

CONFIG = """<?xml version='1.1' encoding='UTF-8'?><project><description>pj</description><properties>
<hudson.model.ParametersDefinitionProperty><parameterDefinitions><hudson.model.BooleanParameterDefinition>
<name>FAST</name><defaultValue>false</defaultValue></hudson.model.BooleanParameterDefinition>
</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties><disabled>false</disabled>
<builders/></project>"""
VIEW = "<hudson.model.ListView><name>pj-view</name><jobNames><string>pj</string></jobNames></hudson.model.ListView>"


def test_python_jenkins_sets_up_a_jenkins(make_simulator, capsys):
    sim = make_simulator(quiet_period=0, users={USER: {"token": TOKEN, "full_name": "Alice Example",
                                                       "permissions": ["read", "build", "configure", "administer"]}})
    server = jenkins.Jenkins(sim.url, username=USER, password=TOKEN, timeout=10)
    results: list[tuple[str, str | None]] = []

    def call(name: str, fn: Callable[[], Any], check: Callable[[Any], bool] | None = None) -> Any:
        try:
            value = fn()
            if check is not None and not check(value):
                raise AssertionError(f"unexpected answer: {str(value)[:200]}")
            results.append((name, None))
            return value
        except Exception as e:  # every failure is reported, none stops the others
            results.append((name, f"{type(e).__name__}: {str(e)[:200]}"))
            return None

    call("get_whoami", server.get_whoami, lambda v: v["id"] == USER)  # authenticates the session first
    call("get_version", server.get_version, lambda v: v == "2.479.3")
    call("get_info", server.get_info, lambda v: v["quietingDown"] is False)
    call("wait_for_normal_op", lambda: server.wait_for_normal_op(5), bool)
    call("create_job", lambda: server.create_job("pj", CONFIG))
    call("job_exists", lambda: server.job_exists("pj"), bool)
    call("assert_job_exists", lambda: server.assert_job_exists("pj"))
    call("get_job_config", lambda: server.get_job_config("pj"), lambda v: "<name>FAST</name>" in v)
    call("reconfig_job", lambda: server.reconfig_job("pj", CONFIG.replace(">pj<", ">changed<")))
    call("upsert_job", lambda: server.upsert_job("pj", CONFIG))
    call("get_job_info", lambda: server.get_job_info("pj"), lambda v: v["description"] == "pj")
    call("get_job_name", lambda: server.get_job_name("pj"), lambda v: v == "pj")
    call("get_jobs", server.get_jobs, lambda v: any(j["name"] == "pj" for j in v))
    call("jobs_count", server.jobs_count, lambda v: v >= 1)
    call("is_folder", lambda: server.is_folder("pj"), lambda v: v is False)
    call("disable_job", lambda: server.disable_job("pj"))
    call("get_job_info.disabled", lambda: server.get_job_info("pj"), lambda v: v["color"] == "disabled")
    call("enable_job", lambda: server.enable_job("pj"))
    call("copy_job", lambda: server.copy_job("pj", "pj-copy"))
    call("rename_job", lambda: server.rename_job("pj-copy", "pj-renamed"))
    call("delete_job", lambda: server.delete_job("pj-renamed"))
    queue_id = call("build_job", lambda: server.build_job("pj", {"FAST": "on"}), lambda v: isinstance(v, int))
    call("get_queue_item", lambda: server.get_queue_item(queue_id or 1), lambda v: "executable" in v)
    call("get_build_info", lambda: server.get_build_info("pj", 1),
         lambda v: v["actions"][0]["parameters"][0]["value"] is False and "inProgress" in v)
    call("get_build_console_output", lambda: server.get_build_console_output("pj", 1), lambda v: "FAST" in v)
    call("build_job.manual", lambda: server.build_job("manual"))
    time.sleep(0.05)
    call("get_running_builds", server.get_running_builds, lambda v: any(b["name"] == "manual" for b in v))
    call("stop_build", lambda: server.stop_build("manual", 1))
    call("delete_build", lambda: server.delete_build("pj", 1))
    waiting = call("build_job.delayed", lambda: server.build_job("pj", {"FAST": "true", "delay": "60sec"}))
    call("get_queue_info", server.get_queue_info, lambda v: len(v) == 1)
    call("cancel_queue", lambda: server.cancel_queue(waiting or 1))
    call("create_view", lambda: server.create_view("pj-view", VIEW))
    call("view_exists", lambda: server.view_exists("pj-view"), bool)
    call("get_views", server.get_views, lambda v: {x["name"] for x in v} == {"all", "pj-view"})
    call("get_view_name", lambda: server.get_view_name("pj-view"), lambda v: v == "pj-view")
    call("get_view_config", lambda: server.get_view_config("pj-view"), lambda v: "pj" in v)
    call("reconfig_view", lambda: server.reconfig_view("pj-view", VIEW))
    call("delete_view", lambda: server.delete_view("pj-view"))
    call("get_nodes", server.get_nodes, lambda v: v[0]["name"] == "Built-In Node")
    call("get_node_info", lambda: server.get_node_info("(built-in)"), lambda v: "offline" in v)
    call("create_node", lambda: server.create_node("pj-agent", numExecutors=1, labels="linux"))
    call("node_exists", lambda: server.node_exists("pj-agent"), bool)
    call("get_node_config", lambda: server.get_node_config("pj-agent"), lambda v: "pj-agent" in v)
    call("reconfig_node", lambda: server.reconfig_node("pj-agent", "<slave><name>pj-agent</name></slave>"))
    call("disable_node", lambda: server.disable_node("pj-agent", "maintenance"))
    call("enable_node", lambda: server.enable_node("pj-agent"))
    call("get_nodes_with_info", server.get_nodes_with_info, lambda v: len(v) == 2)
    call("delete_node", lambda: server.delete_node("pj-agent"))
    call("get_plugins", server.get_plugins, lambda v: len(v) >= 1)
    call("quiet_down", server.quiet_down)
    call("get_info.quietingDown", server.get_info, lambda v: v["quietingDown"] is True)
    call("delete_job.last", lambda: server.delete_job("pj"))

    failed = {name: error for name, error in results if error is not None}
    with capsys.disabled():
        print(f"\npython-jenkins: {len(results) - len(failed)}/{len(results)} set-up calls work against the simulator")
        for name, error in failed.items():
            print(f"  failed: {name}: {error}")
    assert not failed, failed
