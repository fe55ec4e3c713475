"""The operator's settings: Jenkins servers and their credentials, and where history is pushed, from
the environment and the operator's config file.

Both belong to the operator, never to the triggers repository: whoever can commit a spec can make a
job run, but must not be able to choose where requests (and the credentials they carry) go. So the
config file may not lie inside the triggers directory. Credentials are only ever references
(`{env: NAME}` or `{file: PATH}`), resolved here; the values live in `Server` fields excluded from
repr, and are registered with the log redactor.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.core.errors import ConfigError
from reconciler.core.spec import nesting_problem, yaml_problem

SERVER_KEYS = {"url", "user", "token", "job_token", "verify", "ca_bundle", "concurrency",
               "connect_timeout", "read_timeout", "proxy", "client_cert", "client_key"}
HISTORY_KEYS = {"repository", "branch", "path", "clone", "author", "ssh_key", "known_hosts", "token", "token_user",
                "interval", "timeout"}
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalize_url(url: str, where: str) -> str:
    if not url.startswith(("http://", "https://")):
        scheme = url.split(":", 1)[0] if ":" in url else url[:20]
        raise ConfigError(f"{where}: the url must start with http:// or https:// (it starts {scheme!r})")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: the url carries credentials (user:password@host), which would be written "
                          "wherever the url is; give the user as JENKINS_USER (or `user:`) and the API token as "
                          "JENKINS_API_TOKEN (or a `token:` reference)")
    return url if url.endswith("/") else url + "/"


def _normalize_proxy(proxy: Any, where: str) -> str | None:
    if proxy is None:
        return None
    if not str(proxy).startswith(("http://", "https://", "socks5://", "socks5h://")):
        raise ConfigError(f"{where}: proxy must be an http://, https:// or socks5:// url")
    return str(proxy)


def _path(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_secret_file(path: str, where: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read secret file {path}: {e.strerror}") from None


def resolve_secret(ref: Any, where: str, env: Mapping[str, str], base: Path | None = None) -> str | None:
    """`{env: NAME}` or `{file: PATH}` → the secret; a literal is refused so none lands in git. A
    relative PATH is read from `base`, the config file's folder, not from wherever the daemon started."""
    if ref is None:
        return None
    if not isinstance(ref, dict) or len(ref) != 1 or next(iter(ref)) not in ("env", "file"):
        raise ConfigError(f"{where}: give secrets as a reference, `{{env: VARIABLE}}` or `{{file: PATH}}`; "
                          "secret values do not belong in files kept in version control")
    kind, name = next(iter(ref.items()))
    if kind == "env":
        value = env.get(str(name))
        if not value:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return value
    path = Path(str(name))
    return _read_secret_file(str(base / path if base is not None and not path.is_absolute() else path), where)


def _env_secret(env: Mapping[str, str], name: str) -> str | None:
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    return _read_secret_file(path, f"{name}_FILE") if path else None


def server_from_env(env: Mapping[str, str]) -> Server | None:
    """The `default` server: JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN[_FILE], JENKINS_JOB_TOKEN[_FILE]."""
    url = env.get("JENKINS_URL")
    if not url:
        return None
    return Server(name="default", url=_normalize_url(url, "JENKINS_URL"), user=env.get("JENKINS_USER") or None,
                  token=_env_secret(env, "JENKINS_API_TOKEN"), job_token=_env_secret(env, "JENKINS_JOB_TOKEN"))


def server_from_mapping(name: str, raw: Any, env: Mapping[str, str], where: str, base: Path | None = None) -> Server:
    where = f"{where}: servers.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with at least `url`")
    if "url" not in raw:
        raise ConfigError(f"{where}: `url` is required")
    verify: bool | str = raw.get("ca_bundle") or bool(raw.get("verify", True))
    try:
        return Server(name=name, url=_normalize_url(str(raw["url"]), where),
                      user=None if raw.get("user") is None else str(raw["user"]),
                      token=resolve_secret(raw.get("token"), f"{where}.token", env, base),
                      job_token=resolve_secret(raw.get("job_token"), f"{where}.job_token", env, base),
                      verify=verify, concurrency=int(raw.get("concurrency", Server.concurrency)),
                      connect_timeout=float(raw.get("connect_timeout", 5.0)),
                      read_timeout=float(raw.get("read_timeout", 30.0)),
                      proxy=_normalize_proxy(raw.get("proxy"), where),
                      client_cert=_path(raw.get("client_cert")), client_key=_path(raw.get("client_key")))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def load_servers(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                 triggers: Path | None = None) -> dict[str, Server]:
    """The servers of the environment and of `config_path`, which must not lie inside `triggers`."""
    env = os.environ if env is None else env
    servers: dict[str, Server] = {}
    default = server_from_env(env)
    if default is not None:
        servers["default"] = default
    if config_path is None:
        return servers
    raw = _read_config(config_path, triggers)
    entries = raw.get("servers") or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{_at(config_path, raw, 'servers')}: `servers` is a mapping of NAME: settings")
    for name, entry in entries.items():
        if isinstance(entry, dict):
            _known_keys(entry, SERVER_KEYS, config_path, f"servers.{name}.")
        servers[str(name)] = server_from_mapping(str(name), entry, env, _at(config_path, entries, name),
                                                 config_path.parent)
    return servers


