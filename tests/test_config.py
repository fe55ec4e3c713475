"""Servers and secrets: from the environment or references in a config file, never literals."""

from __future__ import annotations

import os
import threading

import pytest
from pydantic import ValidationError

from reconciler.config import OperatorConfig, load_history_remote, load_servers
from reconciler.core.errors import ConfigError


def test_the_default_server_comes_from_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    servers = load_servers(None, {"JENKINS_URL": "https://ci.example.com", "JENKINS_USER": "bot",
                                  "JENKINS_API_TOKEN_FILE": str(token_file)})
    server = servers["default"]
    assert (server.url, server.user, server.token) == ("https://ci.example.com/", "bot", "from-a-file")
    assert "from-a-file" not in repr(server)


def test_more_servers_come_from_the_config_file_with_secret_references(tmp_path):
    job_token = tmp_path / "job-token"
    job_token.write_text("jt")
    config = tmp_path / "reconciler.yaml"
    config.write_text(f"servers:\n  release:\n    url: https://release.example.com/jenkins\n    user: rel\n"
                      f"    token: {{env: RELEASE_TOKEN}}\n    job_token: {{file: {job_token}}}\n"
                      f"    ca_bundle: /etc/ssl/ca.pem\n    concurrency: 2\n")
    servers = load_servers(config, {"RELEASE_TOKEN": "secret"})
    release = servers["release"]
    assert (release.token, release.job_token, release.verify, release.concurrency) == \
        ("secret", "jt", "/etc/ssl/ca.pem", 2)
    assert release.url == "https://release.example.com/jenkins/"


def test_a_literal_secret_in_the_config_is_refused(tmp_path):
    config = tmp_path / "reconciler.yaml"
    config.write_text("servers:\n  x:\n    url: https://x/\n    token: hunter2hunter2\n")
    with pytest.raises(ConfigError, match="give secrets as a reference") as e:
        load_servers(config, {})
    assert "hunter2hunter2" not in str(e.value)


def test_a_missing_environment_variable_is_named(tmp_path):
    config = tmp_path / "reconciler.yaml"
    config.write_text("servers:\n  x:\n    url: https://x/\n    token: {env: NOPE}\n")
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        load_servers(config, {})


def test_credentials_in_a_url_are_refused_without_repeating_them(tmp_path):
    with pytest.raises(ConfigError, match="JENKINS_USER") as e:
        load_servers(None, {"JENKINS_URL": "https://bot:s3cr3t-pass@ci.example.com/"})
    assert "s3cr3t-pass" not in str(e.value)


def test_the_servers_config_may_not_live_in_the_triggers_directory(tmp_path):
    triggers = tmp_path / "triggers"
    (triggers / "team").mkdir(parents=True)
    config = triggers / "team" / "servers.yaml"
    config.write_text("servers:\n  x:\n    url: https://x/\n")
    with pytest.raises(ConfigError, match="inside the triggers directory"):
        load_servers(config, {}, triggers=triggers)
    outside = tmp_path / "servers.yaml"
    outside.symlink_to(config)  # a link from outside into the tree is the tree's file all the same
    with pytest.raises(ConfigError, match="inside the triggers directory"):
        load_servers(outside, {}, triggers=triggers)


def test_a_servers_config_named_but_missing_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the servers config"):
        load_servers(tmp_path / "nope.yaml", {})


def test_the_basic_auth_header_and_encoded_forms_of_secrets_are_redacted():
    import base64

    from reconciler import logs
    from reconciler.config import Server

    server = Server(name="s", url="https://x/", user="bot", token="tok+en/with&marks", job_token="jt-1234")
    logs.add_secrets(server.secrets)
    basic = base64.b64encode(b"bot:tok+en/with&marks").decode()
    text = f"Authorization: Basic {basic}; body token=tok%2Ben%2Fwith%26marks&x=jt-1234; raw tok+en/with&marks"
    assert logs.redact(text) == "Authorization: Basic ***; body token=***&x=***; raw ***"


def test_a_relative_secret_file_is_read_beside_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text("from-beside-the-config\n")
    config = tmp_path / "conf" / "servers.yaml"
    config.write_text("servers:\n  x:\n    url: https://x/\n    user: u\n    token: {file: token}\n")
    monkeypatch.chdir(tmp_path)  # the daemon started elsewhere
    assert load_servers(config, {})["x"].token == "from-beside-the-config"


@pytest.mark.parametrize(("text", "message"), [
    ("servers:\n  x:\n    url: https://x/\n    tokne: {env: T}\n",
     ":4:5: unknown key servers.x.tokne (did you mean 'token'?)"),
    ("server:\n  x: {url: https://x/}\n", ":1:1: unknown key server (did you mean 'servers'?)"),
    ("servers:\n  x:\n    url: [https://x/\n", ":3:10: this [ is never closed"),
    ("servers:\n  x:\n    user: bot\n", ":2:3: servers.x: `url` is required"),
])
def test_config_errors_say_where_and_suggest(tmp_path, text, message):
    config = tmp_path / "servers.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_servers(config, {"T": "t"})
    assert str(e.value).startswith(str(config)) and message in str(e.value)


