"""The operator's settings: Jenkins servers and their credentials, and where history is pushed, from
the environment and the operator's config file.

Both belong to the operator, never to the triggers repository: whoever can commit a spec can make a
job run, but must not be able to choose where requests (and the credentials they carry) go. So the
config file may not lie inside the triggers directory. Credentials are only ever references
(`{env: NAME}` or `{file: PATH}`), resolved here; the values live in `Server` fields excluded from
repr, and are registered with the log redactor.

The file is read and parsed once per `OperatorConfig.load`, and checked by the pydantic models below
(one per section, each frozen, unknown keys refused), like trigger specs: every problem is reported
at its `file:line:col`. `Server` and `HistoryRemote` are what the rest of the daemon uses: plain
values, built from the environment, from the file's sections, or directly by tests and the demo.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.core import schedule as cron
from reconciler.core.errors import ConfigError
from reconciler.core.freeze import Window
from reconciler.core.policy import Rule, glob_problem
from reconciler.core.spec import nesting_problem, yaml_problem
from reconciler.core.yamlpos import position, yaml_type

ALERTS = ("failed", "refused", "lost", "recovered", "paused", "unknown", "abandoned")
DEFAULT_ALERTS = ("failed", "refused", "lost", "recovered", "paused")
PROVIDERS = {"github": "https://api.github.com", "gitlab": None, "gitea": None,
             "bitbucket": "https://api.bitbucket.org/2.0"}
"""The forges commit statuses go to, and the API each answers at unless `api_url` says otherwise."""
_HOSTED = {"json", "xml", "form", "mailto", "http"}
"""Apprise schemes whose host is a host; in the others (slack://, discord://, msteams://) it is a key."""
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:[^/]")
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    user: str | None = None
    token: str | None = field(default=None, repr=False)
    job_token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    concurrency: int = 32
    """Requests in flight to this server at most. Jenkins serves them in parallel, so a burst of fires
    is bound by this over the round trip; and it is the most one reconciler asks of a Jenkins at once."""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    proxy: str | None = field(default=None, repr=False)
    """A proxy for this server's requests; without it, HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply."""
    client_cert: str | None = None
    client_key: str | None = None
    """A client certificate (and its key, if not in the same file) for ingresses that ask for one."""
    rate: float | None = None
    """POSTs a second at most (`rate: 10/s`, `600/m`): a burst drains at this pace. None: no limit."""
    max_queued: int | None = None
    """No POST while Jenkins' queue holds this many items (read at most once a second). None: no limit."""

    @property
    def secrets(self) -> list[str]:
        """Every value that must never be written anywhere, the Authorization header's included."""
        values = [s for s in (self.token, self.job_token) if s]
        proxy_password = urlsplit(self.proxy).password if self.proxy else None
        if proxy_password:
            values.append(proxy_password)
        if self.user and self.token:
            values.append(base64.b64encode(f"{self.user}:{self.token}".encode()).decode())
        return values

    def warnings(self) -> list[str]:
        """Settings that work but expose something: said once at start."""
        out = []
        if self.verify is False:
            out.append(f"server {self.name}: TLS certificates are not verified (verify: false): anyone on the path "
                       "can read the API token; give ca_bundle instead")
        parts = urlsplit(self.url)
        if parts.scheme == "http" and (self.token or self.job_token) and not _loopback(parts.hostname or ""):
            out.append(f"server {self.name}: credentials are sent over plain http to {parts.hostname}: use https")
        if not (self.user and self.token):
            out.append(f"server {self.name}: no API token{' or user' if not self.user else ''} is configured, so "
                       "requests are anonymous and Jenkins will likely refuse them: set JENKINS_USER and "
                       "JENKINS_API_TOKEN (or user: and token: in the config)")
        return out


@dataclass(frozen=True)
class HistoryRemote:
    """Where the daemon commits and pushes its history: the operator's choice, like the servers. The
    default branch is one of the history's own, so the daemon's commits start no CI run and meet no
    branch protection of the specs' branch; `branch: main` (say) puts them beside the specs."""

    repository: str
    branch: str = "reconciler-history"
    path: str = "history"
    """The folder inside the repository the history files live in."""
    clone: str = "history-clone"
    """The daemon's own clone (never git-sync's checkout); by default beside the state file."""
    author_name: str = "reconciler"
    author_email: str = "reconciler@localhost"
    ssh_key: str | None = None
    known_hosts: str | None = None
    token: str | None = field(default=None, repr=False)
    """An HTTPS token, sent as basic auth with `token_user`; never in a URL."""
    token_user: str = "x-access-token"
    interval: float = 5.0
    """Seconds from the first unpushed line to its commit: lines written meanwhile share the commit."""
    timeout: float = 60.0
    """The longest one git command may take (a fetch or push to a remote that does not answer)."""

    @property
    def history_dir(self) -> Path:
        """Where the history files are: the path inside the daemon's clone."""
        return Path(self.clone) / self.path

    @property
    def secrets(self) -> list[str]:
        if not self.token:
            return []
        return [self.token, base64.b64encode(f"{self.token_user}:{self.token}".encode()).decode()]


@dataclass(frozen=True)
class CommitStatus:
    """Where each fire's steps are set as commit statuses on its spec's commit: the operator's forge,
    never one a spec names."""

    provider: str
    api_url: str
    repository: str
    """owner/name; on GitLab the project's path (group/sub/name) or its numeric id."""
    token: str = field(repr=False)
    context: str = "reconciler/{trigger}"
    """The status's name; another installation on the same repository gives another."""

    @property
    def secrets(self) -> list[str]:
        return [self.token]

    def warnings(self) -> list[str]:
        parts = urlsplit(self.api_url)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            return [f"commit_status: the {self.provider} token is sent over plain http to {parts.hostname}: use https"]
        return []


@dataclass(frozen=True)
class NotifyChannel:
    """One channel messages go to: an Apprise URL (itself a secret: a webhook's URL is its key), the
    alerts it hears of, and the triggers (globs) it hears about."""

    url: str = field(repr=False)
    on: tuple[str, ...] = DEFAULT_ALERTS
    triggers: tuple[str, ...] = ()
    where: str = "notify.0"
    """How errors name this channel: never by its URL."""

    @property
    def secrets(self) -> list[str]:
        """Each part of the URL long enough to be a key (Apprise logs a webhook's host and path), but not
        the URL whole: redaction masks any 8 characters of a secret, and `json://127.0.0.1:…` would
        then mask every loopback address in the logs."""
        parts = urlsplit(self.url)
        host = None if parts.scheme.rstrip("s") in _HOSTED else parts.hostname  # slack://TOKEN/…: a key, not a host
        pieces = [host, parts.username, parts.password, *parts.path.split("/"), *re.split(r"[&=]", parts.query)]
        return [p for p in pieces if p and len(p) >= 6]

    def warnings(self) -> list[str]:
        parts = urlsplit(self.url)
        if parts.scheme in ("json", "xml", "form") and not _loopback(parts.hostname or ""):
            return [f"{self.where}: messages are sent over plain http to {parts.hostname}: use {parts.scheme}s://"]
        return []


@dataclass(frozen=True)
class Deliveries:
    """The operator's `commit_status` and `notify`: who hears of each fire, and where."""

    commit_status: CommitStatus | None = None
    notify: tuple[NotifyChannel, ...] = ()

    @property
    def secrets(self) -> list[str]:
        found = [] if self.commit_status is None else self.commit_status.secrets
        return found + [s for channel in self.notify for s in channel.secrets]

    def warnings(self) -> list[str]:
        found = [] if self.commit_status is None else self.commit_status.warnings()
        return found + [w for channel in self.notify for w in channel.warnings()]

    def __bool__(self) -> bool:
        return self.commit_status is not None or bool(self.notify)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the file ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Context:
    """What checking the file needs besides its text, handed to the validators by `OperatorConfig.load`."""

    base: Path
    """The config file's folder: relative key files are read from there, not from wherever the daemon
    started (as relative secret files are, by `OperatorConfig._secret`)."""
    triggers: Path | None
    beside: Path
    """Where the history clone goes unless the file says: beside the state file."""


def _context(info: ValidationInfo) -> _Context:
    if not isinstance(info.context, _Context):
        raise TypeError("the operator's config is checked through OperatorConfig.load")
    return info.context


@dataclass(frozen=True)
class _Source:
    """Where a loaded config came from: to read its secrets when asked, and say where one is wrong."""

    path: Path
    tree: Any
    env: Mapping[str, str]


def _reference(ref: Any) -> Any:
    if ref is not None and not _is_reference(ref):
        raise ValueError(_LITERAL_SECRET)
    return ref


SecretRef = Annotated[dict[Literal["env", "file"], str] | None, BeforeValidator(_reference)]
"""`{env: NAME}` or `{file: PATH}`: checked with the file, read only when the section is used, so a
command that needs the history alone does not need the servers' secrets."""


def _empty_if_null(value: Any) -> Any:
    """`key:` with nothing after it (every entry commented out, say) is an empty mapping, not an error."""
    return {} if value is None else value


class _Section(BaseModel):
    """A mapping in the operator's file. A key it does not know is an error, never ignored: a misspelt
    `tokne:` would otherwise leave the server anonymous without a word."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    shape: ClassVar[str] = "a mapping"
    """What the section is, in the words of an error that finds something else, or a required key missing."""


class ServerSettings(_Section):
    """One entry of `servers:`; `server(name)` is the `Server` it configures."""

    shape = "a mapping with at least `url`"

    url: str
    user: str | None = None
    token: SecretRef = None
    job_token: SecretRef = None
    verify: bool = True
    ca_bundle: str | None = None
    concurrency: int = Server.concurrency
    connect_timeout: float = Server.connect_timeout
    read_timeout: float = Server.read_timeout
    proxy: str | None = Field(None, repr=False)
    client_cert: str | None = None
    client_key: str | None = None
    rate: str | None = None
    max_queued: int | None = Field(None, gt=0)

    @field_validator("rate")
    @classmethod
    def _rate(cls, rate: str | None) -> str | None:
        _per_second(rate)
        return rate

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _normalize_url(url)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, proxy: str | None) -> str | None:
        if proxy is not None and not proxy.startswith(("http://", "https://", "socks5://", "socks5h://")):
            raise ValueError("proxy must be an http://, https:// or socks5:// url")
        return proxy

    def server(self, name: str, secret: Callable[[str], str | None]) -> Server:
        """`secret(key)` reads the secret this section's `key` refers to."""
        return Server(name=name, url=self.url, user=self.user, token=secret("token"), job_token=secret("job_token"),
                      verify=self.ca_bundle or self.verify, concurrency=self.concurrency,
                      connect_timeout=self.connect_timeout, read_timeout=self.read_timeout, proxy=self.proxy,
                      client_cert=self.client_cert, client_key=self.client_key, rate=_per_second(self.rate),
                      max_queued=self.max_queued)


def _per_second(rate: str | None) -> float | None:
    """`10/s`, `600/m`, `36000/h` or a number (a second): POSTs per second."""
    if rate is None:
        return None
    count, _, per = rate.strip().partition("/")
    seconds = {"": 1, "s": 1, "m": 60, "h": 3600}.get(per.strip())
    try:
        value = float(count)
    except ValueError:
        value = 0.0
    if seconds is None or not value > 0:
        raise ValueError(f"rate: {rate!r} is not N/s, N/m or N/h with N > 0")
    return value / seconds


class AuthorSettings(_Section):
    """Who the history commits are by."""

    shape = "{name: ..., email: ...}"

    name: str = HistoryRemote.author_name
    email: str = HistoryRemote.author_email


class HistorySettings(_Section):
    """The `history:` section; `remote()` is the `HistoryRemote` it configures."""

    shape = "a mapping with at least `repository` (the git URL to push to)"

    repository: str
    branch: str = HistoryRemote.branch
    path: str = HistoryRemote.path
    clone: str = Field("", validate_default=True)
    """Absolute once checked; the file may leave it out, for a clone beside the state file."""
    author: Annotated[AuthorSettings, BeforeValidator(_empty_if_null)] = AuthorSettings()
    ssh_key: str | None = None
    known_hosts: str | None = None
    token: SecretRef = None
    token_user: str = HistoryRemote.token_user
    interval: float = HistoryRemote.interval
    timeout: float = HistoryRemote.timeout

    @field_validator("repository")
    @classmethod
    def _repository(cls, url: str) -> str:
        if url.startswith(("http://", "https://")):
            parts = urlsplit(url)
            if parts.username is not None or parts.password is not None:
                raise ValueError("the url carries credentials, which git would write into its config and its "
                                 "errors; give an HTTPS token as `token: {file: PATH}` instead")
        elif not (url.startswith(("ssh://", "file://", "/")) or _SCP_LIKE.match(url)):
            raise ValueError("expected an ssh://, https://, file:// url, user@host:path, or an absolute path to a "
                             "repository")
        return url

    @field_validator("branch")
    @classmethod
    def _branch(cls, name: str) -> str:
        if not _BRANCH.match(name) or ".." in name or name.endswith((".", "/", ".lock")):
            raise ValueError(f"{name!r} is not a branch name git accepts")
        return name

    @field_validator("path")
    @classmethod
    def _inner_path(cls, path: str) -> str:
        parts = Path(path).parts
        if not parts or Path(path).is_absolute() or ".." in parts or parts[0] == ".git":
            raise ValueError("the history path is a folder inside the repository, like `history`")
        return str(Path(*parts))

    @field_validator("clone")
    @classmethod
    def _clone(cls, clone: str, info: ValidationInfo) -> str:
        context = _context(info)
        path = Path(clone or context.beside / "history-clone")
        if context.triggers is not None and (_inside(path, context.triggers) or _inside(context.triggers, path)):
            raise ValueError(f"the history clone {path} overlaps the triggers directory {context.triggers}; the "
                             "daemon keeps a clone of its own, apart from git-sync's")
        return os.path.abspath(path)

    @field_validator("ssh_key", "known_hosts")
    @classmethod
    def _beside_the_config(cls, path: str | None, info: ValidationInfo) -> str | None:
        return None if path is None else str(_context(info).base / path)

    @model_validator(mode="after")
    def _no_trust_on_first_use(self) -> HistorySettings:
        if self.ssh_key and not self.known_hosts:
            raise ValueError("`ssh_key` needs `known_hosts` (the host keys to trust): without them the first "
                             "connection would trust whoever answers")
        return self

    def remote(self, secret: Callable[[str], str | None]) -> HistoryRemote:
        """`secret(key)` reads the secret this section's `key` refers to."""
        return HistoryRemote(repository=self.repository, branch=self.branch, path=self.path, clone=self.clone,
                             author_name=self.author.name, author_email=self.author.email, ssh_key=self.ssh_key,
                             known_hosts=self.known_hosts, token=secret("token"), token_user=self.token_user,
                             interval=self.interval, timeout=self.timeout)


# -- who may trigger what, and when not ----------------------------------------------------------------

def _no_rules_if_null(value: Any) -> Any:
    """`policy:` with every rule commented out is a policy with no rules: it allows nothing."""
    return [] if value is None else value


def _midnight_if_date(value: Any) -> Any:
    """`from: 2026-12-20` (a date, unquoted) is that day's start, in UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _utc(value: datetime) -> datetime:
    """A time without an offset is UTC, as `plan --at` reads it; a plain datetime, not YAML's subclass."""
    return datetime.fromtimestamp((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp(), UTC)


def _checked_globs(globs: list[str] | None) -> list[str] | None:
    for glob in globs or ():
        problem = glob_problem(glob)
        if problem:
            raise ValueError(problem)
    return globs


Globs = Annotated[list[str], Field(min_length=1), AfterValidator(_checked_globs)]
OptionalGlobs = Annotated[list[str] | None, AfterValidator(_checked_globs)]


class PolicyRuleSettings(_Section):
    """One entry of `policy:`: the triggers it covers and what they may ask for (a key left out: any)."""

    shape = "a mapping with at least `triggers:` (the trigger names it covers, as globs)"

    triggers: Globs
    servers: OptionalGlobs = None
    jobs: OptionalGlobs = None
    parameters: Annotated[dict[str, Globs], BeforeValidator(_empty_if_null)] = Field(default_factory=dict)
    schedule: bool = True

    def rule(self, number: int) -> Rule:
        return Rule(triggers=tuple(self.triggers), servers=None if self.servers is None else tuple(self.servers),
                    jobs=None if self.jobs is None else tuple(self.jobs),
                    parameters=tuple((name, tuple(values)) for name, values in self.parameters.items()),
                    schedule=self.schedule, number=number)


class FreezeSettings(_Section):
    """One entry of `freeze:`: fixed (`from`, `until`) or recurring (`schedule`, `duration`, `timezone`)."""

    model_config = ConfigDict(populate_by_name=True)
    shape = "a mapping with `name:`, and `from:` and `until:` or `schedule:` and `duration:`"

    name: Annotated[str, Field(min_length=1)]
    from_: Annotated[datetime | None, BeforeValidator(_midnight_if_date), Field(alias="from")] = None
    until: Annotated[datetime | None, BeforeValidator(_midnight_if_date)] = None
    schedule: str | None = None
    duration: str | None = None
    timezone: str = "UTC"
    triggers: Globs = Field(default_factory=lambda: ["**"])

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, expression: str | None) -> str | None:
        if expression is not None:
            cron.parse(expression)
        return expression

    @field_validator("duration")
    @classmethod
    def _duration(cls, text: str | None) -> str | None:
        if text is not None and cron.parse_duration(text) <= timedelta(0):
            raise ValueError("a freeze lasts longer than 0")
        return text

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        cron.zone(name)
        return name

    @model_validator(mode="after")
    def _fixed_or_recurring(self) -> FreezeSettings:
        fixed, recurring = (self.from_, self.until), (self.schedule, self.duration)
        if any(v is not None for v in fixed) and any(v is not None for v in recurring):
            raise ValueError("a window is fixed (`from`, `until`) or recurring (`schedule`, `duration`), not both")
        if any(v is not None for v in recurring):
            if None in recurring:
                raise ValueError("a recurring window needs both `schedule` (when it opens) and `duration` (how "
                                 "long it lasts, e.g. 62h)")
        elif self.from_ is None or self.until is None:
            raise ValueError("a window needs `from` and `until` (ISO 8601 times), or `schedule` and `duration`")
        elif _utc(self.until) <= _utc(self.from_):
            raise ValueError("`until` is not after `from`")
        elif "timezone" in self.model_fields_set:
            raise ValueError("`timezone` applies to recurring windows (`schedule`); give `from` and `until` with "
                             "their offsets")
        return self

    def window(self) -> Window:
        if self.schedule is not None and self.duration is not None:
            return Window(self.name, tuple(self.triggers), schedule=cron.parse(self.schedule, self.timezone),
                          duration=cron.parse_duration(self.duration))
        assert self.from_ is not None and self.until is not None
        return Window(self.name, tuple(self.triggers), start=_utc(self.from_), until=_utc(self.until))


@dataclass(frozen=True)
class Policy:
    """The `policy:` and `freeze:` sections: no secrets, so an operator may publish them for CI."""

    rules: tuple[Rule, ...] | None = None
    """None without `policy:`, which allows everything; `policy: []` allows nothing."""
    windows: tuple[Window, ...] = ()


class CommitStatusSettings(_Section):
    """The `commit_status:` section; `commit_status()` is the `CommitStatus` it configures."""

    shape = "a mapping with `provider`, `repository` and `token` (and `api_url` for GitLab and Gitea)"

    provider: Literal["github", "gitlab", "gitea", "bitbucket"]
    api_url: str | None = None
    repository: str
    token: Annotated[dict[Literal["env", "file"], str], BeforeValidator(_reference)]
    context: str = CommitStatus.context

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, url: str | None) -> str | None:
        return None if url is None else _normalize_url(url).rstrip("/")

    @field_validator("context")
    @classmethod
    def _context(cls, context: str) -> str:
        if not context.strip() or "{" in context.replace("{trigger}", "") or "}" in context.replace("{trigger}", ""):
            raise ValueError("the context may use `{trigger}` and no other placeholder")
        return context

    @model_validator(mode="after")
    def _forge(self) -> CommitStatusSettings:
        if self.api_url is None and PROVIDERS[self.provider] is None:
            raise ValueError(f"{self.provider} needs `api_url`, e.g. https://HOST/api/"
                             f"{'v4' if self.provider == 'gitlab' else 'v1'}")
        repository = self.repository.strip("/")
        if self.provider == "gitlab":
            good = bool(repository) and ".." not in repository.split("/")
        else:
            good = re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository) is not None and ".." not in repository
        if not good:
            shape = "the project path (group/name) or id" if self.provider == "gitlab" else "owner/name"
            raise ValueError(f"`repository` is {shape}, not {repository!r}")
        return self

    def commit_status(self, secret: Callable[[str], str | None]) -> CommitStatus:
        token = secret("token")
        assert token is not None
        return CommitStatus(self.provider, self.api_url or str(PROVIDERS[self.provider]), self.repository.strip("/"),
                            token, self.context)


