"""The live contract check: does each spec match the job it names on the configured Jenkins? Read-only.

Every question is a GET with `tree=`, never a POST, asked once per job however many specs name it:
the job exists and we may read it (Jenkins answers 404 for both, as it does to anyone who may not
see a job), it is buildable, its parameter definitions match what the spec sends (Jenkins silently
drops a parameter it does not define), the endpoint fits (`buildWithParameters` needs parameters,
`build` of a parameterized job submits none), and nothing redirects to a login page. What a read
cannot prove is Job/Build permission: Jenkins refuses a GET of the trigger endpoints before it looks
at permissions, so only a POST would tell; the check says which user it is authenticated as.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.errors import JenkinsError, JenkinsRefused
from reconciler.core.spec import Spec, position_in
from reconciler.jenkins.client import Client, JobDefinition

BOOLEAN = "BooleanParameterDefinition"
CHOICE = "ChoiceParameterDefinition"
RUN = "RunParameterDefinition"
NOT_PARAMETERIZED_IS_400 = (2, 524)
"""Since 2.524 (jenkinsci/jenkins#10954) buildWithParameters on a job without parameters is a 400; before,
an IllegalStateException, i.e. a bare 500."""


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    jobs: int
    reads: int
    users: dict[str, str]
    """Who each server took our credentials for."""
    unreached: dict[str, str] = field(default_factory=dict)
    """The servers that could not be asked (credentials refused, a login redirect, down), and why."""


def check(specs: list[tuple[str, Spec]], clients: Mapping[str, Client], *, per_server: float = 30.0) -> Report:
    """Check (file shown, spec) pairs against their servers; at most `per_server` seconds each."""
    findings: list[Finding] = []
    by_job: dict[tuple[str, str], list[tuple[str, Spec]]] = {}
    for shown, spec in specs:
        by_job.setdefault((spec.server, spec.job), []).append((shown, spec))
    reads, users, unreached = 0, {}, {}
    for server in sorted({server for server, _ in by_job}):
        client = clients.get(server)
        jobs = [(job, named) for (s, job), named in sorted(by_job.items()) if s == server]
        if client is None:
            findings += [_at(shown, spec, ("server",), f"server {server!r} is not configured")
                         for _, named in jobs for shown, spec in named]
            continue
        deadline = time.monotonic() + per_server
        reads += 1
        try:
            users[server] = client.whoami()
        except JenkinsError as e:
            findings += [_at(shown, spec, ("server",), str(e)) for _, named in jobs for shown, spec in named]
            unreached[server] = str(e)
            continue
        for job, named in jobs:
            if time.monotonic() > deadline:
                findings += [_at(shown, spec, ("job",), f"not checked: the {per_server:g} s bound for server "
                                                         f"{server!r} passed") for shown, spec in named]
                continue
            reads += 1
            try:
                definition = client.job_definition(job)
            except JenkinsRefused as e:
                message = str(e)
                if e.status == 404:
                    message = f"job {job!r} not found on server {server!r}, or user {users[server]!r} may not read it"
                findings += [_at(shown, spec, ("job",), message) for shown, spec in named]
                continue
            except JenkinsError as e:
                findings += [_at(shown, spec, ("job",), str(e)) for shown, spec in named]
                continue
            for shown, spec in named:
                findings += compare(shown, spec, definition)
    return Report(findings, len(by_job), reads, users, unreached)


def _own_parameters(spec: Spec) -> list[tuple[tuple[str, ...], str]]:
    """The parameters the reconciler fills in itself, each with where the spec names it."""
    named = [((key,), getattr(spec, key)) for key in ("run_id_parameter", "scheduled_time_parameter")]
    named += [(("provenance_parameters", field), name) for field, name in spec.provenance_parameters or ()]
    return [(loc, name) for loc, name in named if name]


def compare(shown: str, spec: Spec, job: JobDefinition) -> list[Finding]:
    """What is wrong between one spec and the job's definition. Pure."""
    out = []
    if not job.buildable:
        out.append(_at(shown, spec, ("job",), f"job {spec.job!r} is disabled in Jenkins: it would answer 409"))
    sent = dict(spec.parameters or ())
    if job.parameters is None:
        if spec.parameters is not None:
            out.append(_at(shown, spec, ("parameters",), f"job {spec.job!r} takes no parameters: "
                           "buildWithParameters would fail; remove `parameters`"))
        for loc, name in _own_parameters(spec):
            out.append(_at(shown, spec, loc, f"job {spec.job!r} defines no parameter {name!r}: Jenkins would drop it"))
        return out
    if spec.parameters is None:
        out.append(_at(shown, spec, ("job",), f"job {spec.job!r} is parameterized: a POST to build without "
                       "parameters is refused; add `parameters:` (even empty: `parameters: {}`)"))
    own = {name for _, name in _own_parameters(spec)}
    for name, value in sent.items():
        definition = job.parameters.get(name)
        if definition is None:
            if name not in own:
                known = ", ".join(job.parameters) or "none"
                out.append(_at(shown, spec, ("parameters", name), f"job {spec.job!r} does not define parameter "
                               f"{name!r} (it defines: {known}): Jenkins would silently drop it"))
        elif definition.type == CHOICE and definition.choices and value not in definition.choices:
            out.append(_at(shown, spec, ("parameters", name), f"{value!r} is not one of {name}'s choices: "
                           f"{', '.join(definition.choices)}"))
        elif definition.type == BOOLEAN and value not in ("true", "false"):
            out.append(_at(shown, spec, ("parameters", name), f"{name} is a boolean parameter: write true or false"))
    for loc, name in _own_parameters(spec):
        if name not in job.parameters:
            lost = ", and the run could not be found by it after a crash" if loc == ("run_id_parameter",) else ""
            out.append(_at(shown, spec, loc, f"job {spec.job!r} defines no parameter {name!r}: Jenkins would "
                                             f"drop it{lost}"))
    for name, definition in job.parameters.items():
        if not definition.has_default and name not in sent and name not in own:
            out.append(_at(shown, spec, ("parameters",) if spec.parameters is not None else ("job",),
                           f"job parameter {name!r} has no default and the spec does not set it"))
    return out


def explain_500(job: str, parameters: tuple[tuple[str, str], ...] | None, definition: JobDefinition,
                version: tuple[int, ...] | None) -> str | None:
    """Why a trigger POST got Jenkins' bare 500, if the job's definitions say: the exceptions
    `ParametersDefinitionProperty.buildWithParameters` throws before anything is queued, each named with
    what to change in the spec. None: they do not explain it (an outage, a plugin), and it may pass. Pure."""
    if parameters is None:
        if definition.parameters is not None:
            return (f"job {job!r} is parameterized, so a POST to build without parameters fails; add "
                    "`parameters:` to the spec (even empty: `parameters: {}`)")
        return None
    if definition.parameters is None:
        if version is not None and version >= NOT_PARAMETERIZED_IS_400:
            return None
        shown = ".".join(map(str, version)) if version else "of unknown version"
        return (f"job {job!r} is not parameterized (Jenkins {shown} answers buildWithParameters on it with a "
                "500): remove `parameters:` from the spec")
    counts = Counter(name for name, _ in parameters)
    for name, value in parameters:  # SimpleParameterDefinition.createValue, then each type's checkValue
        defined = definition.parameters.get(name)
        if defined is None:
            continue  # dropped by Jenkins (SECURITY-170), never a 500
        if counts[name] > 1:
            return (f"parameter {name!r} is sent {counts[name]} times and Jenkins takes one value (Illegal number "
                    "of parameter values): name it once among `parameters`, run_id_parameter, "
                    "scheduled_time_parameter and provenance_parameters")
        if defined.type == CHOICE and defined.choices and value not in defined.choices:
            return (f"Illegal choice for parameter {name!r}: {value!r} is not one of {', '.join(defined.choices)}; "
                    f"change `parameters.{name}` in the spec")
        if defined.type == RUN and "#" not in value:
            return (f"parameter {name!r} is a run parameter, and {value!r} does not name a build: write JOB#NUMBER "
                    f"in `parameters.{name}`")
    return None


def _at(shown: str, spec: Spec, loc: tuple[str, ...], message: str) -> Finding:
    try:
        text = Path(shown).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return Finding(shown, 1, 1, message)
    line, column = position_in(text, *loc)
    return Finding(shown, line, column, message)
