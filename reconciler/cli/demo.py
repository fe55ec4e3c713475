"""`reconciler demo`: the daemon on ./triggers against a bundled simulator, so a newcomer sees it work."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from reconciler import logs
from reconciler.config import Server
from reconciler.service.daemon import assemble
from reconciler.service.probes import serve
from reconciler.simulator import Simulator, from_mapping

DEMO_JOBS = [
    {"name": "deploy", "duration": 2, "parameters": [
        {"name": "ENV", "type": "choice", "choices": ["staging", "production"]},
        {"name": "VERSION", "default": "1.0.0"}]},
    {"name": "qa/smoke tests", "duration": 3, "result": ["UNSTABLE", "SUCCESS"],
     "parameters": [{"name": "SUITE", "default": "full"}, "RUN_ID"]},
    {"name": "team a/cleanup", "duration": 1},
]


def run_demo(triggers: Path, workdir: Path, *, keep_running: bool = False) -> int:
    user, token, job_token = "demo", secrets.token_urlsafe(16), secrets.token_urlsafe(12)
    logs.add_secrets([token, job_token])
    jobs = [{**job, "token": job_token} for job in DEMO_JOBS]
    sim = Simulator(from_mapping({"quiet_period": 1, "executors": 2, "jobs": jobs,
                                  "users": {user: {"token": token, "full_name": "Demo Bot"}}})).start()
    shutil.rmtree(workdir, ignore_errors=True)
    log = logs.get()
    log.info("demo_started", jenkins=sim.url, triggers=str(triggers), workdir=str(workdir))
    server = Server(name="default", url=sim.url, user=user, token=token, job_token=job_token)
    daemon = assemble(triggers, workdir / "state.db", workdir / "history", {"default": server}, poll_max=0.5)
    try:
        if keep_running:
            [page] = serve(daemon, None, web_listen="127.0.0.1:0")
            print(f"\nThe daemon keeps watching {triggers} against the simulated Jenkins at {sim.url}; try:\n"
                  f"  the web page: http://{page.address}/\n"
                  f"  edit a spec under {triggers} (bump its `run:`): it fires within a second\n"
                  f"  reconciler status --triggers {triggers} --state {workdir / 'state.db'}\n"
                  f"  reconciler history deploy-staging --history {workdir / 'history'}\n"
                  "Ctrl-C ends the demo.\n", flush=True)
            try:
                daemon.run(daemon.executor.stop)
            finally:
                page.stop()
            return 0
        daemon.bootstrap()
        daemon.pass_once()
        daemon.executor.wait_idle()
        daemon.executor.shutdown()  # lets the last log lines out before the summary
        print("\nWhat Jenkins (simulated) built:")
        for name in sorted(sim.state.jenkins.jobs):
            for build in sim.builds(name):
                params = ", ".join(f"{p.name}={v}" for p, v in build.parameters)
                print(f"  {name} #{build.number}: {build.result}  ({params or 'no parameters'})")
                print(f"      {build.causes[0]['shortDescription']}")
        print(f"\nHistory written under {workdir / 'history'}; try:\n"
              f"  reconciler status --state {workdir / 'state.db'}\n"
              f"  reconciler history deploy-staging --history {workdir / 'history'}\n"
              f"  reconciler demo --keep-running    (keeps going, and serves the web page at an address it prints)")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        daemon.close()
        sim.stop()