class NotifySettings(_Section):
    """One entry of `notify:`; `channel()` is the `NotifyChannel` it configures."""

    shape = "a mapping with `url` (an Apprise URL as `{env: NAME}` or `{file: PATH}`: a webhook's URL is its key)"

    url: Annotated[dict[Literal["env", "file"], str], BeforeValidator(_reference)]
    on: list[Literal["failed", "refused", "lost", "recovered", "paused", "unknown", "abandoned"]] = \
        Field(default_factory=lambda: list(DEFAULT_ALERTS))
    triggers: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    def channel(self, index: int, secret: Callable[[str], str | None]) -> NotifyChannel:
        url = secret("url")
        assert url is not None
        return NotifyChannel(url, tuple(self.on), tuple(self.triggers), f"notify.{index}")


class OperatorConfig(_Section):
    """The operator's config file, checked whole. Each top-level key is one field with a section model
    of its own; a key none of them is, is refused with its position."""

    shape = "a mapping with `servers:` or `history:`"

    servers: Annotated[dict[str, ServerSettings], BeforeValidator(_empty_if_null)] = Field(default_factory=dict)
    history: HistorySettings | None = None
    policy: Annotated[list[PolicyRuleSettings] | None, BeforeValidator(_no_rules_if_null)] = None
    freeze: Annotated[list[FreezeSettings], BeforeValidator(_no_rules_if_null)] = Field(default_factory=list)
    commit_status: CommitStatusSettings | None = None
    notify: Annotated[list[NotifySettings], BeforeValidator(lambda v: [] if v is None else v)] = \
        Field(default_factory=list)
    _source: _Source = PrivateAttr()

    @classmethod
    def load(cls, path: Path, env: Mapping[str, str] | None = None, *, triggers: Path | None = None,
             state: Path | str | None = None) -> OperatorConfig:
        """Read `path` once and check all of it; a ConfigError names every problem at its line and column.
        `env` holds the `{env: NAME}` secrets; the file must not lie inside `triggers`, nor the history clone
        overlap it; the clone goes beside `state` by default (a database URL has no folder to be beside)."""
        tree = _read_config(path, triggers)
        context = _Context(base=path.parent, triggers=triggers,
                           beside=state.parent if isinstance(state, Path) else Path("."))
        try:
            config = cls.model_validate(tree, context=context)
        except ValidationError as e:
            raise ConfigError("\n".join(_problems(path, tree, e))) from None
        config._source = _Source(path, tree, os.environ if env is None else env)
        return config

    def jenkins_servers(self) -> dict[str, Server]:
        """The file's servers by name, their secrets read now (the environment's `default` is
        `server_from_env`'s)."""
        return {name: settings.server(name, partial(self._secret, "servers", name))
                for name, settings in self.servers.items()}

    def rules(self) -> Policy:
        """Who may trigger what (`policy:`), and when not (`freeze:`)."""
        return Policy(rules=None if self.policy is None else tuple(r.rule(i) for i, r in enumerate(self.policy, 1)),
                      windows=tuple(w.window() for w in self.freeze))

    def history_remote(self) -> HistoryRemote | None:
        """Where history is pushed, its token read now; None without a `history:` section."""
        return None if self.history is None else self.history.remote(partial(self._secret, "history"))

    def deliveries(self) -> Deliveries:
        """Commit statuses and messages, their token and URLs read now; empty without either section."""
        status = None if self.commit_status is None else \
            self.commit_status.commit_status(partial(self._secret, "commit_status"))
        return Deliveries(status, tuple(channel.channel(i, partial(self._secret, "notify", i))
                                        for i, channel in enumerate(self.notify)))

    def _secret(self, *loc: Any) -> str | None:
        """The secret the reference at `loc` names; a ConfigError at the reference's position if it cannot
        be read."""
        node: Any = self
        for part in loc:
            node = node[part] if isinstance(node, dict | list) else getattr(node, part)
        source = self._source
        try:
            return _secret_value(node, source.env, source.path.parent)
        except ValueError as e:
            line, col = position(source.tree, loc, key=False)
            raise ConfigError(f"{source.path}:{line}:{col}: {_at(loc, str(e))}") from None


