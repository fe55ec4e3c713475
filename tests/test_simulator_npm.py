"""The npm `jenkins` client as an external witness: every call it has, made by a small script of ours
(its package ships no tests) against the simulator, over loopback HTTP.

A call that fails is listed with its error. Some fail against a real Jenkins too, and the simulator
keeps Jenkins' answer rather than the client's expectation: `queue.cancel` wants a 302 where
Queue.Item.doCancelQueue has answered 204 since 2019 (JENKINS-21311), `get()` calls an undefined
function, and the credentials calls need the credentials plugin, which the simulator does not model.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import TOKEN, USER

NPM_JENKINS = "jenkins@1.1.0"
KNOWN_FAILURES = {"get", "queue.cancel", "credentials.create", "credentials.config.get", "credentials.config.set",
                  "credentials.exists", "credentials.list", "credentials.destroy"}
"""The calls that fail against Jenkins itself (see the module docstring)."""

SCRIPT = r"""
const Jenkins = require("jenkins");
const jenkins = new Jenkins({ baseUrl: process.argv[2] });
const XML = `<?xml version='1.1' encoding='UTF-8'?><project><description>npm</description><properties>
<hudson.model.ParametersDefinitionProperty><parameterDefinitions><hudson.model.StringParameterDefinition>
<name>VERSION</name><defaultValue>1</defaultValue></hudson.model.StringParameterDefinition></parameterDefinitions>
</hudson.model.ParametersDefinitionProperty></properties><disabled>false</disabled><builders/></project>`;
const VIEW = `<?xml version='1.1' encoding='UTF-8'?><hudson.model.ListView><name>npm-view</name>
<description>changed</description><jobNames><string>npm-job</string></jobNames></hudson.model.ListView>`;
const CRED = `<com.cloudbees.plugins.credentials.impl.UsernamePasswordCredentialsImpl><id>c1</id>
<username>u</username><password>p</password></com.cloudbees.plugins.credentials.impl.UsernamePasswordCredentialsImpl>`;
const results = [];
async function call(name, fn, check) {
  try {
    const value = await fn();
    if (check && !check(value)) throw new Error("unexpected answer: " + JSON.stringify(value).slice(0, 200));
    results.push({ name, ok: true });
    return value;
  } catch (err) {
    results.push({ name, ok: false, error: String(err && err.message || err).slice(0, 300) });
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await call("info", () => jenkins.info(), (v) => Array.isArray(v.jobs));
  await call("get", () => jenkins.get());
  await call("crumbIssuer.get", () => jenkins.crumbIssuer.get(), (v) => !!v.crumb);
  await call("job.create", () => jenkins.job.create("npm-job", XML));
  await call("job.exists", () => jenkins.job.exists("npm-job"), (v) => v === true);
  await call("job.get", () => jenkins.job.get("npm-job"), (v) => v.name === "npm-job");
  await call("job.config.get", () => jenkins.job.config("npm-job"), (v) => v.includes("<project>"));
  await call("job.config.set", () => jenkins.job.config("npm-job", XML.replace(">npm<", ">changed<")));
  await call("job.list", () => jenkins.job.list(), (v) => v.some((j) => j.name === "npm-job"));
  await call("job.copy", () => jenkins.job.copy("npm-job", "npm-copy"));
  await call("job.disable", () => jenkins.job.disable("npm-job"));
  await call("job.enable", () => jenkins.job.enable("npm-job"));
  const queued = await call("job.build", () => jenkins.job.build({ name: "npm-job", parameters: { VERSION: "2" } }),
                            (v) => Number.isInteger(v));
  await call("queue.item", () => jenkins.queue.item(queued || 1), (v) => typeof v.id === "number");
  await call("queue.list", () => jenkins.queue.list(), (v) => Array.isArray(v));
  await call("job.build.noParameters", () => jenkins.job.build("manual"), (v) => Number.isInteger(v));
  await sleep(100);
  await call("build.get", () => jenkins.build.get("manual", 1), (v) => v.building === true);
  await call("build.log", () => jenkins.build.log("manual", 1), (v) => v.includes("Started by"));
  await call("build.log.meta", () => jenkins.build.log("manual", 1, { meta: true, start: 0 }),
             (v) => v.more === true && Number(v.size) > 0);
  await call("build.stop", () => jenkins.build.stop("manual", 1));
  await call("build.logStream", () => new Promise((resolve, reject) => {
    const stream = jenkins.build.logStream("manual", 1, { delay: 50 });
    let text = "";
    stream.on("data", (t) => { text += t; });
    stream.on("error", reject);
    stream.on("end", () => resolve(text));
  }), (v) => v.includes("Finished: ABORTED"));
  await call("job.build.pipeline", () => jenkins.job.build({ name: "pipe", parameters: { N: "1" } }),
             (v) => Number.isInteger(v));
  await sleep(100);
  await call("build.term", () => jenkins.build.term("pipe", 1));
  const waiting = await call("job.build.delay", () => jenkins.job.build({ name: "manual", delay: "60sec" }));
  await call("queue.cancel", () => jenkins.queue.cancel(waiting || 1));
  await call("node.list", () => jenkins.node.list(), (v) => Array.isArray(v) && v.length === 1);
  await call("node.list.full", () => jenkins.node.list({ full: true }), (v) => Array.isArray(v.computer));
  await call("node.get", () => jenkins.node.get("master"), (v) => v.numExecutors >= 1);
  await call("node.exists", () => jenkins.node.exists("master"), (v) => v === true);
  await call("node.create", () => jenkins.node.create({ name: "agent1", labelString: "linux" }));
  await call("node.config.get", () => jenkins.node.config("agent1"), (v) => v.includes("agent1"));
  await call("node.config.set", () => jenkins.node.config("agent1",
    "<slave><name>agent1</name><numExecutors>3</numExecutors></slave>"));
  await call("node.disable", () => jenkins.node.disable("agent1", "maintenance"));
  await call("node.disable.again", () => jenkins.node.disable("agent1", "still maintenance"));
  await call("node.enable", () => jenkins.node.enable("agent1"));
  await call("node.toggleOffline", () => jenkins.node.toggleOffline("agent1", "off"));
  await call("node.changeOfflineCause", () => jenkins.node.changeOfflineCause("agent1", "why"));
  await call("node.disconnect", () => jenkins.node.disconnect("agent1", "bye"));
  await call("node.doDisconnect", () => jenkins.node.doDisconnect("agent1", "bye"));
  await call("node.destroy", () => jenkins.node.destroy("agent1"));
  await call("label.get", () => jenkins.label.get("built-in"), (v) => v.name === "built-in");
  await call("plugin.list", () => jenkins.plugin.list(), (v) => Array.isArray(v));
  await call("view.create", () => jenkins.view.create("npm-view", "list"));
  await call("view.exists", () => jenkins.view.exists("npm-view"), (v) => v === true);
  await call("view.get", () => jenkins.view.get("npm-view"), (v) => v.name === "npm-view");
  await call("view.list", () => jenkins.view.list(), (v) => v.some((x) => x.name === "npm-view"));
  await call("view.add", () => jenkins.view.add("npm-view", "npm-job"));
  await call("view.remove", () => jenkins.view.remove("npm-view", "npm-job"));
  await call("view.config.get", () => jenkins.view.config("npm-view"), (v) => v.includes("ListView"));
  await call("view.config.set", () => jenkins.view.config("npm-view", VIEW));
  await call("view.destroy", () => jenkins.view.destroy("npm-view"));
  await call("credentials.create", () => jenkins.credentials.create("/", "system", "_", CRED));
  await call("credentials.config.get", () => jenkins.credentials.config("c1", "/", "system", "_"));
  await call("credentials.config.set", () => jenkins.credentials.config("c1", "/", "system", "_", CRED));
  await call("credentials.exists", () => jenkins.credentials.exists("c1", "/", "system", "_"), (v) => v === true);
  await call("credentials.list", () => jenkins.credentials.list("/", "system", "_"));
  await call("credentials.destroy", () => jenkins.credentials.destroy("c1", "/", "system", "_"));
  await call("job.destroy", () => jenkins.job.destroy("npm-copy"));
  await call("job.delete", () => jenkins.job.delete("npm-job"));
  await call("job.exists.gone", () => jenkins.job.exists("npm-job"), (v) => v === false);
  console.log(JSON.stringify(results));
})();
"""


@pytest.fixture(scope="session")
def npm_jenkins(tmp_path_factory: pytest.TempPathFactory):
    """The pinned npm `jenkins` package, installed once per session into a temporary prefix."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the npm `jenkins` client (Debian: nodejs, npm)")
    prefix = tmp_path_factory.mktemp("npm-jenkins")
    try:
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                               "--no-package-lock", NPM_JENKINS], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {NPM_JENKINS} timed out (no registry?)")
    if done.returncode != 0:
        pytest.skip(f"npm install {NPM_JENKINS} failed: {done.stderr.strip()[-300:]}")
    script = prefix / "witness.js"
    script.write_text(SCRIPT)
    return node, prefix, script


def test_npm_jenkins_client_calls_against_the_simulator(make_simulator, npm_jenkins, capsys):
    node, prefix, script = npm_jenkins
    sim = make_simulator(quiet_period=0, users={USER: {"token": TOKEN, "full_name": "Alice Example",
                                                       "permissions": ["read", "build", "configure", "administer"]}})
    base = sim.url.replace("http://", f"http://{USER}:{TOKEN}@").rstrip("/")
    done = subprocess.run([node, str(script), base], capture_output=True, text=True, timeout=120,
                          env={"NODE_PATH": str(prefix / "node_modules"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    ok = [r["name"] for r in results if r["ok"]]
    failed = {r["name"]: r["error"] for r in results if not r["ok"]}
    with capsys.disabled():
        print(f"\nnpm jenkins ({NPM_JENKINS}): {len(ok)}/{len(results)} calls work against the simulator")
        for name, error in failed.items():
            print(f"  failed: {name}: {error}")
    assert set(failed) <= KNOWN_FAILURES, failed
    assert len(ok) >= len(results) - len(KNOWN_FAILURES)
