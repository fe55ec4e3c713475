"""The web page: the overview's rows (pure), the page and its API over real HTTP from a daemon on real
parts, and what a person sees in a real browser (headless Chromium through Selenium)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import requests

from reconciler.core.errors import Problem, SpecError, StateError
from reconciler.core.overview import State, as_json, counts, overview, sparkline
from reconciler.core.runs import RunStatus, new_run
from reconciler.core.spec import parse
from reconciler.service.daemon import Daemon
from reconciler.service.probes import serve
from reconciler.service.web import Web

from .conftest import TOKEN, USER, Harness, wait_for

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "schema" / "status.schema.json").read_text())
NOW = datetime(2026, 5, 10, 8, 0, tzinfo=UTC)
HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__pwned=1</script>"


def validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    """The shared schema, or one of its definitions (`detail`: one trigger and its history)."""
    schema = SCHEMA if definition is None else {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def spec(name: str, text: str) -> Any:
    return parse(text, name=name, path=f"{name}.yaml")


# -- the overview, pure ---------------------------------------------------------------------------

def test_each_trigger_gets_the_state_a_person_would_name_it_by():
    one = spec("one", "job: a\n")
    changed = spec("changed", "job: a\nrun: 2\n")
    refused = spec("refused", "job: a\n")
    failed = spec("failed", "job: a\n")
    nightly = spec("nightly", "job: a\nschedule: '0 3 * * *'\ntimezone: Europe/Berlin\n")
    paused = spec("paused", "job: a\nsuspend: true\n")
    elsewhere = spec("elsewhere", "job: a\nserver: nowhere\n")
    at = NOW.timestamp()
    latest = {
        "one": replace(new_run(one, at), status=RunStatus.COMPLETED, result="SUCCESS"),
        "changed": replace(new_run(spec("changed", "job: a\n"), at), status=RunStatus.COMPLETED, result="FAILURE"),
        "refused": replace(new_run(refused, at), status=RunStatus.REFUSED, retry_at=at + 30, last_error="403"),
        "failed": replace(new_run(failed, at), status=RunStatus.FAILED, last_error="given up: 400"),
        "gone": replace(new_run(spec("gone", "job: a\n"), at), status=RunStatus.COMPLETED, result="SUCCESS"),
    }
    errors = {"broken": SpecError("broken.yaml", [Problem(2, 3, "unknown key 'jbo'")])}
    specs = {s.name: s for s in (one, changed, refused, failed, nightly, paused, elsewhere)}
    rows = {r.name: r for r in overview(specs, errors, latest, NOW, servers={"default"})}
    assert {name: row.state for name, row in rows.items()} == {
        "one": State.FIRED, "changed": State.PENDING, "refused": State.REFUSED, "failed": State.FAILED,
        "nightly": State.SCHEDULED, "paused": State.SUSPENDED, "elsewhere": State.INVALID,
        "broken": State.INVALID, "gone": State.DELETED}
    assert rows["broken"].detail == "broken.yaml:2:3: unknown key 'jbo'"
    assert rows["elsewhere"].detail.startswith("server 'nowhere' is not configured")
    assert rows["refused"].detail == "next attempt 2026-05-10T08:00:30.000Z: 403"
    assert rows["nightly"].next_tick == datetime(2026, 5, 11, 1, 0, tzinfo=UTC)  # 03:00 in Berlin, summer
    assert (rows["nightly"].schedule, rows["nightly"].timezone) == ("0 3 * * *", "Europe/Berlin")
    assert rows["changed"].last is not None and rows["changed"].last.result == "FAILURE"  # the last run, shown
    assert rows["gone"].kind is None and rows["gone"].job == "a"
    assert counts(list(rows.values()))[State.INVALID] == 2


def test_a_spec_reverted_to_a_revision_that_fired_is_fired():
    old, new = spec("t", "job: a\n"), spec("t", "job: a\nrun: 2\n")
    latest = {"t": replace(new_run(new, 2.0), status=RunStatus.COMPLETED, result="SUCCESS")}
    [row] = overview({"t": old}, {}, latest, NOW, fired={("t", old.revision)})
    assert row.state is State.FIRED


def test_a_spec_reverted_to_a_revision_given_up_is_failed_as_plan_says_not_pending():
    """The daemon will not post a given-up revision again (bump `run`): the overview must not say it is
    about to."""
    old, new = spec("t", "job: a\n"), spec("t", "job: a\nrun: 2\n")
    latest = {"t": replace(new_run(new, 2.0), status=RunStatus.COMPLETED, result="SUCCESS")}
    reason = f"revision {old.revision} was given up without Jenkins accepting it: 403"
    [row] = overview({"t": old}, {}, latest, NOW, given_up={("t", old.revision): reason})
    assert (row.state, row.detail) == (State.FAILED, reason)
    [row] = overview({"t": new}, {}, latest, NOW, given_up={("t", old.revision): reason})
    assert row.state is State.FIRED


def test_the_store_says_which_revisions_were_accepted_and_which_given_up(tmp_path):
    """What status and the page read for reverted specs, from a real store: one pass over it."""
    from reconciler.service.records import revisions
    from reconciler.store.sqlite import Store

    store = Store(tmp_path / "state.db")
    done, gave_up, refused = (new_run(spec("t", f"job: a\nrun: {n}\n"), 1.0) for n in (1, 2, 3))
    store.decide([done, gave_up, refused])
    store.update_many([(done, {"status": "completed", "result": "SUCCESS"}),
                       (gave_up, {"status": "failed", "last_error": "Jenkins answered 403"}),
                       (refused, {"status": "refused", "last_error": "no such job"})])
    fired, given_up = revisions(store)
    assert fired == {("t", done.fire_key)}
    assert given_up == {("t", gave_up.fire_key): f"revision {gave_up.fire_key} was given up without Jenkins "
                                                 "accepting it: Jenkins answered 403"}
    assert revisions(store, [("t", done.fire_key)]) == ({("t", done.fire_key)}, {})
    store.close()


def test_as_json_matches_the_shared_schema_and_the_schema_knows_every_state():
    s = spec("team/deploy", "job: a\nparameters: {ENV: prod}\n")
    nightly = spec("nightly", "job: a\nschedule: 'H 3 * * *'\n")
    run = replace(new_run(s, NOW.timestamp()), status=RunStatus.COMPLETED, result="SUCCESS", build_number=7,
                  build_url="https://jenkins.example.com/job/a/7/", duration_ms=1200, finished_at=NOW.timestamp())
    tick = replace(new_run(nightly, NOW.timestamp(), NOW), status=RunStatus.MISSED)
    errors = {"bad": SpecError("bad.yaml", [Problem(1, 1, "missing required key 'job'")])}
    rows = overview({s.name: s, nightly.name: nightly}, errors, {s.name: run, nightly.name: tick}, NOW,
                    recent={s.name: ("FAILURE", "SUCCESS")})
    data = [as_json(row) for row in rows]
    validator().validate(data)
    assert data[2]["last_run"]["parameters"] == {"ENV": "prod"} and data[2]["recent"] == ["FAILURE", "SUCCESS"]
    assert data[1]["recent"] == ["missed"]
    assert data[1]["last_run"]["scheduled_for"] == "2026-05-10T08:00:00Z"
    properties = SCHEMA["$defs"]["trigger_fields"]["properties"]
    assert set(properties["state"]["enum"]) == set(State)
    assert set(SCHEMA["$defs"]["run"]["properties"]["status"]["enum"]) == set(RunStatus)


def test_the_sparkline_is_svg_with_one_bar_per_outcome_and_its_text_escaped():
    svg = sparkline(["SUCCESS", "FAILURE", "building", "SUCCESS", '"><script>x</script>'])
    tree = ET.fromstring(svg)
    assert tree.tag == "{http://www.w3.org/2000/svg}svg"
    bars = {path.get("class"): path.get("d", "").count("M") for path in tree}
    assert bars == {"ok": 2, "bad": 1, "open": 1, "other": 1}
    assert tree.get("aria-label") == 'last 5 results: 2 SUCCESS, 1 FAILURE, 1 building, 1 "><script>x</script>'
    assert "<script>" not in svg
    assert ET.fromstring(sparkline(["SUCCESS"])).get("aria-label") == "last result: SUCCESS"
    assert ET.fromstring(sparkline([])).get("aria-label") == "no results yet"


# -- the page and its API, over HTTP ---------------------------------------------------------------

@pytest.fixture
def page(harness: Harness) -> Iterator[tuple[Harness, Daemon, str]]:
    """A daemon on real parts with the page served as `--listen` serves it; its base URL."""
    harness.write("team a/deploy", f"job: team a/dëploy ü\nparameters: {{TARGET: '{SCRIPT}'}}\n")
    harness.write("broken", "jbo: plain\n")
    harness.write("nightly", "job: plain\nschedule: '*/5 * * * *'\ntimezone: Europe/Berlin\n")
    daemon = harness.start()
    wait_for(lambda: "completed" in harness.events("team a/deploy"), what="the fire to complete")
    [listener] = serve(daemon, "127.0.0.1:0", web_prefix="/rec")
    try:
        yield harness, daemon, f"http://{listener.address}"
    finally:
        listener.stop()


def test_the_api_answers_every_trigger_as_the_schema_says(page):
    _, _, base = page
    answer = requests.get(f"{base}/api/v1/triggers", timeout=10)
    assert answer.headers["Content-Type"] == "application/json"
    data = answer.json()
    validator().validate(data)
    assert [t["trigger"] for t in data] == ["broken", "nightly", "team a/deploy"]
    assert data[2]["last_run"]["result"] == "SUCCESS" and data[2]["state"] == "fired"
    assert [t["trigger"] for t in requests.get(f"{base}/api/v1/triggers?state=invalid", timeout=10).json()] == \
        ["broken"]
    one = requests.get(f"{base}/api/v1/triggers/{quote('team a/deploy', safe='/')}", timeout=10).json()
    validator("detail").validate(one)
    assert [e["event"] for e in one["history"]] == ["completed", "started", "queued", "decided"]
    assert requests.get(f"{base}/api/v1/triggers/nope", timeout=10).status_code == 404


def test_every_answer_forbids_script_and_the_page_changes_nothing(page):
    _, _, base = page
    for path in ("/", "/triggers/broken", "/static/style.css", "/api/v1/triggers", "/nope"):
        answer = requests.get(base + path, timeout=10)
        assert answer.headers["Content-Security-Policy"].startswith(
            "default-src 'none'; style-src 'self'; img-src 'self' data:"), path
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    html = requests.get(base + "/", timeout=10)
    assert html.headers["Refresh"] == "30" and "<script" not in html.text
    assert SCRIPT not in requests.get(base + "/triggers/team%20a/deploy", timeout=10).text
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = requests.request(method, base + "/", timeout=10)
        assert (refused.status_code, refused.headers["Allow"]) == (405, "GET, HEAD")
    head = requests.head(base + "/", timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(html.content)
    assert requests.get(base + "/healthz", timeout=10).text == "ok\n"  # the probes are still there


def test_a_history_line_written_by_hand_is_skipped_and_never_shown_as_markup(page):
    harness, _, base = page
    odd = {"at": 5, "event": "<b>bold</b>", "run_id": "r1", "url": "javascript:alert(1)", "duration_ms": "long",
           "provenance": {"sha": 7}, "causes": [1, {"shortDescription": "<i>me</i>"}], "by": ["<u>x</u>"]}
    with (harness.history / "broken.jsonl").open("a") as f:
        f.write(json.dumps(odd) + "\n" + json.dumps({"event": "decided"}) + "\n")
    answer = requests.get(base + "/triggers/broken", timeout=10)
    assert answer.status_code == 200  # history is evidence: lines no reconciler wrote are skipped (repo/history.py)
    assert "<b>" not in answer.text and "<i>" not in answer.text and "<u>" not in answer.text
    assert 'href="javascript:' not in answer.text


def test_a_store_that_cannot_be_read_is_a_503_and_a_bug_a_logged_500(page, monkeypatch):
    harness, daemon, base = page

    def unreadable() -> None:
        raise StateError("cannot read state store s.db: disk I/O error")

    monkeypatch.setattr(daemon.store, "latest", unreadable)
    answer = requests.get(base + "/", timeout=10)
    assert answer.status_code == 503 and "disk I/O error" in answer.text
    monkeypatch.setattr(daemon.store, "latest", lambda: 1 / 0)
    answer = requests.get(base + "/api/v1/triggers", timeout=10)
    assert answer.status_code == 500 and answer.headers["X-Content-Type-Options"] == "nosniff"
    assert harness.logs.wait_for("web_request_failed")[0]["target"] == "/api/v1/triggers"


def test_links_follow_the_prefix_the_ingress_says_or_the_one_configured(page):
    _, _, base = page
    configured = requests.get(base + "/rec/", timeout=10).text
    assert 'href="/rec/static/style.css"' in configured and 'href="/rec/triggers/team%20a/deploy"' in configured
    assert requests.get(base + "/rec/triggers/broken", timeout=10).status_code == 200
    forwarded = requests.get(base + "/", headers={"X-Forwarded-Prefix": "/ops/reconciler/"}, timeout=10).text
    assert 'href="/ops/reconciler/triggers/broken"' in forwarded
    odd = requests.get(base + "/", headers={"X-Forwarded-Prefix": "//evil.example"}, timeout=10).text
    assert 'href="/rec/triggers/broken"' in odd  # not a path: ignored


def test_the_filter_works_by_name_and_state_with_counts_over_all(page):
    _, _, base = page
    text = requests.get(base + "/", params={"q": "DEPLOY", "state": "fired"}, timeout=10).text
    assert "1 of 3 triggers, filtered" in text and "/triggers/broken" not in text
    assert '<option value="fired" selected>' in text
    assert "<strong>1</strong> invalid" in text  # the counts stay those of all triggers


def test_the_sparkline_kept_between_requests_follows_new_runs(page):
    harness, daemon, _ = page
    web = Web(daemon)
    assert next(r for r in web.rows() if r.name == "team a/deploy").recent == ("SUCCESS",)
    harness.write("team a/deploy", f"job: team a/dëploy ü\nparameters: {{TARGET: '{SCRIPT}'}}\nrun: 2\n")
    wait_for(lambda: harness.events("team a/deploy").count("completed") == 2, what="the second run")
    wait_for(lambda: next(r for r in web.rows() if r.name == "team a/deploy").recent == ("SUCCESS", "SUCCESS"),
             what="the sparkline to show both runs")


def test_a_spec_reverted_to_a_revision_jenkins_refused_is_not_fired_on_the_page_nor_in_status(harness):
    """Revision A refused (no such job), B fired, then the spec reverted to A: the store has decided A,
    but Jenkins never accepted it. The page and `status` say the same, and neither says fired."""
    refused = "job: not-there\n"
    harness.write("t", refused)
    daemon = harness.start()
    wait_for(lambda: [r.status for r in harness.runs("t")] == ["refused"], what="revision A refused")
    harness.write("t", "job: plain\n")
    wait_for(lambda: [r.status for r in harness.runs("t")] == ["completed", "refused"], what="revision B fired")
    harness.write("t", refused)
    wait_for(lambda: daemon.catalog.specs["t"].job == "not-there", what="the revert read")
    [listener] = serve(daemon, "127.0.0.1:0")
    try:
        [shown] = requests.get(f"http://{listener.address}/api/v1/triggers", timeout=10).json()
        page = requests.get(f"http://{listener.address}/", timeout=10).text
    finally:
        listener.stop()
    status = subprocess.run([sys.executable, "-m", "reconciler", "status", "--json", "--triggers",
                             str(harness.triggers), "--state", str(harness.state)],
                            capture_output=True, text=True, timeout=60)
    [said] = json.loads(status.stdout)
    assert shown["state"] == said["state"] == "pending" and shown["detail"] == said["detail"]
    assert "not fired" in shown["detail"] and '<span class="state pending">pending</span>' in page


def test_a_thousand_triggers_render_in_well_under_a_second(harness):
    for i in range(1000):
        harness.write(f"team{i % 10}/t{i:04d}", "job: plain\n" if i % 10 else "job: plain\nschedule: 'H * * * *'\n")
    daemon = harness.start()
    wait_for(lambda: len(daemon.store.latest()) >= 900, timeout=120, what="900 one-shots to be decided")
    daemon.executor.wait_idle(120)
    [listener] = serve(daemon, "127.0.0.1:0")
    try:
        url = f"http://{listener.address}/"
        requests.get(url, timeout=30)  # templates compiled, pages warm
        took = []
        for _ in range(3):
            started = time.perf_counter()
            answer = requests.get(url, timeout=30)
            took.append(time.perf_counter() - started)
        assert answer.text.count('<tr class="') == 1000
        print(f"\n/ with 1,000 triggers: {min(took):.3f}-{max(took):.3f} s, {len(answer.content) // 1024} KiB")
        assert max(took) < 3.0  # generous for a shared machine: it takes ~0.2 s
    finally:
        listener.stop()


# -- what a person sees, in a real browser -------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def daemon_process(tmp_path: Path, make_simulator: Any) -> Iterator[tuple[str, Any]]:
    """`reconciler run --listen` as a real process, on ordinary, invalid, scheduled and hostile specs."""
    sim = make_simulator(jobs=[
        {"name": "deploy", "duration": 1, "concurrent": True, "parameters": ["ENV", "VERSION"]},
        {"name": "qa/smoke", "duration": 1, "concurrent": True, "result": ["SUCCESS", "UNSTABLE", "FAILURE"]},
        {"name": "cleanup", "duration": 0, "concurrent": True}])
    triggers = tmp_path / "triggers"
    (triggers / "team a").mkdir(parents=True)
    (triggers / "team a" / "deploy-staging.yaml").write_text("job: deploy\nparameters: {ENV: staging, VERSION: 1.4}\n")
    (triggers / "qa-smoke.yaml").write_text("job: qa/smoke\n")
    (triggers / "nightly-cleanup.yaml").write_text("job: cleanup\nschedule: H 3 * * *\ntimezone: Europe/Berlin\n")
    (triggers / "broken.yaml").write_text("job: deploy\nparamters: {ENV: prod}\n")
    (triggers / "refused.yaml").write_text("job: no-such-job\n")
    (triggers / f"{HOSTILE}.yaml").write_text(f"job: deploy\nparameters: {{ENV: '{SCRIPT}', VERSION: '1'}}\n")
    env = {**os.environ, "JENKINS_URL": sim.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "RECONCILER_POLL_INTERVAL": "0.1"}
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h"),
                                 "--listen", "127.0.0.1:0"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def page() -> str | None:
            for line in log.read_text().splitlines():
                if '"probes_listening"' in line:
                    return json.loads(line)["page"]
            return None

        url = wait_for(page, what="the page to be served")

        def smoke_ran(times: int) -> bool:
            return len(sim.builds("qa/smoke")) >= times and all(b.result for b in sim.builds("qa/smoke"))

        for run in (2, 3):  # a few results for the sparkline
            wait_for(lambda run=run: smoke_ran(run - 1), what="qa-smoke's build")
            (triggers / "qa-smoke.yaml").write_text(f"job: qa/smoke\nrun: {run}\n")
        deploys = sim.builds
        wait_for(lambda: smoke_ran(3) and len(deploys("deploy")) == 2 and all(b.result for b in deploys("deploy")),
                 what="every build to finish")
        wait_for(lambda: all(t["last_run"] and t["last_run"]["status"] in ("completed", "refused")
                             for t in requests.get(url + "api/v1/triggers", timeout=5).json()
                             if t["state"] not in ("invalid", "scheduled")), what="every run to be recorded")
        yield url, sim
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_a_person_sees_every_trigger_and_no_script_from_content_runs(browser, daemon_process):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    url, sim = daemon_process
    api = requests.get(url + "api/v1/triggers", timeout=10).json()
    validator().validate(api)
    names = [t["trigger"] for t in api]
    assert names == sorted([HOSTILE, "broken", "nightly-cleanup", "qa-smoke", "refused", "team a/deploy-staging"])

    browser.get(url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.triggers tbody tr")
    shown = [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows]
    assert shown == names  # each by its name, as text: the hostile one too
    by_name = dict(zip(shown, rows, strict=True))

    error = by_name["broken"].find_element(By.CSS_SELECTOR, ".error")
    assert error.is_displayed()
    assert error.text == "broken.yaml:2:1: unknown key 'paramters' (did you mean 'parameters'?)"
    for name in ("team a/deploy-staging", HOSTILE, "qa-smoke"):
        build = next(t["last_run"]["build_url"] for t in api if t["trigger"] == name)
        link = by_name[name].find_element(By.PARTIAL_LINK_TEXT, "#")
        assert link.get_attribute("href") == build and build.startswith(sim.url)
    assert "refused" in by_name["refused"].text and "next attempt" in by_name["refused"].text
    schedule = by_name["nightly-cleanup"].text
    assert "H 3 * * *" in schedule and "Europe/Berlin" in schedule and "CE" in schedule  # next tick, local time
    spark = by_name["qa-smoke"].find_element(By.CSS_SELECTOR, "svg.spark")
    assert spark.get_attribute("aria-label") == "last 3 results: 1 SUCCESS, 1 UNSTABLE, 1 FAILURE"
    assert "6 all" in browser.find_element(By.CSS_SELECTOR, ".counts").text

    # Nothing from a spec became markup, and nothing ran: no element, no script, no alert.
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return window.__pwned") is None
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 (reading it is the question)
    if os.environ.get("RECONCILER_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        browser.save_screenshot(str(ROOT / "docs" / "web.png"))

    # The filter works without script: a GET form.
    browser.find_element(By.ID, "q").send_keys("deploy")
    browser.find_element(By.CSS_SELECTOR, "form.filter button").click()
    wait_for(lambda: "q=deploy" in browser.current_url, what="the filtered page")  # a GET: a new page loads
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.triggers tbody th a")] == \
        ["team a/deploy-staging"]

    # The hostile trigger's own page: its name in the URL encoded, the completed event, the value as text.
    browser.get(url)
    browser.find_element(By.LINK_TEXT, HOSTILE).click()
    assert browser.current_url == url + "triggers/" + quote(HOSTILE, safe="/")
    assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE
    events = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.events tbody td:nth-child(2)")]
    assert events == ["decided", "queued", "started", "completed"]
    assert f"ENV={SCRIPT}" in browser.find_element(By.CSS_SELECTOR, "table.events").text
    assert browser.find_elements(By.TAG_NAME, "script") == [] and browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return window.__pwned") is None


def test_web_listen_puts_the_page_on_an_address_of_its_own(tmp_path, simulator):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "ok.yaml").write_text("job: plain\n")
    env = {**os.environ, "JENKINS_URL": simulator.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h"),
                                 "--listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0", "--web-prefix", "/rec"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def logged(event: str) -> dict[str, Any] | None:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            return next((line for line in lines if line["event"] == event), None)

        web = wait_for(lambda: logged("web_listening"), what="the page to be served")
        probes = logged("probes_listening")
        assert probes is not None and "page" not in probes
        assert web["page"] == f"http://{web['address']}/rec/"
        wait_for(lambda: "/rec/triggers/ok" in requests.get(web["page"], timeout=10).text, what="the first pass")
        assert requests.get(f"http://{web['address']}/healthz", timeout=10).status_code == 404
        assert requests.get(f"http://{probes['address']}/", timeout=10).status_code == 404
        assert requests.get(f"http://{probes['address']}/healthz", timeout=10).status_code in (200, 503)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