def load_servers(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                 triggers: Path | None = None) -> dict[str, Server]:
    """The servers of the environment and of `config_path`, which must not lie inside `triggers`; a
    server of the file's named `default` stands in for the environment's."""
    return servers_of(None if config_path is None else OperatorConfig.load(config_path, env, triggers=triggers), env)


def servers_of(config: OperatorConfig | None, env: Mapping[str, str] | None = None) -> dict[str, Server]:
    """The environment's server (JENKINS_URL…) as `default`, then the config's, which win."""
    env = os.environ if env is None else env
    default = server_from_env(env)
    servers = {} if default is None else {"default": default}
    return servers | ({} if config is None else config.jenkins_servers())


def load_history_remote(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                        triggers: Path | None = None, state: Path | str | None = None) -> HistoryRemote | None:
    """The `history:` section of the operator's config: where the daemon pushes its history, if anywhere."""
    if config_path is None:
        return None
    return OperatorConfig.load(config_path, env, triggers=triggers, state=state).history_remote()


def load_deliveries(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                    triggers: Path | None = None) -> Deliveries:
    """The `commit_status:` and `notify:` sections of the operator's config (none: nothing is sent)."""
    if config_path is None:
        return Deliveries()
    return OperatorConfig.load(config_path, env, triggers=triggers).deliveries()


