"""The simulator's configuration: from a YAML file and/or command-line flags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from .items import View
from .model import RESULTS, JobDef, ParamDef


class SimConfigError(ValueError):
    """The simulator's configuration is wrong; the message says where."""


@dataclass(frozen=True)
class User:
    name: str
    token: str | None = None
    password: str | None = None
    full_name: str = ""
    permissions: frozenset[str] = frozenset({"read", "build"})
    """`read` (Overall/Read, Item/Read), `build` (Item/Build, Item/Cancel), `configure` (Item and View
    Create/Configure/Delete, Run/Delete), `administer` (Overall/Administer: quiet down, restart, nodes)."""


PERMISSIONS = ("read", "build", "configure", "administer")


@dataclass
class SimConfig:
    jobs: list[JobDef] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)
    csrf: bool = True
    csrf_exempt_api_token: bool = True
    """Jenkins ≥ 2.96 lets API-token requests skip the crumb; False behaves like older Jenkins."""
    anonymous_read: bool = False
    quiet_period: float = 5.0
    executors: int = 2
    left_item_ttl: float = 300.0
    root_url: str | None = None
    """The "Jenkins URL" every absolute URL in an answer is built from; default: the address it listens on."""
    version: str = "2.479.3"
    """The Jenkins version emulated (X-Jenkins, and the answers that changed between versions)."""
    views: list[View] = field(default_factory=list)
    """List views besides `all`: [{name, jobs: [full names]}]."""
    log: str | None = None
    """A file that gets one JSON line per request (time, method, path, query, status, user); no credentials."""
    show_stack_trace: bool = False
    """-Djenkins.model.Jenkins.SHOW_STACK_TRACE=true: a 500 page shows the exception, not only a Logging ID."""


def _param(raw: Any, where: str) -> ParamDef:
    if isinstance(raw, str):
        return ParamDef(name=raw)
    if not isinstance(raw, dict) or "name" not in raw:
        raise SimConfigError(f"{where}: a parameter is a name or a mapping with `name`")
    kind = str(raw.get("type", "string"))
    if kind not in ("string", "boolean", "choice", "password"):
        raise SimConfigError(f"{where}: parameter type {kind!r} is not string, boolean, choice or password")
    choices = tuple(str(c) for c in raw.get("choices", ()))
    if kind == "choice" and not choices:
        raise SimConfigError(f"{where}: a choice parameter needs `choices`")
    default = raw.get("default", False if kind == "boolean" else "")
    return ParamDef(name=str(raw["name"]), type=kind, default=default, choices=choices,
                    description=str(raw.get("description", "")))


JOB_KEYS = {"name", "parameters", "duration", "result", "token", "disabled", "next_build_number", "kind",
            "concurrent", "readers", "result_while_building", "result_at", "publishers", "post_production",
            "description"}