def load_history_remote(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                        triggers: Path | None = None, state: Path | str | None = None) -> HistoryRemote | None:
    """The `history:` section of the operator's config: where the daemon pushes its history, if anywhere."""
    if config_path is None:
        return None
    env = os.environ if env is None else env
    raw = _read_config(config_path, triggers)
    section = raw.get("history")
    if section is None:
        return None
    where = _at(config_path, raw, "history")
    if not isinstance(section, dict) or "repository" not in section:
        raise ConfigError(f"{where}: `history` is a mapping with at least `repository` (the git URL to push to)")
    _known_keys(section, HISTORY_KEYS, config_path, "history.")
    base = config_path.parent
    author = section.get("author") or {}
    if not isinstance(author, dict) or set(author) - {"name", "email"}:
        raise ConfigError(f"{_at(config_path, section, 'author')}: `author` is {{name: ..., email: ...}}")
    beside = state.parent if isinstance(state, Path) else Path(".")  # a database has no folder to be beside
    clone = Path(str(section.get("clone") or beside / "history-clone"))
    if triggers is not None and (_inside(clone, triggers) or _inside(triggers, clone)):
        raise ConfigError(f"{_at(config_path, section, 'clone')}: the history clone {clone} overlaps the triggers "
                          f"directory {triggers}; the daemon keeps a clone of its own, apart from git-sync's")
    ssh_key, known_hosts = _path(section.get("ssh_key")), _path(section.get("known_hosts"))
    if ssh_key and not known_hosts:
        raise ConfigError(f"{where}: `ssh_key` needs `known_hosts` (the host keys to trust): without them the "
                          "first connection would trust whoever answers")
    try:
        return HistoryRemote(
            repository=_repository(str(section["repository"]), f"{where}.repository"),
            branch=_branch(str(section.get("branch", HistoryRemote.branch)), f"{where}.branch"),
            path=_inner_path(str(section.get("path", HistoryRemote.path)), f"{where}.path"),
            clone=os.path.abspath(clone),
            author_name=str(author.get("name", HistoryRemote.author_name)),
            author_email=str(author.get("email", HistoryRemote.author_email)),
            ssh_key=None if ssh_key is None else str(base / ssh_key),
            known_hosts=None if known_hosts is None else str(base / known_hosts),
            token=resolve_secret(section.get("token"), f"{where}.token", env, base),
            token_user=str(section.get("token_user", HistoryRemote.token_user)),
            interval=float(section.get("interval", HistoryRemote.interval)),
            timeout=float(section.get("timeout", HistoryRemote.timeout)))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _repository(url: str, where: str) -> str:
    if url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"{where}: the url carries credentials, which git would write into its config and "
                              "its errors; give an HTTPS token as `token: {file: PATH}` instead")
    elif not (url.startswith(("ssh://", "file://", "/")) or _SCP_LIKE.match(url)):
        raise ConfigError(f"{where}: expected an ssh://, https://, file:// url, user@host:path, or an absolute "
                          "path to a repository")
    return url


def _branch(name: str, where: str) -> str:
    if not _BRANCH.match(name) or ".." in name or name.endswith((".", "/", ".lock")):
        raise ConfigError(f"{where}: {name!r} is not a branch name git accepts")
    return name


def _inner_path(path: str, where: str) -> str:
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts or parts[0] == ".git":
        raise ConfigError(f"{where}: the history path is a folder inside the repository, like `history`")
    return str(Path(*parts))


def _read_config(config_path: Path, triggers: Path | None) -> Any:
    """The operator's config file as a round-trip mapping, which must not lie inside `triggers`."""
    if triggers is not None and _inside(config_path, triggers):
        raise ConfigError(f"{config_path}: the servers config is inside the triggers directory {triggers}, where "
                          "anyone who can commit could rewrite it; keep it outside (a ConfigMap or a file of the "
                          "deployment's own)")
    try:
        text = config_path.read_text(encoding="utf-8")
        deep = nesting_problem(text)
        if deep is not None:
            raise ConfigError(f"{config_path}:{deep.line}:{deep.column}: {deep.message}")
        raw = YAML(typ="rt").load(text) or {}  # round-trip: keys keep their positions, for the errors below
    except OSError as e:
        raise ConfigError(f"cannot read the servers config {config_path}: {e.strerror}") from None
    except MarkedYAMLError as e:
        problem = yaml_problem(e)
        raise ConfigError(f"{config_path}:{problem.line}:{problem.column}: {problem.message}") from None
    except (YAMLError, ValueError, OverflowError, KeyError, TypeError) as e:  # a bad `!!int`, say
        raise ConfigError(f"{config_path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}:1:1: expected a mapping with `servers:`")
    _known_keys(raw, {"servers", "history"}, config_path, "")
    return raw


def _at(path: Path, mapping: Any, key: Any) -> str:
    """`path:line:col` of a key in a round-trip mapping (or the path alone where it has no position)."""
    try:
        line, col = mapping.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        return str(path)
    return f"{path}:{line + 1}:{col + 1}"


def _known_keys(mapping: Any, known: set[str], path: Path, prefix: str) -> None:
    for key in mapping:
        if key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise ConfigError(f"{_at(path, mapping, key)}: unknown key {prefix}{key}" +
                              (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(sorted(known))}"))


def _inside(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top + os.sep)