def _read_config(config_path: Path, triggers: Path | None) -> Any:
    """The operator's config file as a round-trip tree, whose keys keep their positions for the errors."""
    if triggers is not None and _inside(config_path, triggers):
        raise ConfigError(f"{config_path}: the servers config is inside the triggers directory {triggers}, where "
                          "anyone who can commit could rewrite it; keep it outside (a ConfigMap or a file of the "
                          "deployment's own)")
    try:
        text = config_path.read_text(encoding="utf-8")
        deep = nesting_problem(text)
        if deep is not None:
            raise ConfigError(f"{config_path}:{deep.line}:{deep.column}: {deep.message}")
        return YAML(typ="rt").load(text) or {}
    except OSError as e:
        raise ConfigError(f"cannot read the servers config {config_path}: {e.strerror}") from None
    except MarkedYAMLError as e:
        problem = yaml_problem(e)
        raise ConfigError(f"{config_path}:{problem.line}:{problem.column}: {problem.message}") from None
    except (YAMLError, ValueError, OverflowError, KeyError, TypeError) as e:  # a bad `!!int`, say
        raise ConfigError(f"{config_path}: {e}") from None


_EXPECTED = {"dict": "a mapping", "list": "a list", "datetime": "an ISO 8601 time", "int": "an integer",
             "float": "a number", "bool": "true or false",
             "string": "a string"}
