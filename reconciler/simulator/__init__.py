"""A Jenkins stand-in that speaks Jenkins' remote API over real HTTP, and misbehaves on request.

It imports nothing from the reconciler: it plays the far side of the wire.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import SimConfig, SimConfigError, User, from_mapping, job_from_mapping, load, user_from_mapping
from .model import Build, JobDef, ParamDef
from .server import Fault, Request, SimulatedJenkins, _Server

__all__ = ["Build", "Fault", "JobDef", "ParamDef", "Request", "SimConfig", "SimConfigError",
           "Simulator", "User", "from_mapping", "job_from_mapping", "load", "running",
           "user_from_mapping"]


class Simulator:
    """A running simulated Jenkins, with the handles tests need to steer and inspect it."""

    def __init__(self, config: SimConfig, port: int = 0, tls: ssl.SSLContext | None = None):
        self.state = SimulatedJenkins(config)
        self._server = _Server(self.state, port, tls)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/"
        self.state.root = config.root_url or self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="jenkins-simulator",
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.state.log_file is not None:
            self.state.log_file.close()

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.5)

    # -- what tests steer -------------------------------------------------------------------
    def fault(self, **kwargs: Any) -> Fault:
        """Inject a fault, e.g. `fault(path="/build$", status=503, times=2)`; see Fault."""
        fault = Fault(**kwargs)
        with self.state._lock:
            self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.state._lock:
            self.state.faults.clear()

    def sso(self) -> Fault:
        """Answer everything with a 302 to a login page on another host, as an SSO proxy does."""
        return self.fault(sso=True)

    def expire_crumbs(self) -> None:
        self.state.expire_crumbs()

    def restart(self) -> None:
        self.state.jenkins.restart()
        self.state.expire_crumbs()

    def finish(self, job: str, number: int | None = None, result: str | None = None) -> Build:
        """End a running build's BUILDING phase now (its result only gets worse than one set before)."""
        return self.state.jenkins.finish(job, number, result)

    def set_result(self, job: str, number: int, result: str) -> Build:
        """Run.setResult on a build that is still building, as a Pipeline's `unstable` step does."""
        jenkins = self.state.jenkins
        build = jenkins.build(jenkins.job(job), number)
        jenkins.set_result(build, result)
        return build

    # -- what tests read --------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self.state._lock:
            return list(self.state.requests)

    def triggers(self, job: str | None = None) -> list[Request]:
        """The build requests Jenkins accepted (201), optionally for one job's full name."""
        out = []
        for r in self.requests:
            if r.method == "POST" and r.status == 201 and r.path.rsplit("/", 1)[-1] in \
                    ("build", "buildWithParameters"):
                name = "/".join(r.path.split("/")[2:-1:2])
                if job is None or name == job:
                    out.append(r)
        return out

    def builds(self, job: str) -> list[Build]:
        self.state.jenkins.advance()
        with self.state.jenkins.lock:
            return sorted(self.state.jenkins.builds[job].values(), key=lambda b: b.number)


@contextmanager
def running(config: SimConfig, port: int = 0) -> Iterator[Simulator]:
    sim = Simulator(config, port).start()
    try:
        yield sim
    finally:
        sim.stop()