def test_a_wrong_type_deep_in_the_file_is_reported_at_its_line_and_column(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("servers:\n  default:\n    url: https://x/\n    read_timeout: soon\n"
                      "history:\n  repository: /r.git\n  author: {name: bot, email: [b]}\n")
    with pytest.raises(ConfigError) as e:
        OperatorConfig.load(config, {})
    assert str(e.value).splitlines() == [
        f"{config}:4:19: servers.default.read_timeout: expected a number, got a string",
        f"{config}:7:30: history.author.email: expected a string, got a list"], "every problem, in the file's order"


def test_an_unknown_top_level_key_is_refused_at_its_position(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("servers: {}\nwebhooks:\n  x: https://x/\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2:1: unknown key webhooks; known: "):
        OperatorConfig.load(config, {})


def test_secrets_are_read_when_their_section_is_used_and_reported_at_the_reference(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("servers:\n  x:\n    url: https://x/\n    token: {env: NOPE}\nhistory: {repository: /r.git}\n")
    loaded = OperatorConfig.load(config, {})
    assert loaded.history_remote().repository == "/r.git", "the history alone needs no server's secret"
    with pytest.raises(ConfigError) as e:
        loaded.jenkins_servers()
    assert str(e.value) == f"{config}:4:12: servers.x.token: environment variable NOPE is not set"


def test_the_file_is_read_once_for_all_its_sections(tmp_path):
    """A FIFO hands its text to one reader: a second read of the file would wait for a writer forever."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    text = "servers:\n  x: {url: https://x/, token: {env: T}}\nhistory: {repository: /r.git}\n"
    loaded: list[OperatorConfig] = []
    writer = threading.Thread(target=fifo.write_text, args=(text,), daemon=True)
    reader = threading.Thread(target=lambda: loaded.append(OperatorConfig.load(fifo, {"T": "t"})), daemon=True)
    writer.start()
    reader.start()
    reader.join(timeout=10)
    read_again = reader.is_alive()
    if read_again:  # let the second read end, so the test fails instead of hanging
        fifo.write_text(text)
    assert not read_again, "the file was opened more than once"
    [config] = loaded
    assert (config.jenkins_servers()["x"].token, config.history_remote().repository) == ("t", "/r.git")
    with pytest.raises(ValidationError, match="frozen"):
        config.history = None


# -- history write-back -----------------------------------------------------------------------------

def test_the_history_section_names_a_repository_and_credentials_by_reference(tmp_path):
    config = tmp_path / "etc" / "reconciler.yaml"
    config.parent.mkdir()
    config.write_text("history:\n  repository: git@github.com:acme/triggers.git\n  ssh_key: git/id_ed25519\n"
                      "  known_hosts: git/known_hosts\n  author: {name: ci-bot, email: ci@acme.test}\n")
    remote = load_history_remote(config, {}, state=tmp_path / "var" / "state.db")
    assert (remote.branch, remote.path, remote.author_name, remote.interval) == \
        ("reconciler-history", "history", "ci-bot", 5.0)
    assert remote.ssh_key == str(config.parent / "git" / "id_ed25519")
    assert remote.clone == str(tmp_path / "var" / "history-clone"), "the clone lives beside the state"
    assert load_history_remote(None, {}) is None
    token = load_history_remote(_write(tmp_path, "history:\n  repository: https://git.acme.test/t.git\n"
                                                 "  token: {env: GIT_TOKEN}\n"), {"GIT_TOKEN": "s3cret"})
    assert token.token == "s3cret" and "s3cret" not in repr(token)


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("history:\n  repository: https://bot:pw@git.acme.test/t.git\n", "carries credentials"),
    ("history:\n  repository: git@h:a/b.git\n  ssh_key: /k\n", "needs `known_hosts`"),
    ("history:\n  repository: /r.git\n  path: ../elsewhere\n", "a folder inside the repository"),
    ("history:\n  repository: /r.git\n  branch: 'a..b'\n", "not a branch name"),
    ("history:\n  repository: /r.git\n  brnch: x\n", r"c.yaml:3:3: unknown key history.brnch \(did you mean 'branch'"),
    ("history:\n  repository: /r.git\n  token: hunter2\n", "give secrets as a reference"),
    ("history: {branch: x}\n", "at least `repository`"),
])
def test_a_history_section_that_would_misbehave_is_refused_at_start(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_history_remote(_write(tmp_path, text), {})
    assert "pw@" not in str(e.value) and "hunter2" not in str(e.value)


def test_the_history_clone_may_not_overlap_the_triggers(tmp_path):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    with pytest.raises(ConfigError, match="overlaps the triggers directory"):
        load_history_remote(_write(tmp_path, f"history:\n  repository: /r.git\n  clone: {triggers}/h\n"), {},
                            triggers=triggers)