"""What a pydantic error type (by its first word) says was expected."""


def _problems(path: Path, tree: Any, error: ValidationError) -> list[str]:
    """Each validation error as `path:line:col: message`, in the order of the file."""
    problems = set()
    for err in error.errors():
        loc, kind = tuple(err["loc"]), err["type"]
        if kind == "extra_forbidden":
            known = sorted(_section_at(loc[:-1]).model_fields)
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message = f"unknown key {_dotted(loc)}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                       f"; known: {', '.join(known)}")
            line, col = position(tree, loc, key=True)
        elif kind == "missing":
            message = _at(loc[:-1], f"`{loc[-1]}` is required; expected {_section_at(loc[:-1]).shape}")
            line, col = position(tree, loc[:-1], key=True)
        else:
            first = kind.split("_")[0]
            if kind == "model_type":
                message = _at(loc, f"expected {_section_at(loc).shape}, got {yaml_type(err['input'])}")
            elif first in _EXPECTED and kind != "value_error":
                message = _at(loc, f"expected {_EXPECTED[first]}, got {yaml_type(err['input'])}")
            else:
                message = _at(loc, err["msg"].removeprefix("Value error, "))
            line, col = position(tree, loc, key=False)
        problems.add((line, col, f"{path}:{line}:{col}: {message}"))
    return [text for *_, text in sorted(problems)]


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(map(str, loc))