def _seconds(raw: Any, key: str, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SimConfigError(f"{where}: `{key}` is a number of seconds, not {raw!r}") from None
    if value < 0:
        raise SimConfigError(f"{where}: `{key}` cannot be negative")
    return value


def job_from_mapping(raw: Any, where: str = "job") -> JobDef:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not raw.get("name"):
        raise SimConfigError(f"{where}: a job is a name or a mapping with `name`")
    unknown = set(raw) - JOB_KEYS
    if unknown:
        raise SimConfigError(f"{where}: unknown job settings: {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(sorted(JOB_KEYS))})")
    results = raw.get("result", "SUCCESS")
    results = (results,) if isinstance(results, str) else tuple(results)
    for r in results:
        if r not in RESULTS:
            raise SimConfigError(f"{where}: result {r!r} is not one of {', '.join(RESULTS)}")
    params = raw.get("parameters")
    duration = raw.get("duration", 0.0)
    interim = raw.get("result_while_building")
    if interim is not None:
        if interim not in RESULTS:
            raise SimConfigError(f"{where}: result_while_building {interim!r} is not one of {', '.join(RESULTS)}")
        better = [r for r in results if RESULTS.index(r) < RESULTS.index(interim)]
        if better:  # Run.setResult: a result only gets worse
            raise SimConfigError(f"{where}: result {better[0]} is better than result_while_building {interim}; "
                                 "a build's result can only get worse (Run.setResult)")
    publishers = _seconds(raw.get("publishers", 0.0), "publishers", where)
    if publishers and duration in (None, "manual"):
        raise SimConfigError(f"{where}: `publishers` needs a `duration` in seconds to run at the end of")
    extra = {"result_while_building": interim, "result_at": _seconds(raw.get("result_at", 0.0), "result_at", where),
             "publishers": publishers,
             "post_production": _seconds(raw.get("post_production", 0.0), "post_production", where),
             "description": str(raw.get("description", ""))}
    return JobDef(
        **extra,
        full_name=str(raw["name"]).strip("/"),
        parameters=None if params is None else tuple(_param(p, where) for p in params),
        duration=None if duration in (None, "manual") else float(duration),
        results=results,
        token=raw.get("token"),
        disabled=bool(raw.get("disabled", False)),
        next_build_number=int(raw.get("next_build_number", 1)),
        kind=_kind(raw.get("kind", "freestyle"), where),
        concurrent=None if raw.get("concurrent") is None else bool(raw["concurrent"]),
        readers=None if raw.get("readers") is None else tuple(str(r) for r in raw["readers"]),
    )


def _kind(value: Any, where: str) -> str:
    if value not in ("freestyle", "pipeline"):
        raise SimConfigError(f"{where}: kind {value!r} is not freestyle or pipeline")
    return str(value)


def user_from_mapping(name: str, raw: Any) -> User:
    if isinstance(raw, str):
        raw = {"token": raw}
    if not isinstance(raw, dict):
        raise SimConfigError(f"user {name}: a user is a token or a mapping with `token`/`password`")
    permissions = frozenset(str(p) for p in raw.get("permissions", ("read", "build")))
    unknown = permissions - set(PERMISSIONS)
    if unknown:
        raise SimConfigError(f"user {name}: unknown permissions {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(PERMISSIONS)})")
    return User(name=name, token=raw.get("token"), password=raw.get("password"),
                full_name=str(raw.get("full_name", name)), permissions=permissions)


def view_from_mapping(raw: Any, where: str) -> View:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not raw.get("name") or set(raw) - {"name", "jobs", "description"}:
        raise SimConfigError(f"{where}: a view is a name or a mapping with `name`, `jobs`, `description`")
    if raw["name"] == "all":
        raise SimConfigError(f"{where}: `all` is Jenkins' own view of every job")
    return View(name=str(raw["name"]), jobs=[str(j).strip("/") for j in raw.get("jobs") or []],
                description=str(raw.get("description", "")))


def from_mapping(raw: dict[str, Any]) -> SimConfig:
    known = {"jobs", "users", "csrf", "csrf_exempt_api_token", "anonymous_read", "quiet_period",
             "executors", "left_item_ttl", "root_url", "version", "views", "log", "show_stack_trace"}
    unknown = set(raw) - known
    if unknown:
        raise SimConfigError(f"unknown simulator settings: {', '.join(sorted(unknown))}")
    return SimConfig(
        jobs=[job_from_mapping(j, f"jobs[{i}]") for i, j in enumerate(raw.get("jobs") or [])],
        users={n: user_from_mapping(n, u) for n, u in (raw.get("users") or {}).items()},
        csrf=bool(raw.get("csrf", True)),
        csrf_exempt_api_token=bool(raw.get("csrf_exempt_api_token", True)),
        anonymous_read=bool(raw.get("anonymous_read", False)),
        quiet_period=float(raw.get("quiet_period", 5.0)),
        executors=int(raw.get("executors", 2)),
        left_item_ttl=float(raw.get("left_item_ttl", 300.0)),
        root_url=None if raw.get("root_url") is None else str(raw["root_url"]).rstrip("/") + "/",
        version=_version(raw.get("version", SimConfig.version)),
        views=[view_from_mapping(v, f"views[{i}]") for i, v in enumerate(raw.get("views") or [])],
        log=None if raw.get("log") is None else str(raw["log"]),
        show_stack_trace=bool(raw.get("show_stack_trace", False)),
    )


def _version(raw: Any) -> str:
    text = str(raw)
    if not re.fullmatch(r"\d+(\.\d+){1,3}", text):
        raise SimConfigError(f"version {text!r} is not a Jenkins version such as 2.528.1 or 2.462.3")
    return text


def load(path: Path) -> SimConfig:
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SimConfigError(f"{path}: expected a mapping of settings")
    try:
        return from_mapping(data)
    except SimConfigError as e:
        raise SimConfigError(f"{path}: {e}") from None