def _at(loc: tuple[Any, ...], message: str) -> str:
    """`servers.x.url: message`; the message alone for the file as a whole."""
    return f"{_dotted(loc)}: {message}" if loc else message


def _section_at(loc: tuple[Any, ...]) -> type[_Section]:
    """The section model a location in the file is checked by, for the keys it knows and its shape."""
    kind: Any = OperatorConfig
    for part in loc:  # a model's key: that field's type; a `dict[str, X]`'s, whatever the name: X
        kind = kind.model_fields[part].annotation if isinstance(kind, type) else get_args(kind)[-1]
        if get_origin(kind) in (Union, UnionType):  # `X | None`
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
    return kind


# -- secrets and urls -------------------------------------------------------------------------------

def _normalize_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        scheme = url.split(":", 1)[0] if ":" in url else url[:20]
        raise ValueError(f"the url must start with http:// or https:// (it starts {scheme!r})")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("the url carries credentials (user:password@host), which would be written wherever the "
                         "url is; give the user as JENKINS_USER (or `user:`) and the API token as JENKINS_API_TOKEN "
                         "(or a `token:` reference)")
    return url if url.endswith("/") else url + "/"


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"cannot read secret file {path}: {e.strerror}") from None


_LITERAL_SECRET = ("give secrets as a reference, `{env: VARIABLE}` or `{file: PATH}`; secret values do not "
                   "belong in files kept in version control")


def _is_reference(ref: Any) -> bool:
    return isinstance(ref, dict) and len(ref) == 1 and next(iter(ref)) in ("env", "file")


def _secret_value(ref: Any, env: Mapping[str, str], base: Path | None) -> str | None:
    """`resolve_secret` with a ValueError, for the callers that put a position before it."""
    if ref is None:
        return None
    if not _is_reference(ref):
        raise ValueError(_LITERAL_SECRET)
    kind, name = next(iter(ref.items()))
    if kind == "env":
        value = env.get(str(name))
        if not value:
            raise ValueError(f"environment variable {name} is not set")
        return value
    path = Path(str(name))
    return _read_secret_file(str(base / path if base is not None and not path.is_absolute() else path))


def resolve_secret(ref: Any, where: str, env: Mapping[str, str], base: Path | None = None) -> str | None:
    """`{env: NAME}` or `{file: PATH}` → the secret; a literal is refused so none lands in git. A
    relative PATH is read from `base`, the config file's folder, not from wherever the daemon started."""
    try:
        return _secret_value(ref, env, base)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _env_secret(env: Mapping[str, str], name: str) -> str | None:
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return _read_secret_file(path)
    except ValueError as e:
        raise ConfigError(f"{name}_FILE: {e}") from None


def server_from_env(env: Mapping[str, str]) -> Server | None:
    """The `default` server: JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN[_FILE], JENKINS_JOB_TOKEN[_FILE]."""
    url = env.get("JENKINS_URL")
    if not url:
        return None
    try:
        url = _normalize_url(url)
    except ValueError as e:
        raise ConfigError(f"JENKINS_URL: {e}") from None
    return Server(name="default", url=url, user=env.get("JENKINS_USER") or None,
                  token=_env_secret(env, "JENKINS_API_TOKEN"), job_token=_env_secret(env, "JENKINS_JOB_TOKEN"))


def _inside(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top + os.sep)
